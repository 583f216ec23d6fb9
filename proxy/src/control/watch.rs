//! Keeping every instance's rules equal to the store's, within a second.
//!
//! At start the instance migrates the store, seeds it from the config file, and resolves
//! the rules against the catalog (a rule it cannot honour stops the start, as before).
//! Then a background task keeps a connection that `LISTEN`s on `tandem_rules`: every
//! notification reloads the whole store, and a poll of the store's version every
//! `store.poll_interval_ms` catches a notification missed while the connection was down
//! (it reconnects with exponential backoff). A reload resolves every rule again and swaps
//! the [`ActiveRules`] atomically; if a rule cannot be resolved (its target was dropped,
//! say) the previous rules stay in force and the error is reported by `SHOW VERSION`.
//!
//! Sessions pick the new rules up only at a transaction boundary (see
//! `session::mirror::ClientSide::adopt_latest`), so no transaction runs under two versions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::control::active_rules::ActiveRules;
use crate::control::catalog::{self, CatalogError};
use crate::control::store::{self, StoreError};
use crate::wire::upstream::Connector;

/// Why the store's rules could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A rule could not be resolved against the catalog; the previous rules stay in force.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The LISTEN connection ended.
    #[error("the rule store watch connection closed")]
    Lost,
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
    store: store::Store,
    config: Arc<Config>,
    connector: Arc<Connector>,
    /// The database whose tables the rules name (the upstream URL's).
    database: String,
    version: AtomicU64,
    current: RwLock<Arc<ActiveRules>>,
    status: RwLock<WatchStatus>,
    /// One reload at a time: a slow one must not overwrite a newer one.
    reloading: tokio::sync::Mutex<()>,
    /// A guard could not be installed (a lock not granted in time): tried again at every
    /// poll until it is.
    guards_pending: std::sync::atomic::AtomicBool,
}

impl RulesWatch {
    /// Migrates and seeds the store, loads and resolves the rules, and starts the
    /// background watch. Fails when the store cannot be read or a rule cannot be honoured.
    pub async fn start(
        config: Arc<Config>,
        connector: Arc<Connector>,
        database: String,
    ) -> Result<Arc<Self>, WatchError> {
        let client = catalog::side_connection(&config, &connector).await?;
        let names = store::Store::new(&config.store.schema);
        store::migrate(&client, &names).await?;
        let seeded = store::bootstrap(&client, &names, &config.rules).await?;
        if seeded > 0 {
            info!(rules = seeded, "rule store seeded from the config file");
        }
        let guards_in_line = crate::control::guard::sync_all(&client, &names).await;
        let snapshot = store::load(&client, &names).await?;
        let active = resolve(&client, &snapshot, &database, &config).await?;
        for rule in &active.set.rules {
            info!(table = %rule.rule.table, target = %rule.rule.target, mode = rule.rule.mode.as_str(), key = ?rule.rule.key, %database, "rule active");
        }
        let watch = Arc::new(Self {
            store: names,
            config,
            connector,
            database,
            version: AtomicU64::new(snapshot.version),
            current: RwLock::new(Arc::new(active)),
            status: RwLock::new(WatchStatus {
                applied_version: snapshot.version,
                last_error: None,
                listening: false,
            }),
            reloading: tokio::sync::Mutex::new(()),
            guards_pending: std::sync::atomic::AtomicBool::new(!guards_in_line),
        });
        tokio::spawn(listen_loop(Arc::downgrade(&watch)));
        Ok(watch)
    }

