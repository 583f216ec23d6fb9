//! Reading the catalog for rules: does the target exist, which columns are mirrored, what
//! is the key, and can the target take an upsert on it.
//!
//! Runs at start on a side connection (tokio-postgres over Tandem's own upstream connector,
//! so upstream TLS settings apply). A rule Tandem cannot honour is refused with the table
//! and the reason: a proxy that starts with a broken rule would leave writes unmirrored.

use std::str::FromStr;

use tandem_rules::{
    mirrored_columns, ColumnInfo, GuardPolicy, Mode, ResolvedRule, Rule, RuleSet, TableShape,
};
use tokio_postgres::{Client, NoTls};

use crate::config::Config;
use crate::wire::upstream::{Connector, UpstreamError};

/// Why the rules could not be resolved against the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The side connection failed.
    #[error("cannot read the catalog: {0}")]
    Connect(#[from] UpstreamError),
    /// The server refused a catalog query or login.
    #[error("cannot read the catalog: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The upstream URL is unusable for a side connection.
    #[error("upstream: {0}")]
    Url(String),
    /// A rule cannot be honoured.
    #[error("rule for {table}: {reason}")]
    Rule {
        /// The legacy table.
        table: String,
        /// Why.
        reason: String,
    },
}

/// Opens a side connection with the upstream URL's user, password and database.
pub async fn side_connection(
    config: &Config,
    connector: &Connector,
) -> Result<Client, CatalogError> {
    let pg = upstream_pg_config(config)?;
    let stream = connector.connect().await?;
    let (client, connection) = pg.connect_raw(stream, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "side connection closed");
        }
    });
    Ok(client)
}

/// A side connection from the config alone (command-line tools).
pub async fn connect(config: &Config) -> Result<Client, CatalogError> {
    let connector = Connector::new(config).map_err(|e| CatalogError::Url(e.to_string()))?;
    side_connection(config, &connector).await
}

/// A server error as a person wants to read it: SQLSTATE, message, detail and hint
/// (tokio-postgres's own Display says only "db error"); any other error with its cause
/// ("error communicating with the server: Connection reset by peer").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => crate::error_text::chain(e),
    }
}

/// The upstream URL as a tokio-postgres config (user, password, database).
pub fn upstream_pg_config(config: &Config) -> Result<tokio_postgres::Config, CatalogError> {
    tokio_postgres::Config::from_str(&config.upstream)
        .map_err(|e| CatalogError::Url(crate::error_text::chain(&e)))
}

/// Resolves every configured rule that is not `off` into a [`RuleSet`], for the server's
/// version (which decides what the planner can mirror, MERGE from 17 on).
pub async fn resolve(
    client: &Client,
    rules: &[Rule],
    version: u64,
) -> Result<RuleSet, CatalogError> {
    let mut resolved = Vec::new();
    for rule in rules.iter().filter(|r| r.mode != Mode::Off) {
        resolved.push(resolve_one(client, rule.clone()).await?);
    }
    let server_version = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get::<_, i32>(0);
    RuleSet::new(version, resolved)
        .map(|set| set.with_server_version(u32::try_from(server_version).unwrap_or(0)))
        .map_err(|e| CatalogError::Rule {
            table: String::new(),
            reason: e.to_string(),
        })
}

