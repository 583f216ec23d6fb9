//! Tandem: a PostgreSQL wire-protocol proxy that moves a hot table to a new one with no
//! downtime and no application change.
//!
//! The tree shows its three parts:
//!
//! - the wire path, what every client byte crosses: [`server`] (accept loop, limits,
//!   shutdown) hands each client to a [`session`] (startup, authentication, relay, and the
//!   application of rules to what the client sends and what the server answers), which
//!   talks through [`wire`] (frames, sockets, TLS, the upstream connection, cancel keys);
//!   [`workers`] are the session threads and [`shared`] what every session gets;
//! - the [`control`] plane: the rule store and its watch, the catalog, the admin console,
//!   the session registry, counters, and the drift and shadow-read side jobs;
//! - the operator commands in [`ops`]: init, backfill, parity, partitions, purge, rules.
//!
//! [`config`] is read by all three; [`embedded`] runs a throwaway local Postgres for the
//! demo and the tests; [`error_text`] words an error and its causes for an operator.

pub mod config;
pub mod control;
pub mod embedded;
pub mod error_text;
pub mod ops;
pub mod server;
pub mod session;
pub mod shared;
pub mod wire;
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
    Tls(#[from] wire::tls::TlsError),
    /// Upstream settings could not be used.
    #[error(transparent)]
    Upstream(#[from] wire::upstream::UpstreamError),
    /// A rule could not be resolved against the catalog.
    #[error(transparent)]
    Catalog(#[from] control::catalog::CatalogError),
    /// The rule store could not be read or prepared.
    #[error("{0}")]
    Store(String),
    /// The listen socket failed.
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    /// The metrics endpoint's socket could not be bound.
    #[error("cannot listen for metrics on {0} (metrics.listen): {1}")]
    MetricsListen(std::net::SocketAddr, std::io::Error),
}
