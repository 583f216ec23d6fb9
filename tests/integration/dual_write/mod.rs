//! Dual-write through the proxy: every write to a ruled legacy table also lands in its
//! target, and the client sees exactly what Postgres would have answered without Tandem.
//!
//! Most tests run on *twins* (see `tandem_tests::mirror`): the same statements go through the
//! proxy to a ruled pair and straight to an identical unruled pair; the normalized wire
//! transcripts must match, and after every statement the ruled target must hold exactly the
//! ruled legacy rows. Legacy tables have a `bigserial` id, `DEFAULT random()`,
//! `DEFAULT gen_random_uuid()` and `DEFAULT now()` columns, so a mirror that recomputed
//! generated values instead of copying them would show up as drift.

mod bulk;
mod clients;
mod copy;
mod escapes;
mod extended;
mod failures;
mod forms;
mod fuzz_findings;
mod merge;
mod reading;
mod returning;
mod search_path;
mod syntax;
mod untouched;

use tandem_tests::mirror::{
    config_with, db_text, sqlstate, start_ruled_proxy, Kind, Pair, RuleToml,
};
use tandem_tests::{pg, through};
use tokio_postgres::Client;

/// A pair created directly and a proxy with its rule, for tests that need no twin.
async fn ruled_pair(
    kind: Kind,
    adjust: impl FnOnce(RuleToml) -> RuleToml,
) -> (Pair, Client, tandem::RunningProxy) {
    let check = pg().direct().await;
    let pair = Pair::new(kind);
    pair.create(kind, &check).await;
    let proxy = start_ruled_proxy(config_with(&[adjust(pair.rule(kind))])).await;
    (pair, check, proxy)
}
/// A pair with some mirrored rows, for refusal tests: without the guard, which would take
/// the writes Tandem refuses (see `guard_takes_what_tandem_cannot_rewrite`).
async fn seeded_pair() -> (Pair, Client, tandem::RunningProxy, Client) {
    seeded_pair_with("off").await
}

/// [`seeded_pair`] with the guard's policy `guard`.
async fn seeded_pair_with(guard: &str) -> (Pair, Client, tandem::RunningProxy, Client) {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r.guard(guard)).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'a'), ('globex', 2, 'b')",
    ))
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (2, 2));
    (pair, check, proxy, via)
}

fn assert_refusal(e: &tokio_postgres::Error, pair: &Pair, sql: &str) {
    assert_eq!(sqlstate(e), "0A000", "{sql}: {}", db_text(e));
    let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(
        message.contains(&pair.legacy),
        "{sql}: message must name the table: {message}"
    );
}
