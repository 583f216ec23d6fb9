//! `tandem serve` runs the proxy; `tandem check-config` validates a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tandem::config::Config;
use tandem::Proxy;
use tokio::net::TcpListener;

use super::{config_error, init_logging, load_config, run, shutdown_signal};

/// `tandem serve`.
#[derive(clap::Args)]
pub struct Args {
    /// TOML config file (see docs/config.md); defaults apply without one.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding the file's `listen`.
    #[arg(long)]
    listen: Option<String>,
    /// Upstream connection string, overriding the file's `upstream`.
    #[arg(long)]
    upstream: Option<String>,
    /// Session threads, overriding the file's `workers` (0 = one per CPU, 1 = one event loop for everything).
    #[arg(long)]
    workers: Option<usize>,
    /// Log format, overriding the file's `log_format`: text or json.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["text", "json"]))]
    log_format: Option<String>,
}

/// `tandem check-config`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// TOML config file.
    #[arg(long, short)]
    config: PathBuf,
}

/// Serves until SIGTERM or SIGINT.
pub fn main(args: Args) -> ExitCode {
    let mut config = match load_config(args.config, args.listen, args.upstream) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    if let Some(w) = args.workers {
        config.workers = w;
    }
    if let Some(format) = args.log_format.as_deref().and_then(|f| f.parse().ok()) {
        config.log_format = format;
    }
    init_logging(&config.log_level, config.log_format);
    run(async move { serve(config).await })
}

/// Loads the file and says whether it is valid (exit 0) or not (exit 2).
pub fn check(args: CheckArgs) -> ExitCode {
    match Config::load(&args.config) {
        Ok(_) => {
            println!("{}: ok", args.config.display());
            ExitCode::SUCCESS
        }
        Err(e) => config_error(&e),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let proxy = Proxy::new(config).await?;
    proxy.serve(listener, shutdown_signal()).await?;
    Ok(())
}
