//! Every client session of this instance, for the admin console's SHOW SESSIONS.
//!
//! A session registers itself after its StartupMessage and is removed when it ends, on
//! every path (the [`Registered`] guard). The relay updates the live fields (transaction
//! state, whether the server is working on a request and since when, rules version, query
//! count) with relaxed atomic stores: the console only needs a recent picture, and the hot
//! path pays a store or two per request and per ReadyForQuery.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

/// One session's description.
#[derive(Debug)]
pub struct SessionInfo {
    /// Tandem's session id (the one in the logs).
    pub id: u64,
    /// The StartupMessage's user.
    pub user: String,
    /// The StartupMessage's database.
    pub database: String,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// Whether the client uses TLS.
    pub tls: bool,
    /// When it connected.
    pub started_at: SystemTime,
    /// Last ReadyForQuery status (`I`, `T`, `E`), 0 before the first.
    pub state: AtomicU8,
    /// While the server works on a request of the client's (a query, or a pipeline up to
    /// its Sync): when the request now running started, in ms since the Unix epoch; 0
    /// while the session waits for its client.
    pub active_since_ms: AtomicU64,
    /// Rules version the session plans with (0 when it is not ruled).
    pub rules_version: AtomicU64,
    /// Queries (simple Query and Execute messages) sent so far.
    pub queries: AtomicU64,
}

impl SessionInfo {
    /// The state as SHOW SESSIONS prints it: `active` while the server works on a
    /// request, else the last ReadyForQuery's word.
    pub fn state_name(&self) -> &'static str {
        if self.active_since_ms.load(Relaxed) != 0 {
            return "active";
        }
        match self.state.load(Relaxed) {
            b'I' => "idle",
            b'T' => "in transaction",
            b'E' => "in failed transaction",
            _ => "starting",
        }
    }

    /// Records the latest ReadyForQuery status.
    pub fn set_state(&self, status: u8) {
        self.state.store(status, Relaxed);
    }

    /// Records that the server now works on a request, started now (`true`), or waits for
    /// the client (`false`).
    pub fn set_active(&self, active: bool) {
        let since = if active {
            // Never 0, which means "not active".
            now_ms().max(1)
        } else {
            0
        };
        self.active_since_ms.store(since, Relaxed);
    }

    /// How long the request now running has been running, while one is.
    pub fn active_for(&self) -> Option<Duration> {
        match self.active_since_ms.load(Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    /// Records the rules version in use.
    pub fn set_rules_version(&self, version: u64) {
        self.rules_version.store(version, Relaxed);
    }

    /// Counts queries.
    pub fn add_queries(&self, n: u64) {
        if n > 0 {
            self.queries.fetch_add(n, Relaxed);
        }
    }
}

/// The sessions of this instance.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: DashMap<u64, Arc<SessionInfo>>,
}

/// Removes its session from the registry when dropped.
pub struct Registered {
    registry: Arc<SessionRegistry>,
    /// The registered session.
    pub info: Arc<SessionInfo>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.info.id);
    }
}

impl SessionRegistry {
    /// Registers a session; it is removed when the guard drops.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        user: &str,
        database: &str,
        client_addr: SocketAddr,
        tls: bool,
    ) -> Registered {
        let info = Arc::new(SessionInfo {
            id,
            user: user.to_string(),
            database: database.to_string(),
            client_addr,
            tls,
            started_at: SystemTime::now(),
            state: AtomicU8::new(0),
            active_since_ms: AtomicU64::new(0),
            rules_version: AtomicU64::new(0),
            queries: AtomicU64::new(0),
        });
        self.sessions.insert(id, Arc::clone(&info));
        Registered {
            registry: Arc::clone(self),
            info,
        }
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut all: Vec<_> = self
            .sessions
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }
}

/// Wall-clock ms since the Unix epoch (0 for a clock before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
