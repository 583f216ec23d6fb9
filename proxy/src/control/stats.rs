//! Process counters: sessions, bytes, queries, errors, mirrored writes per rule, refusals,
//! and the proxy's own added time.
//!
//! Plain relaxed atomics, bumped once per read batch rather than per message, so the hot
//! path pays almost nothing. `SHOW STATS` shows a snapshot and the metrics endpoint
//! ([`crate::control::metrics`]) exposes them all. What needs a label (a SQLSTATE, a rule)
//! is counted where it is rare (an error) or already costly (a mirrored statement), under
//! a lock never held across I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use tandem_rules::TableName;

use super::latency::Latency;

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
    /// Hidden probes sent to learn a session's search_path (and role and settings).
    pub search_path_probes: AtomicU64,
    /// Stale search_paths taken from the server's own report instead (PostgreSQL 18).
    pub search_path_reports: AtomicU64,
    /// ErrorResponses by SQLSTATE.
    pub errors_by_code: Labelled<String>,
    /// Tandem's refusals the clients saw, by (SQLSTATE, table).
    pub refusals: Labelled<(String, String)>,
    /// Mirrored statements and rows, per rule.
    pub rules: RuleStats,
    /// Time from a client's bytes arriving to their write upstream (planning included).
    pub added_to_server: Latency,
    /// Time from the server's bytes arriving to their write to the client.
    pub added_to_client: Latency,
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
    /// See [`Stats::search_path_probes`].
    pub search_path_probes: u64,
    /// See [`Stats::search_path_reports`].
    pub search_path_reports: u64,
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
            search_path_probes: self.search_path_probes.load(Relaxed),
            search_path_reports: self.search_path_reports.load(Relaxed),
        }
    }

    /// Counts one ErrorResponse the server sent (`body` without the frame header): by
    /// SQLSTATE, and as a refusal when it is one of Tandem's (raised by a `DO` block whose
    /// message starts with `tandem: `, with the table in its `t`/`s` fields).
    pub fn error_response(&self, body: &[u8]) {
        let mut code = "";
        let mut message = "";
        let mut table = "";
        let mut schema = "";
        for field in body.split(|&b| b == 0) {
            let Some((&kind, value)) = field.split_first() else {
                break;
            };
            let value = std::str::from_utf8(value).unwrap_or("");
            match kind {
                b'C' => code = value,
                b'M' => message = value,
                b't' => table = value,
                b's' => schema = value,
                _ => {}
            }
        }
        self.errors_by_code.add(code.to_string(), 1);
        if message.starts_with("tandem: ") {
            let table = match (schema, table) {
                (_, "") => String::new(),
                ("", t) => t.to_string(),
                (s, t) => format!("{s}.{t}"),
            };
            self.refusals.add((code.to_string(), table), 1);
        }
    }
}

/// Counters keyed by a label, for events that are rare (errors) or already costly.
#[derive(Debug)]
pub struct Labelled<K: Ord> {
    counts: Mutex<BTreeMap<K, u64>>,
}

impl<K: Ord> Default for Labelled<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Ord + Clone> Labelled<K> {
    /// Adds `n` to `key`'s count.
    pub fn add(&self, key: K, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_insert(0) += n;
    }

    /// Every key and its count, in key order.
    pub fn snapshot(&self) -> Vec<(K, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A rule's slot in [`RuleStats`]: small and `Copy`, so a planned statement carries it to
/// the response that completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(u32);

impl RuleId {
    /// No rule (a statement Tandem rewrote for itself).
    pub const NONE: RuleId = RuleId(u32::MAX);
}

/// What one rule's mirrored statements did on this instance.
#[derive(Debug)]
pub struct RuleCounters {
    /// The legacy table, as rules name it (`public.orders`).
    pub table: String,
    /// Mirrored statements that completed (their CommandComplete arrived).
    pub statements: AtomicU64,
    /// Rows those statements wrote, as their command tags say.
    pub rows: AtomicU64,
}

/// The counters of every rule this instance has mirrored a statement for. Slots are only
/// added, never removed, so a [`RuleId`] stays valid across rule changes.
#[derive(Debug, Default)]
pub struct RuleStats {
    slots: RwLock<Vec<(TableName, Arc<RuleCounters>)>>,
}

impl RuleStats {
    /// The slot of `table`'s rule, made on first use.
    pub fn id(&self, table: &TableName) -> RuleId {
        {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = slots.iter().position(|(t, _)| t == table) {
                return RuleId(i as u32);
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = slots.iter().position(|(t, _)| t == table) {
            return RuleId(i as u32);
        }
        slots.push((
            table.clone(),
            Arc::new(RuleCounters {
                table: table.to_string(),
                statements: AtomicU64::new(0),
                rows: AtomicU64::new(0),
            }),
        ));
        RuleId((slots.len() - 1) as u32)
    }

    /// Counts one completed mirrored statement of `id`'s rule that wrote `rows` rows.
    pub fn completed(&self, id: RuleId, rows: u64) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = slots.get(id.0 as usize) {
            c.statements.fetch_add(1, Relaxed);
            c.rows.fetch_add(rows, Relaxed);
        }
    }

    /// Every rule's counters.
    pub fn snapshot(&self) -> Vec<Arc<RuleCounters>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots.iter().map(|(_, c)| Arc::clone(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_server_errors() {
        let stats = Stats::default();
        stats.error_response(b"SERROR\0C23505\0Mduplicate key\0\0");
        stats.error_response(
            b"SERROR\0C0A000\0Mtandem: MERGE into ruled table public.t cannot be mirrored\0spublic\0tt\0\0",
        );
        assert_eq!(
            stats.errors_by_code.snapshot(),
            vec![("0A000".to_string(), 1), ("23505".to_string(), 1)]
        );
        assert_eq!(
            stats.refusals.snapshot(),
            vec![(("0A000".to_string(), "public.t".to_string()), 1)]
        );
    }

    #[test]
    fn rule_ids_are_stable() {
        let rules = RuleStats::default();
        let a = rules.id(&TableName::new(Some("public"), "a"));
        let b = rules.id(&TableName::new(Some("public"), "b"));
        assert_ne!(a, b);
        assert_eq!(rules.id(&TableName::new(Some("public"), "a")), a);
        rules.completed(a, 3);
        rules.completed(a, 2);
        rules.completed(RuleId::NONE, 7);
        let snap = rules.snapshot();
        assert_eq!(snap[0].table, "public.a");
        assert_eq!(snap[0].statements.load(Relaxed), 2);
        assert_eq!(snap[0].rows.load(Relaxed), 5);
    }
}
