//! What every session of one proxy shares, and the lifecycle it watches.
//!
//! The accept loop ([`crate::server`]) builds one [`Shared`] and hands an `Arc` of it to
//! each session; a session that turns out to be an admin console passes it on to
//! [`crate::control::admin::console`]. Keeping the type here, in a module that imports none
//! of those users, lets the arrows run one way: server -> session -> console -> shared.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::control::admin::scram::Verifier;
use crate::control::drift::DriftSink;
use crate::control::sessions::SessionRegistry;
use crate::control::shadow::Sampler;
use crate::control::stats::Stats;
use crate::control::watch::RulesWatch;
use crate::wire::cancel::CancelMap;
use crate::wire::upstream::Connector;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving.
    Running,
    /// No longer accepting; sessions close when idle.
    Draining,
}

/// What every session of one proxy shares.
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Client-facing TLS, when configured.
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Opens upstream connections.
    pub connector: Arc<Connector>,
    /// Cancel-key map.
    pub cancels: Arc<CancelMap>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Lifecycle, watched by every session.
    pub shutdown: watch::Receiver<Phase>,
    /// The rules in force and their store, when the store is enabled.
    pub watch: Option<Arc<RulesWatch>>,
    /// Where `record`-policy refusals go.
    pub drift: Option<DriftSink>,
    /// Every session of this instance.
    pub sessions: Arc<SessionRegistry>,
    /// Shadow-read sampling, when the store is on.
    pub sampler: Option<Arc<Sampler>>,
    /// The admin console's SCRAM verifier, when `[admin]` is configured.
    pub admin_verifier: Option<Verifier>,
    /// `tls-server-end-point` channel-binding data of the `[tls]` certificate (RFC 5929),
    /// which the admin console binds SCRAM-SHA-256-PLUS to; `None` without `[tls]` or for
    /// a certificate whose signature has no hash to bind with.
    pub tls_end_point: Option<Vec<u8>>,
}
