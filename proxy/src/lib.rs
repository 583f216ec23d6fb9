//! Tandem: a PostgreSQL wire-protocol proxy that moves a hot table to a new one with no
//! downtime and no application change.
//!
//! Layers, each in its own module: [`protocol`] (bytes to frames, no I/O), [`stream`] and
//! [`tls`] (sockets), [`upstream`] (connecting to the real server), [`session`] (one client
//! from startup to close), [`server`] (accept loop, limits, shutdown), [`config`], [`cancel`],
//! [`stats`], and [`embedded`] (a throwaway local Postgres for the demo and the tests).

pub mod active_rules;
pub mod admin;
pub mod backfill;
pub mod cancel;
pub mod catalog;
pub mod config;
pub mod drift;
pub mod embedded;
pub mod init;
pub mod parity;
pub mod partitions;
pub mod protocol;
pub mod purge;
pub mod rules_watch;
pub mod server;
pub mod session;
pub mod sessions;
pub mod shadow;
pub mod stats;
pub mod store;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod workers;

pub use config::Config;
pub use server::{Proxy, RunningProxy};

/// Errors that stop the proxy from starting or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// TLS material could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Upstream settings could not be used.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    /// A rule could not be resolved against the catalog.
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    /// The rule store could not be read or prepared.
    #[error("{0}")]
    Store(String),
    /// The listen socket failed.
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
}
