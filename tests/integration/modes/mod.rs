//! The later modes through the proxy, one at a time (the fleet and walk tests switch
//! between them): `union_read` and `cutover` reads equal a direct read of the legacy table
//! and keep index scans and column origins; `cutover` writes land in both tables with the
//! client's own tags; `target_only` runs everything on the target.

mod prepared;
mod reads;
mod writes;

use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, RuleToml};
use tandem_tests::{pg, through, unique};
use tokio_postgres::Client;

/// A legacy table `t` (id bigint PK, tenant, amount, note) with `rows` rows, a target `t_v2`
/// LIST-partitioned by tenant, holding a copy of every row with an even id (the others are
/// "not backfilled yet"), and a `t_customers` table to join.
pub struct Fixture {
    pub legacy: String,
    pub target: String,
    pub customers: String,
    pub check: Client,
}

impl Fixture {
    pub async fn new(rows: i64) -> Self {
        let check = pg().direct().await;
        let legacy = unique("md");
        let target = format!("{legacy}_v2");
        let customers = format!("{legacy}_customers");
        check
            .batch_execute(&format!(
                "CREATE TABLE {legacy} (id bigint PRIMARY KEY, tenant text NOT NULL, amount numeric(10,2) NOT NULL, note text);
                 CREATE TABLE {target} (id bigint NOT NULL, tenant text NOT NULL, amount numeric(10,2) NOT NULL, note text,
                                        PRIMARY KEY (id, tenant)) PARTITION BY LIST (tenant);
                 CREATE TABLE {target}_a PARTITION OF {target} FOR VALUES IN ('acme');
                 CREATE TABLE {target}_o PARTITION OF {target} DEFAULT;
                 CREATE TABLE {customers} (id bigint PRIMARY KEY, name text NOT NULL);
                 INSERT INTO {legacy} SELECT g, CASE WHEN g % 3 = 0 THEN 'acme' ELSE 'globex' END, g * 1.5, 'n' || g
                   FROM generate_series(1, {rows}) g;
                 INSERT INTO {target} SELECT * FROM {legacy} WHERE id % 2 = 0;
                 INSERT INTO {customers} SELECT g, 'c' || g FROM generate_series(1, {rows}) g;
                 ANALYZE {legacy}; ANALYZE {target}; ANALYZE {customers};"
            ))
            .await
            .unwrap_or_else(|e| panic!("{}", db_text(&e)));
        Self {
            legacy,
            target,
            customers,
            check,
        }
    }

    pub fn sql(&self, template: &str) -> String {
        template
            .replace("{legacy}", &self.legacy)
            .replace("{target}", &self.target)
            .replace("{customers}", &self.customers)
    }

    /// The note of legacy row `id`, read directly.
    pub async fn legacy_note(&self, id: i64) -> String {
        self.check
            .query_one(&self.sql("SELECT note FROM {legacy} WHERE id = $1"), &[&id])
            .await
            .unwrap()
            .get(0)
    }

    /// A proxy whose rule on this fixture is in `mode`.
    pub async fn proxy(&self, mode: &str) -> (tandem::RunningProxy, Client) {
        let (_, proxy, via) = self.ruled(mode).await;
        (proxy, via)
    }

    /// [`proxy`](Self::proxy), with the config it runs (for tests that reach its rule store).
    pub async fn ruled(&self, mode: &str) -> (tandem::Config, tandem::RunningProxy, Client) {
        let rule = RuleToml::dual_write(&self.legacy)
            .mode(mode)
            .key(&["id", "tenant"]);
        let config = config_with(&[rule]);
        let proxy = start_ruled_proxy(config.clone()).await;
        let via = through(&proxy).await;
        (config, proxy, via)
    }
}
