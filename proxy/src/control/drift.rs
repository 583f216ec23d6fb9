//! Recording drift: writes Tandem let through unmirrored because the rule said `record`.
//!
//! Sessions hand records to a background task over a channel, so recording never adds a
//! round trip to the client's statement. The task writes them to `tandem.drift` on its own
//! connection, reconnecting on failure; the parity report reads them from there. A record
//! is written when the statement is sent, so one whose statement later failed or was
//! rolled back is a false alarm for the report to clear, never a missed divergence.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::config::Config;
use crate::wire::upstream::Connector;

/// One unmirrored write.
#[derive(Debug, Clone)]
pub struct DriftRecord {
    /// The legacy table.
    pub rule_table: String,
    /// Its target.
    pub target_table: String,
    /// What happened (`unmirrored`).
    pub operation: String,
    /// SQLSTATE of the refusal.
    pub sqlstate: String,
    /// Why it could not be mirrored.
    pub error: String,
    /// The client's statement.
    pub statement: String,
}

/// What the drift writer did, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct DriftCounters {
    /// Records handed to the writer.
    pub queued: AtomicU64,
    /// Records written to `tandem.drift`.
    pub written: AtomicU64,
    /// Records lost because the writer had stopped.
    pub lost: AtomicU64,
}

/// Where sessions send drift records.
#[derive(Debug, Clone)]
pub struct DriftSink {
    tx: mpsc::UnboundedSender<DriftRecord>,
    /// Shared with the writer task.
    pub counters: Arc<DriftCounters>,
}

impl DriftSink {
    /// Queues a record; never blocks the session.
    pub fn record(&self, record: DriftRecord) {
        if self.tx.send(record).is_err() {
            self.counters.lost.fetch_add(1, Relaxed);
            error!("drift writer has stopped; a drift record was lost");
        } else {
            self.counters.queued.fetch_add(1, Relaxed);
        }
    }

    /// Starts the writer task.
    pub fn start(config: Arc<Config>, connector: Arc<Connector>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(DriftCounters::default());
        tokio::spawn(write_loop(config, connector, rx, Arc::clone(&counters)));
        Self { tx, counters }
    }
}

async fn write_loop(
    config: Arc<Config>,
    connector: Arc<Connector>,
    mut rx: mpsc::UnboundedReceiver<DriftRecord>,
    counters: Arc<DriftCounters>,
) {
    let mut client = None;
    while let Some(record) = rx.recv().await {
        let mut backoff = Duration::from_millis(100);
        loop {
            if client.is_none() {
                match crate::control::catalog::side_connection(&config, &connector).await {
                    Ok(c) => client = Some(c),
                    Err(e) => warn!(error = %e, "drift writer cannot connect; retrying"),
                }
            }
            if let Some(c) = &client {
                let written = c
                    .execute(
                        "INSERT INTO tandem.drift (rule_table, target_table, operation, sqlstate, error, statement) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[
                            &record.rule_table,
                            &record.target_table,
                            &record.operation,
                            &record.sqlstate,
                            &record.error,
                            &record.statement,
                        ],
                    )
                    .await;
                match written {
                    Ok(_) => {
                        counters.written.fetch_add(1, Relaxed);
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "drift writer failed; retrying");
                        client = None;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
