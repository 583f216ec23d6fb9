//! `tandem rules ...`: the admin console's commands, from scripts.

use std::process::ExitCode;

use super::one_shot;

/// `tandem rules`.
#[derive(clap::Args)]
pub struct Args {
    /// Admin console URL, e.g. postgres://admin:secret@127.0.0.1:6432/tandem.
    #[arg(long, env = "TANDEM_ADMIN_URL", global = true, hide_env_values = true)]
    admin: Option<String>,
    /// PEM file of the CA(s) that sign the console's TLS certificate: verified, with the
    /// host name, as libpq's verify-full (without it, TLS per the URL's sslmode is not verified).
    #[arg(long, env = "TANDEM_ADMIN_CA", global = true)]
    admin_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// SHOW RULES.
    List,
    /// ADD RULE: start migrating a table (mode off unless --mode says otherwise).
    Add {
        /// Legacy table (`orders`, `public.orders`).
        table: String,
        /// Target table (default `<table>_v2`).
        #[arg(long)]
        target: Option<String>,
        /// Key columns, comma-separated (default: the legacy primary key plus the target's partition key).
        #[arg(long, value_delimiter = ',')]
        key: Vec<String>,
        /// Initial mode.
        #[arg(long)]
        mode: Option<String>,
        /// The guard's policy: mirror (default), fail, record or off.
        #[arg(long, value_parser = ["mirror", "fail", "record", "off"])]
        guard: Option<String>,
    },
    /// SET RULE: change one setting of a rule (its mode, sample rate, auto_partition,
    /// guard or dropped columns).
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(false)))]
    Set {
        /// Legacy table.
        table: String,
        /// New mode: off, dual_write, union_read, cutover, target_only.
        #[arg(long, group = "change")]
        mode: Option<String>,
        /// Leave target_only anyway.
        #[arg(long, requires = "mode")]
        force: bool,
        /// Share of reads sampled for shadow comparison, 0..1.
        #[arg(long, group = "change")]
        sample: Option<f64>,
        /// Create a missing target partition when a mirrored write needs one: on or off.
        #[arg(long, group = "change", value_parser = ["on", "off"])]
        auto_partition: Option<String>,
        /// What the guard does with writes made around the proxy: mirror, fail, record, off.
        #[arg(long, group = "change", value_parser = ["mirror", "fail", "record", "off"])]
        guard: Option<String>,
        /// Legacy columns left behind on purpose, comma-separated ('' for none).
        #[arg(long, group = "change", value_delimiter = ',')]
        drop_columns: Option<Vec<String>>,
        /// Legacy triggers the target does not need, comma-separated ('' for none).
        #[arg(long, group = "change", value_delimiter = ',')]
        drop_triggers: Option<Vec<String>>,
    },
    /// DROP RULE.
    Drop {
        /// Legacy table.
        table: String,
        /// Drop a rule in target_only anyway.
        #[arg(long)]
        force: bool,
    },
    /// RELOAD: re-read the store on that instance now.
    Reload,
}

impl Action {
    /// The console command for this action.
    fn command(&self) -> String {
        match self {
            Action::List => "SHOW RULES".into(),
            Action::Add {
                table,
                target,
                key,
                mode,
                guard,
            } => {
                let mut c = format!("ADD RULE {table}");
                if let Some(t) = target {
                    c.push_str(&format!(" TARGET {t}"));
                }
                if !key.is_empty() {
                    c.push_str(&format!(" KEY ({})", key.join(", ")));
                }
                if let Some(m) = mode {
                    c.push_str(&format!(" MODE {m}"));
                }
                if let Some(g) = guard {
                    c.push_str(&format!(" GUARD {g}"));
                }
                c
            }
            Action::Set {
                table,
                mode: Some(mode),
                force,
                ..
            } => format!(
                "SET RULE {table} MODE {mode}{}",
                if *force { " FORCE" } else { "" }
            ),
            Action::Set {
                table,
                sample: Some(rate),
                ..
            } => format!("SET RULE {table} SAMPLE {rate}"),
            Action::Set {
                table,
                auto_partition: Some(on),
                ..
            } => format!("SET RULE {table} AUTO_PARTITION {on}"),
            Action::Set {
                table,
                guard: Some(guard),
                ..
            } => format!("SET RULE {table} GUARD {guard}"),
            Action::Set {
                table,
                drop_columns: Some(columns),
                ..
            } => {
                let columns: Vec<&str> = columns
                    .iter()
                    .map(|c| c.trim())
                    .filter(|c| !c.is_empty())
                    .collect();
                format!("SET RULE {table} DROP_COLUMNS ({})", columns.join(", "))
            }
            Action::Set {
                table,
                drop_triggers: Some(triggers),
                ..
            } => {
                let triggers: Vec<&str> = triggers
                    .iter()
                    .map(|c| c.trim())
                    .filter(|c| !c.is_empty())
                    .collect();
                format!("SET RULE {table} DROP_TRIGGERS ({})", triggers.join(", "))
            }
            // clap requires one change.
            Action::Set { table, .. } => format!("SET RULE {table}"),
            Action::Drop { table, force } => {
                format!("DROP RULE {table}{}", if *force { " FORCE" } else { "" })
            }
            Action::Reload => "RELOAD".into(),
        }
    }
}

/// Sends the command to the console and prints its answer (exit 0), or its error (exit 1).
pub fn main(args: Args) -> ExitCode {
    let Some(admin) = args.admin else {
        eprintln!("tandem: give --admin <url> or set TANDEM_ADMIN_URL");
        return ExitCode::from(2);
    };
    let command = args.action.command();
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(tandem::ops::rules::run_with_ca(
        &admin,
        &command,
        args.admin_ca.as_deref(),
    )) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem: {}", e.message);
            if let Some(hint) = e.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
