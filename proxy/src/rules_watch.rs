//! Keeping every instance's rules equal to the store's, within a second.
//!
//! (Skeleton: the API the admin console uses; the body is being written.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::active_rules::ActiveRules;

/// Why the store's rules could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A rule could not be resolved against the catalog; the previous rules stay in force.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// What SHOW RULES / SHOW VERSION report about this instance's view of the store.
#[derive(Debug, Clone, Default)]
pub struct WatchStatus {
    /// Store version the rules in force came from.
    pub applied_version: u64,
    /// Why the newest store version could not be applied, if it could not.
    pub last_error: Option<String>,
    /// Whether the LISTEN connection is up.
    pub listening: bool,
}

/// The rules in force, swapped atomically when the store changes.
pub struct RulesWatch {
    version: AtomicU64,
    current: RwLock<Arc<ActiveRules>>,
    status: RwLock<WatchStatus>,
}

impl RulesWatch {
    /// The rules in force now.
    pub fn current(&self) -> Arc<ActiveRules> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The store version of the rules in force (cheap: sessions check it per batch).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Health of the watch.
    pub fn status(&self) -> WatchStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the store now and applies it; returns the version in force afterwards.
    pub async fn reload(&self) -> Result<u64, WatchError> {
        Ok(self.version())
    }
}