    /// The store this instance watches.
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// The database whose sessions are ruled.
    pub fn database(&self) -> &str {
        &self.database
    }

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
        let client = catalog::side_connection(&self.config, &self.connector).await?;
        self.reload_with(&client).await
    }

    async fn reload_with(&self, client: &Client) -> Result<u64, WatchError> {
        let _one = self.reloading.lock().await;
        let result = async {
            let snapshot = store::load(client, &self.store).await?;
            if snapshot.version == self.version() {
                return Ok(snapshot.version);
            }
            let active = resolve(client, &snapshot, &self.database, &self.config).await?;
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(active);
            self.version.store(snapshot.version, Ordering::Release);
            info!(
                version = snapshot.version,
                rules = snapshot.rules.len(),
                "rules reloaded from the store"
            );
            Ok::<_, WatchError>(snapshot.version)
        }
        .await;
        let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(version) => {
                status.applied_version = *version;
                status.last_error = None;
            }
            Err(e) => {
                warn!(error = %e, "rule store change not applied; previous rules stay in force");
                status.last_error = Some(e.to_string());
            }
        }
        result
    }

    fn set_listening(&self, up: bool) {
        self.status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .listening = up;
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.config.store.poll_interval_ms.max(10))
    }
}

/// Every non-off rule of `snapshot`, resolved against the catalog.
async fn resolve(
    client: &Client,
    snapshot: &store::Snapshot,
    database: &str,
    config: &Config,
) -> Result<ActiveRules, WatchError> {
    // Off rules too: a chain written by hand must not wait for its rule to be switched on.
    tandem_rules::refuse_chains(snapshot.rules.iter().map(|r| &r.rule))
        .map_err(StoreError::from)?;
    let rules: Vec<_> = snapshot.rules.iter().map(|r| r.rule.clone()).collect();
    let set = catalog::resolve(client, &rules, snapshot.version).await?;
    Ok(ActiveRules::new(
        set,
        database.to_string(),
        config.limits.plan_cache_bytes,
    ))
}

/// LISTEN, reload on notifications, poll, reconnect with backoff; ends when the watch is
/// dropped.
async fn listen_loop(watch: Weak<RulesWatch>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(strong) = watch.upgrade() else {
            return;
        };
        let session = listen_once(&strong).await;
        strong.set_listening(false);
        let poll = strong.poll_interval();
        drop(strong);
        match session {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "rule store watch lost; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(poll.max(Duration::from_secs(5)));
            }
        }
    }
}

/// One LISTEN connection's life. `Ok` means the watch was dropped.
async fn listen_once(watch: &Arc<RulesWatch>) -> Result<(), WatchError> {
    let (client, mut notified) = listen_connection(watch).await?;
    watch.set_listening(true);
    // Whatever changed while the connection was down.
    let _ = watch.reload_with(&client).await;
    let weak = Arc::downgrade(watch);
    let poll = watch.poll_interval();
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = notified.recv() => {
                let Some(()) = note else {
                    return Err(WatchError::Lost);
                };
                while notified.try_recv().is_ok() {}
                let Some(w) = weak.upgrade() else { return Ok(()) };
                debug!("rule store notification");
                let _ = w.reload_with(&client).await;
            }
            _ = ticker.tick() => {
                let Some(w) = weak.upgrade() else { return Ok(()) };
                if w.guards_pending.load(Ordering::Acquire) {
                    let done = crate::control::guard::sync_all(&client, &w.store).await;
                    w.guards_pending.store(!done, Ordering::Release);
                }
                let version = store::version(&client, &w.store).await?;
                if version != w.version() {
                    debug!(version, "rule store poll found a change");
                    let _ = w.reload_with(&client).await;
                }
            }
        }
    }
}

/// A side connection that has run `LISTEN tandem_rules`, and a channel that receives one
/// `()` per notification (closed when the connection ends).
async fn listen_connection(
    watch: &RulesWatch,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<()>), WatchError> {
    let mut pg = catalog::upstream_pg_config(&watch.config)?;
    // Operators (and tests) find it in pg_stat_activity by this name.
    pg.application_name(format!("tandem rules watch {}", watch.store.schema));
    let stream = watch
        .connector
        .connect()
        .await
        .map_err(CatalogError::from)?;
    let (client, mut connection) = pg
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .map_err(CatalogError::from)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "rule store watch connection ended");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {}",
            tandem_rules::quote_ident(&watch.store.channel())
        ))
        .await
        .map_err(CatalogError::from)?;
    Ok((client, rx))
}
