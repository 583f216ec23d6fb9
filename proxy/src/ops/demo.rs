//! The demo's sample migration, set up the way an operator would: a legacy `orders` table
//! with rows, its target built by [`crate::ops::init`] (as `tandem init --partition-by
//! "list(tenant)"` builds it: columns, defaults, constraints, indexes, access rules and
//! triggers copied), and the rule switched to `dual_write` through the validated
//! transitions ([`crate::control::store::change`]), as `SET RULE` would. A target built by
//! hand once lacked the id's default, and the runbook's cutover step then failed on
//! `INSERT INTO orders (tenant, amount) ...`; building it like `tandem init` keeps the demo
//! on the path the runbook describes.

use tandem_rules::{quote_ident, Mode, TableName};

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::store::change::{self, ChangeError, RuleChange};
use crate::control::store::Store;
use crate::ops::init::{self, InitError, Layout, Options};

/// Rows the sample legacy table starts with.
pub const SAMPLE_ROWS: i64 = 1000;

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The database could not be reached.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Creating the sample table failed.
    #[error("cannot create the sample table: {}", catalog::describe(.0))]
    Schema(#[from] tokio_postgres::Error),
    /// Building the target failed.
    #[error("cannot build the target as tandem init does: {0}")]
    Init(#[from] InitError),
    /// Switching the rule to dual_write was refused.
    #[error("cannot switch the sample rule to dual_write: {}", .0.message)]
    Change(ChangeError),
}

/// What the setup made.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The legacy table (`<schema>.orders`).
    pub legacy: TableName,
    /// The target (`<schema>.orders_v2`).
    pub target: TableName,
}

/// Creates `<schema>.orders` with [`SAMPLE_ROWS`] rows, its LIST-by-tenant target through
/// `tandem init`, and the rule in `dual_write`, in the database and rule store `config`
/// names.
pub async fn prepare(config: &Config, schema: &str) -> Result<Sample, DemoError> {
    let legacy = TableName::new(Some(schema), "orders");
    let client = catalog::connect(config).await?;
    client
        .batch_execute(&sample_schema(schema, &legacy.to_string()))
        .await?;
    let report = init::run(
        config,
        &Options {
            table: legacy.clone(),
            target: None,
            layout: Layout::List {
                column: "tenant".into(),
            },
            no_default: false,
            dry_run: false,
        },
    )
    .await?;
    let mut client = catalog::connect(config).await?;
    change::apply(
        &mut client,
        &Store::new(&config.store.schema),
        RuleChange::SetMode {
            table: legacy.clone(),
            mode: Mode::DualWrite,
            force: false,
        },
        "tandem demo",
    )
    .await
    .map_err(DemoError::Change)?;
    Ok(Sample {
        legacy,
        target: report.target,
    })
}

fn sample_schema(schema: &str, table: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE {table} (
             id         bigserial PRIMARY KEY,
             tenant     text        NOT NULL,
             amount     numeric(12,2) NOT NULL,
             status     text        NOT NULL DEFAULT 'new',
             created_at timestamptz NOT NULL DEFAULT now()
         );
         INSERT INTO {table} (tenant, amount, status, created_at)
         SELECT (ARRAY['acme','globex','initech'])[1 + i % 3], (i % 500) + 0.99,
                (ARRAY['new','paid','shipped'])[1 + i % 3], now() - i * interval '1 hour'
         FROM generate_series(1, {SAMPLE_ROWS}) AS i;
         ANALYZE {table};",
        schema = quote_ident(schema),
    )
}
