//! The guard in the database (see `tandem_rules::guard`): changes to a ruled table made
//! around the proxy — functions, procedures, DO blocks, triggers, views, rules, direct
//! connections, COPY, TRUNCATE, MERGE — are mirrored, fail, or are recorded, as the rule's
//! `guard` says; writes through the proxy are applied exactly once; the guard follows the
//! rule's mode and the tables' column changes.

mod ddl;
mod install;
mod paths;
mod switching;

use std::time::{Duration, Instant};

use tandem::RunningProxy;
use tokio_postgres::Client;

/// Waits until `proxy` has applied the newest version of its rule store (the bump a rule
/// change or a followed column change made), with a deadline.
async fn reloaded(proxy: &RunningProxy, check: &Client) {
    let watch = proxy
        .watch
        .as_ref()
        .expect("a ruled proxy watches its store");
    let newest: i64 = check
        .query_one(
            &format!(
                "SELECT coalesce(max(id), 0)::int8 FROM \"{}\".rules_history",
                watch.store().schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while watch.version() < newest as u64 {
        assert!(
            Instant::now() < deadline,
            "the proxy never applied store version {newest}: {:?}",
            watch.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
