//! When a running backfill publishes its watermark (`--watermark-every`).
//!
//! The watermark lets union reads take the rows the run has copied from the target alone
//! (see [`state::publish_watermark`]). Publishing it is a rule change every proxy instance
//! reloads, so it is paced: at most once per interval while batches go on, and once more
//! when the copying stops (paused, or done and waiting for its last re-checks), so a
//! paused run's progress counts too. A failed publication is a warning, not a failed
//! backfill (the watermark only speeds reads up; a stale one is still true), and is tried
//! again at the next interval, not at once.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::state::{self, Key};
use crate::control::catalog;

/// The pacing of one run's publications.
pub(super) struct Watermark {
    /// Between publications; zero: never publish.
    every: Duration,
    /// When the last publication was tried (the run's start before the first).
    last: Instant,
}

impl Watermark {
    /// Publications every `every` from now (zero: none).
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
        }
    }

    /// Whether the interval has passed since the last try.
    pub fn due(&self) -> bool {
        !self.every.is_zero() && self.last.elapsed() >= self.every
    }

    /// Publishes if the interval has passed since the last try.
    pub async fn tick(&mut self, client: &Client, key: &Key<'_>) {
        if self.due() {
            self.publish(client, key).await;
        }
    }

    /// Publishes now (the copying stopped), unless publications are off.
    pub async fn publish(&mut self, client: &Client, key: &Key<'_>) {
        if self.every.is_zero() {
            return;
        }
        self.last = Instant::now();
        match state::publish_watermark(client, key).await {
            Ok(true) => tracing::debug!(table = key.table, "backfill watermark published"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                table = key.table,
                error = %catalog::describe(&e),
                retry_in_s = self.every.as_secs_f64(),
                "could not publish the backfill watermark; the backfill goes on and tries again at the next interval"
            ),
        }
    }
}
