//! The accept loop, connection limits, and graceful shutdown.
//!
//! `serve(listener, shared, shutdown)` takes everything as arguments so several proxies can
//! run in one process (tests do). Shutdown is two-phase: `Draining` stops accepting and lets
//! each session finish its transaction (idle ones close at once with 57P01), and after
//! `limits.shutdown_timeout_ms` the remaining sessions are dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use std::str::FromStr;

use crate::config::Config;
use crate::control::drift::DriftSink;
use crate::control::sessions::SessionRegistry;
use crate::control::stats::Stats;
use crate::control::watch::{RulesWatch, WatchError};
use crate::shared::{Phase, Shared};
use crate::wire::cancel::CancelMap;
use crate::wire::upstream::Connector;
use crate::workers::WorkerPool;

/// A proxy ready to serve: configuration loaded, TLS material read.
pub struct Proxy {
    /// Shared with sessions.
    shared: Arc<Shared>,
    /// Sender side of the lifecycle.
    phase: watch::Sender<Phase>,
    /// The metrics endpoint's socket, when `[metrics] listen` is set.
    metrics: Option<TcpListener>,
}

impl Proxy {
    /// Builds a proxy from a validated config: reads TLS files and, when rules are
    /// configured, resolves them against the upstream's catalog (refusing any rule it cannot
    /// honour).
    pub async fn new(config: Config) -> Result<Self, crate::Error> {
        let (acceptor, tls_end_point) = match crate::wire::tls::acceptor(&config)? {
            Some(tls) => {
                if tls.end_point.is_none() && config.admin.is_some() {
                    warn!(
                        "tls.cert: its signature algorithm has no hash for SCRAM channel \
                         binding (tls-server-end-point); the admin console offers \
                         SCRAM-SHA-256 alone"
                    );
                }
                (Some(tls.acceptor), tls.end_point)
            }
            None => (None, None),
        };
        let admin_verifier = match &config.admin {
            Some(admin) => Some(admin.verifier()?),
            None => None,
        };
        let connector = Connector::new(&config)?;
        // Bound first: a taken port stops the start before the store is touched.
        let metrics = crate::control::metrics::bind(&config).await?;
        let config = Arc::new(config);
        let (watch, drift) = load_rules(&config, &connector).await?;
        let sampler = watch.as_ref().map(|w| {
            crate::control::shadow::Sampler::start(
                Arc::clone(&config),
                Arc::clone(&connector),
                Arc::clone(w),
            )
        });
        let (phase, shutdown) = watch::channel(Phase::Running);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                acceptor,
                connector,
                cancels: Arc::new(CancelMap::default()),
                stats: Arc::new(Stats::default()),
                shutdown,
                watch,
                drift,
                sessions: Arc::new(SessionRegistry::default()),
                sampler,
                admin_verifier,
                tls_end_point,
            }),
            phase,
            metrics,
        })
    }

    /// The metrics endpoint's address, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The proxy's counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Accepts clients until `shutdown` resolves, then drains and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), crate::Error> {
        let shared = self.shared;
        let metrics = self
            .metrics
            .map(|l| tokio::spawn(crate::control::metrics::serve(l, Arc::clone(&shared))));
        let limits = shared.config.limits.clone();
        let slots = Arc::new(Semaphore::new(limits.max_clients));
        let next_id = AtomicU64::new(1);
        let mut sessions = JoinSet::new();
        // `workers = 1`: sessions share this runtime. Otherwise a pool of single-threaded
        // runtimes, so no session's round trip crosses threads.
        let pool = match shared.config.workers {
            1 => None,
            n => Some(
                WorkerPool::start(crate::workers::worker_count(n)).map_err(crate::Error::Listen)?,
            ),
        };
        tokio::pin!(shutdown);
        info!(listen = %listener.local_addr().map_err(crate::Error::Listen)?, upstream = %shared.connector.addr_string(), "tandem accepting connections");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                // Reap finished sessions so the set does not grow without bound.
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off briefly rather than spin.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let permit = Arc::clone(&slots).try_acquire_owned().ok();
                    let id = next_id.fetch_add(1, Relaxed);
                    let span = tracing::info_span!("session", id);
                    let shared = Arc::clone(&shared);
                    match &pool {
                        None => {
                            sessions.spawn(crate::session::run(tcp, peer, shared, permit, id).instrument(span));
                        }
                        Some(pool) => {
                            // Move the socket to the worker's reactor.
                            let Ok(std_tcp) = tcp.into_std() else { continue };
                            sessions.spawn_on(
                                async move {
                                    match tokio::net::TcpStream::from_std(std_tcp) {
                                        Ok(tcp) => crate::session::run(tcp, peer, shared, permit, id).await,
                                        Err(e) => warn!(error = %e, "cannot move socket to worker"),
                                    }
                                }
                                .instrument(span),
                                pool.pick(),
                            );
                        }
                    }
                }
            }
        }
        drop(listener);
        let _ = self.phase.send(Phase::Draining);
        let open = sessions.len();
        info!(
            open,
            timeout_ms = limits.shutdown_timeout_ms,
            "shutting down: draining sessions"
        );
        let drained = tokio::time::timeout(limits.shutdown_timeout(), async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = sessions.len(),
                "drain timeout reached: closing remaining sessions"
            );
            sessions.shutdown().await;
        }
        if let Some(task) = metrics {
            task.abort();
        }
        info!("tandem stopped");
        Ok(())
    }
}

/// Starts the rule store watch (migrating and seeding the store) when the store is on.
async fn load_rules(
    config: &Arc<Config>,
    connector: &Arc<Connector>,
) -> Result<(Option<Arc<RulesWatch>>, Option<DriftSink>), crate::Error> {
    if !config.store_enabled() {
        return Ok((None, None));
    }
    let database = upstream_database(config);
    let watch = RulesWatch::start(Arc::clone(config), Arc::clone(connector), database)
        .await
        .map_err(|e| match e {
            WatchError::Catalog(c) => crate::Error::Catalog(c),
            other => crate::Error::Store(other.to_string()),
        })?;
    let drift = DriftSink::start(Arc::clone(config), Arc::clone(connector));
    Ok((Some(watch), Some(drift)))
}

/// The database the upstream URL names (the rules' tables live there).
fn upstream_database(config: &Config) -> String {
    let pg = tokio_postgres::Config::from_str(&config.upstream).ok();
    pg.as_ref()
        .and_then(|c| c.get_dbname().or(c.get_user()))
        .unwrap_or("postgres")
        .to_string()
}

/// A proxy running in the background, for tests and embedding.
pub struct RunningProxy {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The rules in force, when the store is on.
    pub watch: Option<Arc<RulesWatch>>,
    /// The metrics endpoint, when `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Resolves the shutdown future.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The serve task.
    task: tokio::task::JoinHandle<Result<(), crate::Error>>,
}

impl RunningProxy {
    /// Binds `config.listen` (port 0 picks a free port) and serves in a background task.
    pub async fn start(config: Config) -> Result<Self, crate::Error> {
        let addr = config.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(crate::Error::Listen)?;
        let addr = listener.local_addr().map_err(crate::Error::Listen)?;
        let proxy = Proxy::new(config).await?;
        let stats = proxy.stats();
        let watch = proxy.shared.watch.clone();
        let metrics_addr = proxy.metrics_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stats,
            watch,
            metrics_addr,
            stop: Some(stop),
            task,
        })
    }

    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> Result<(), crate::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(Ok(()))
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
