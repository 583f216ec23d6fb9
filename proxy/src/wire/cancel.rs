//! Cancel-key mapping between clients and upstream backends.
//!
//! Each session hands its client a BackendKeyData made up by the proxy and remembers the
//! upstream's real one. A CancelRequest arrives on a fresh connection carrying the proxy's
//! key; [`CancelMap::lookup`] turns it back into the upstream's so the right query stops.
//!
//! Protocol 3.2 (PostgreSQL 18) lets a server hand out secrets of up to 256 bytes (18 gives
//! 32) where 3.0 had exactly 4. The proxy's secret is as long as the upstream's: a 3.0
//! client gets the 4 bytes it can parse, a 3.2 client the longer, harder-to-guess key its
//! server would have given it, and the upstream's key of either length is carried through.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// The longest secret protocol 3.2 allows.
const MAX_SECRET: usize = 256;

/// The upstream backend a proxy key stands for.
#[derive(Debug, Clone)]
struct Target {
    /// The secret the proxy gave the client (as long as the upstream's).
    secret: Vec<u8>,
    /// The upstream backend's process id.
    upstream_pid: i32,
    /// The upstream backend's secret key.
    upstream_secret: Vec<u8>,
}

/// Live sessions' cancel keys, shared by all sessions of one proxy.
#[derive(Debug, Default)]
pub struct CancelMap {
    /// Proxy pid -> upstream key.
    entries: DashMap<i32, Target>,
    /// Next proxy pid to hand out.
    next_pid: AtomicI32,
}

/// Removes a session's key when the session ends.
pub struct Registration {
    map: Arc<CancelMap>,
    pid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.map.entries.remove(&self.pid);
    }
}

impl CancelMap {
    /// Records an upstream key and returns the proxy key to give the client, whose secret is
    /// as long as the upstream's (4 to 256 bytes).
    pub fn register(
        self: &Arc<Self>,
        upstream_pid: i32,
        upstream_secret: Vec<u8>,
    ) -> (i32, Vec<u8>, Registration) {
        let pid = loop {
            // Positive, never 0, and not yet in use (after 2^31 sessions it wraps).
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            if pid != 0 && !self.entries.contains_key(&pid) {
                break pid;
            }
        };
        let secret: Vec<u8> = (0..upstream_secret.len().clamp(4, MAX_SECRET))
            .map(|_| rand::random::<u8>())
            .collect();
        self.entries.insert(
            pid,
            Target {
                secret: secret.clone(),
                upstream_pid,
                upstream_secret,
            },
        );
        (
            pid,
            secret,
            Registration {
                map: Arc::clone(self),
                pid,
            },
        )
    }

    /// The upstream key for a client's cancel request, if the proxy key is valid.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<(i32, Vec<u8>)> {
        let entry = self.entries.get(&pid)?;
        (entry.secret[..] == *secret).then(|| (entry.upstream_pid, entry.upstream_secret.clone()))
    }

    /// Live registrations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_and_drop() {
        let map = Arc::new(CancelMap::default());
        let (pid, secret, reg) = map.register(777, vec![9, 9, 9, 9]);
        assert_eq!(map.lookup(pid, &secret), Some((777, vec![9, 9, 9, 9])));
        assert_eq!(secret.len(), 4);
        let mut wrong = secret.clone();
        wrong[0] ^= 1;
        assert_eq!(map.lookup(pid, &wrong), None);
        drop(reg);
        assert_eq!(map.lookup(pid, &secret), None);
        assert!(map.is_empty());
    }

    #[test]
    fn a_long_upstream_key_gets_an_as_long_proxy_key() {
        let map = Arc::new(CancelMap::default());
        let upstream: Vec<u8> = (0..32).collect();
        let (pid, secret, _reg) = map.register(4242, upstream.clone());
        assert_eq!(secret.len(), 32);
        assert_eq!(map.lookup(pid, &secret), Some((4242, upstream)));
        assert_eq!(map.lookup(pid, &secret[..4]), None);
    }
}