async fn resolve_one(client: &Client, mut rule: Rule) -> Result<ResolvedRule, CatalogError> {
    let table = rule.table.to_string();
    let refuse = |reason: String| CatalogError::Rule {
        table: table.clone(),
        reason,
    };
    let legacy_found = relation_oid(client, &table).await?;
    if legacy_found.is_none() && rule.mode != Mode::TargetOnly {
        return Err(refuse(format!("legacy table {table} does not exist")));
    }
    let target = rule.target.to_string();
    let target_oid = relation_oid(client, &target).await?.ok_or_else(|| {
        refuse(format!(
            "target table {target} does not exist (create it first)"
        ))
    })?;
    // In target_only the legacy table may be gone already: applications still use its
    // name, which Tandem renames to the target, so the target stands in for it.
    let legacy_oid = legacy_found.unwrap_or(target_oid);

    let legacy = columns(client, legacy_oid).await?;
    let target_cols = columns(client, target_oid).await?;
    let legacy_columns: Vec<String> = legacy
        .iter()
        .filter(|c| !c.generated)
        .map(|c| c.name.clone())
        .collect();
    let flags = |cols: &[Column]| -> Vec<(String, bool)> {
        cols.iter().map(|c| (c.name.clone(), c.generated)).collect()
    };
    let mirrored_columns = mirrored_columns(&flags(&legacy), &flags(&target_cols));
    let target_partition_key = partition_key(client, target_oid).await?;

    let legacy_primary_key = primary_key(client, legacy_oid).await?;
    if rule.key.is_empty() {
        rule.key = legacy_primary_key.clone();
        if rule.key.is_empty() {
            return Err(refuse(format!(
                "no key given and {table} has no primary key; set key = [...]"
            )));
        }
        // A partitioned target's unique keys must contain the partition key.
        for column in &target_partition_key {
            if !rule.key.contains(column) {
                rule.key.push(column.clone());
            }
        }
    }
    if !has_unique_index_on(client, target_oid, &rule.key).await? {
        return Err(refuse(format!(
            "target {target} has no unique index or constraint on exactly ({}); the mirror upserts on it",
            rule.key.join(", ")
        )));
    }
    let guard_ready = guard_ready(client, &rule).await;
    let shape = TableShape {
        guard_ready,
        legacy_columns,
        target_columns: target_cols.iter().map(|c| c.name.clone()).collect(),
        mirrored_columns,
        target_partition_key,
        legacy_oid,
        target_oid,
        legacy_table: legacy.iter().map(Column::info).collect(),
        target_table: target_cols.iter().map(Column::info).collect(),
        legacy_primary_key,
    };
    ResolvedRule::new(rule, shape).map_err(|e| refuse(e.to_string()))
}

/// Is the rule's guard in place on its legacy table with policy `mirror`? Then the planner
/// leaves writes it cannot rewrite to the guard (see `tandem_rules::guard`). False when the
/// support functions are missing or the query fails: refusing is the safe side.
async fn guard_ready(client: &Client, rule: &Rule) -> bool {
    if rule.guard != GuardPolicy::Mirror || !matches!(rule.mode, Mode::DualWrite | Mode::UnionRead)
    {
        return false;
    }
    let state = crate::control::guard::report(client, rule).await;
    matches!(state.as_deref(), Ok("in place"))
}

struct Column {
    name: String,
    generated: bool,
    sql_type: String,
    attnum: i16,
    collation: u32,
}

impl Column {
    fn info(&self) -> ColumnInfo {
        ColumnInfo {
            name: self.name.clone(),
            sql_type: self.sql_type.clone(),
            attnum: self.attnum,
            collation: self.collation,
        }
    }
}

async fn relation_oid(client: &Client, name: &str) -> Result<Option<u32>, CatalogError> {
    let row = client
        .query_one("SELECT to_regclass($1)::oid", &[&name])
        .await?;
    Ok(row.get::<_, Option<u32>>(0))
}

async fn columns(client: &Client, oid: u32) -> Result<Vec<Column>, CatalogError> {
    let rows = client
        .query(
            "SELECT attname::text, attgenerated <> '', format_type(atttypid, atttypmod), attnum, \
               attcollation \
             FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            generated: r.get(1),
            sql_type: r.get(2),
            attnum: r.get(3),
            collation: r.get(4),
        })
        .collect())
}

async fn partition_key(client: &Client, oid: u32) -> Result<Vec<String>, CatalogError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_partitioned_table p \
             CROSS JOIN LATERAL unnest(p.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum \
             WHERE p.partrelid = $1 ORDER BY k.ord",
            &[&oid],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn primary_key(client: &Client, oid: u32) -> Result<Vec<String>, CatalogError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn has_unique_index_on(
    client: &Client,
    oid: u32,
    key: &[String],
) -> Result<bool, CatalogError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique \
               AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) \
                   = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) AS k))",
            &[&oid, &key],
        )
        .await?;
    Ok(row.get(0))
}
