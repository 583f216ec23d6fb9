//! Process counters: sessions, bytes, queries, errors.
//!
//! Plain relaxed atomics, bumped once per read batch rather than per message, so the hot
//! path pays almost nothing. The admin console (a later issue) will expose a snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters shared by every session of one proxy.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sessions accepted since start.
    pub sessions_total: AtomicU64,
    /// Sessions open now.
    pub sessions_active: AtomicU64,
    /// Connections refused for `limits.max_clients`.
    pub sessions_refused: AtomicU64,
    /// Bytes relayed client -> upstream.
    pub bytes_from_clients: AtomicU64,
    /// Bytes relayed upstream -> client.
    pub bytes_to_clients: AtomicU64,
    /// Simple queries plus extended-protocol Executes.
    pub queries: AtomicU64,
    /// ErrorResponses relayed or raised.
    pub errors: AtomicU64,
    /// Cancel requests forwarded.
    pub cancels: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::sessions_total`].
    pub sessions_total: u64,
    /// See [`Stats::sessions_active`].
    pub sessions_active: u64,
    /// See [`Stats::sessions_refused`].
    pub sessions_refused: u64,
    /// See [`Stats::bytes_from_clients`].
    pub bytes_from_clients: u64,
    /// See [`Stats::bytes_to_clients`].
    pub bytes_to_clients: u64,
    /// See [`Stats::queries`].
    pub queries: u64,
    /// See [`Stats::errors`].
    pub errors: u64,
    /// See [`Stats::cancels`].
    pub cancels: u64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            sessions_total: self.sessions_total.load(Relaxed),
            sessions_active: self.sessions_active.load(Relaxed),
            sessions_refused: self.sessions_refused.load(Relaxed),
            bytes_from_clients: self.bytes_from_clients.load(Relaxed),
            bytes_to_clients: self.bytes_to_clients.load(Relaxed),
            queries: self.queries.load(Relaxed),
            errors: self.errors.load(Relaxed),
            cancels: self.cancels.load(Relaxed),
        }
    }
}
