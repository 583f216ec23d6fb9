//! The Prometheus endpoint: `GET /metrics` on `[metrics] listen`, off unless configured.
//!
//! Nothing here is on the hot path. Sessions only bump the relaxed atomics of
//! [`crate::control::stats`], the shadow sampler and the drift writer; a scrape reads them
//! ([`Facts::gather`]), adds what lives in the database (backfill progress, unresolved
//! drift, the guard's state, shadow overlap: [`store`], one side connection per scrape,
//! bounded in time), and renders everything with `prometheus-client` ([`render`]), in the
//! OpenMetrics text format Prometheus scrapes. [`http`] is the few lines of HTTP/1.1 a
//! scrape needs. The metric names are listed in docs/metrics.md.

mod http;
mod render;
mod store;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::control::latency::LatencySnapshot;
use crate::control::stats::StatsSnapshot;
use crate::shared::Shared;

pub use http::serve;
pub use store::StoreFacts;

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct Facts {
    /// The process counters.
    pub stats: StatsSnapshot,
    /// ErrorResponses by SQLSTATE.
    pub errors_by_code: Vec<(String, u64)>,
    /// Tandem's refusals by (SQLSTATE, table).
    pub refusals: Vec<((String, String), u64)>,
    /// Per rule: (legacy table, mirrored statements, mirrored rows).
    pub mirrored: Vec<(String, u64, u64)>,
    /// Added time towards the server and towards the client.
    pub added: Option<(LatencySnapshot, LatencySnapshot)>,
    /// Shadow samples: queued, dropped, recorded, failed.
    pub shadow: Option<[u64; 4]>,
    /// Shadow samples queued for a shape's coverage.
    pub shadow_coverage: Option<u64>,
    /// Read shapes this instance tracks, and new shapes it could not track (map full).
    pub shapes: Option<(u64, u64)>,
    /// Drift records: queued, written, lost.
    pub drift: Option<[u64; 3]>,
    /// The rules this instance applies: (table, target, mode).
    pub rules: Vec<(String, String, String)>,
    /// The rules version this instance applies, whether it listens, and whether its last
    /// reload failed; `None` without a rule store.
    pub watch: Option<(u64, bool, bool)>,
    /// What the database says, when the store is on and answered in time.
    pub store: Option<Result<StoreFacts, String>>,
}

impl Facts {
    /// Reads the proxy's counters and, when the rule store is on, asks the database.
    pub async fn gather(shared: &Shared) -> Self {
        let stats = &shared.stats;
        let mut facts = Facts {
            stats: stats.snapshot(),
            errors_by_code: stats.errors_by_code.snapshot(),
            refusals: stats.refusals.snapshot(),
            mirrored: stats
                .rules
                .snapshot()
                .iter()
                .map(|r| {
                    (
                        r.table.clone(),
                        r.statements.load(Relaxed),
                        r.rows.load(Relaxed),
                    )
                })
                .collect(),
            added: Some((
                stats.added_to_server.snapshot(),
                stats.added_to_client.snapshot(),
            )),
            shadow: shared.sampler.as_ref().map(|s| {
                [
                    s.queued.load(Relaxed),
                    s.dropped.load(Relaxed),
                    s.recorded.load(Relaxed),
                    s.failed.load(Relaxed),
                ]
            }),
            shadow_coverage: shared.sampler.as_ref().map(|s| s.coverage.load(Relaxed)),
            shapes: shared
                .sampler
                .as_ref()
                .and_then(|s| s.shapes.as_ref())
                .map(|s| (s.tracked() as u64, s.untracked.load(Relaxed))),
            drift: shared.drift.as_ref().map(|d| {
                [
                    d.counters.queued.load(Relaxed),
                    d.counters.written.load(Relaxed),
                    d.counters.lost.load(Relaxed),
                ]
            }),
            ..Facts::default()
        };
        if let Some(watch) = &shared.watch {
            let status = watch.status();
            facts.watch = Some((
                status.applied_version,
                status.listening,
                status.last_error.is_some(),
            ));
            facts.rules = watch
                .current()
                .set
                .rules
                .iter()
                .map(|r| {
                    (
                        r.rule.table.to_string(),
                        r.rule.target.to_string(),
                        r.rule.mode.to_string(),
                    )
                })
                .collect();
            facts.store = Some(store::gather(shared, watch.store()).await);
        }
        facts
    }
}

/// Binds the endpoint's listener when `[metrics] listen` is set.
pub async fn bind(config: &crate::Config) -> Result<Option<TcpListener>, crate::Error> {
    match config.metrics.listen_addr()? {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| crate::Error::MetricsListen(addr, e)),
    }
}

/// The exposition text of one scrape.
pub async fn scrape(shared: &Arc<Shared>) -> String {
    render::text(Facts::gather(shared).await)
}
