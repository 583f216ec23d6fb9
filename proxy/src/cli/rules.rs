//! `tandem rules ...`: the admin console's commands, from scripts.

use std::process::ExitCode;

use super::one_shot;

/// `tandem rules`.
#[derive(clap::Args)]
pub struct Args {
    /// Admin console URL, e.g. postgres://admin:secret@127.0.0.1:6432/tandem.
    #[arg(long, env = "TANDEM_ADMIN_URL", global = true, hide_env_values = true)]
    admin: Option<String>,
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
    },
    /// SET RULE: change a rule's mode or sample rate.
    Set {
        /// Legacy table.
        table: String,
        /// New mode: off, dual_write, union_read, cutover, target_only.
        #[arg(long, conflicts_with = "sample", required_unless_present = "sample")]
        mode: Option<String>,
        /// Leave target_only anyway.
        #[arg(long, requires = "mode")]
        force: bool,
        /// Share of reads sampled for shadow comparison, 0..1.
        #[arg(long)]
        sample: Option<f64>,
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
    match runtime.block_on(tandem::ops::rules::run(&admin, &command)) {
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
