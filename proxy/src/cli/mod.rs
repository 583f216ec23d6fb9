//! The `tandem` command line: one module per subcommand group, each with its arguments
//! (clap) and the printing of its result; the work itself is in the library (`tandem::ops`,
//! `tandem::server`). This module holds what they share: config loading, table arguments,
//! runtimes, logging and the shutdown signal.

pub mod backfill;
pub mod demo;
pub mod init;
pub mod parity;
pub mod partitions;
pub mod purge;
pub mod rules;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use tandem::config::Config;

/// Where a one-shot command finds the database: a config file and/or an upstream URL.
#[derive(clap::Args)]
pub struct Conn {
    /// TOML config file (its upstream and store settings are used).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Upstream connection string, overriding the file's.
    #[arg(long)]
    pub upstream: Option<String>,
}

impl Conn {
    /// The validated config these flags name; a bad one is reported and exits 2.
    pub fn load(self) -> Result<Config, ExitCode> {
        load_config(self.config, None, self.upstream).map_err(|e| config_error(&e))
    }
}

/// A table name from the command line; a bare name is in `public`, as in the config.
pub fn table_arg(text: &str, flag: &str) -> Result<tandem_rules::TableName, ExitCode> {
    match tandem_rules::TableName::parse(text) {
        Ok(mut t) => {
            if t.schema.is_none() {
                t.schema = Some(tandem_rules::rule::DEFAULT_SCHEMA.to_string());
            }
            Ok(t)
        }
        Err(e) => {
            eprintln!("tandem: {flag}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// For one-shot commands whose output may go to `head` and the like: a closed stdout ends
/// the process quietly, as for any Unix tool, instead of a panic in `println!`. (Rust
/// ignores SIGPIPE by default; `serve` keeps it that way, its sockets need EPIPE.)
fn quiet_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restoring the default disposition installs no Rust handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The runtime a one-shot command (backfill, parity, ...) runs on.
pub fn one_shot() -> Result<tokio::runtime::Runtime, ExitCode> {
    quiet_on_closed_stdout();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("tandem: cannot start runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Reports a bad config and gives exit code 2.
pub fn config_error(e: &tandem::config::ConfigError) -> ExitCode {
    eprintln!("tandem: bad config: {e}");
    ExitCode::from(2)
}

/// The config from `path` (or the defaults), with command-line overrides, validated.
pub fn load_config(
    path: Option<PathBuf>,
    listen: Option<String>,
    upstream: Option<String>,
) -> Result<Config, tandem::config::ConfigError> {
    let mut config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(u) = upstream {
        config.upstream = u;
    }
    config.validate()?;
    Ok(config)
}

/// Logs to stderr at `level` unless RUST_LOG says otherwise, as text or JSON lines.
/// Colours (ANSI escapes) only when stderr is a terminal, so files and log shippers get
/// plain text.
pub fn init_logging(level: &str, format: tandem::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        tandem::config::LogFormat::Text => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
        tandem::config::LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// Runs `fut` on a single-threaded runtime: it accepts connections and runs side tasks;
/// sessions run on the worker pool (see `tandem::workers`) unless `workers = 1`.
pub fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {}", tandem::error_text::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (inside
/// the runtime), not when the future is first polled: a signal that arrives between the
/// "accepting connections" log line and the accept loop's first poll still drains.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the process still stops on the default action.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
