//! The rule store: rules live in the upstream database, shared by every proxy instance.
//!
//! An operator runs several Tandem instances behind a load balancer; a mode flip must reach
//! all of them, and survive restarts. So the rules are rows in `tandem.rules` (created on
//! first start by versioned migrations, see [`migrate`]), every change is logged in
//! `tandem.rules_history` and announced with `NOTIFY tandem_rules` by a trigger (so even a
//! hand-written UPDATE is seen), and each instance reloads the whole table on a
//! notification or a periodic poll (see [`crate::control::watch`]).
//!
//! The config file's `[[rule]]` entries only seed rows that do not exist yet
//! ([`bootstrap`]); after that the store is the source of truth.

pub mod change;
pub mod resync;

use tandem_rules::{Rule, TableName};
use tokio_postgres::Client;

/// Names of one store's objects. Each store is a schema (config `store.schema`, default
/// `tandem`); separate fleets, or tests, can share a database with separate stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// The schema, catalog spelling.
    pub schema: String,
}

impl Store {
    /// The store in `schema`.
    pub fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_string(),
        }
    }

    /// `"<schema>".<object>`, for SQL text.
    pub fn qualified(&self, object: &str) -> String {
        format!("{}.{object}", tandem_rules::quote_ident(&self.schema))
    }

    /// The rules table.
    pub fn rules(&self) -> String {
        self.qualified("rules")
    }

    /// Backfill progress.
    pub fn backfill_state(&self) -> String {
        self.qualified("backfill_state")
    }

    /// Backfill batches whose copies wait for their re-check.
    pub fn backfill_pending(&self) -> String {
        self.qualified("backfill_pending")
    }

    /// The key ranges of backfill runs split for parallel workers.
    pub fn backfill_parts(&self) -> String {
        self.qualified("backfill_parts")
    }

    /// The change log.
    pub fn history(&self) -> String {
        self.qualified("rules_history")
    }

    /// The NOTIFY channel: `<schema>_rules` (`tandem_rules` by default).
    pub fn channel(&self) -> String {
        format!("{}_rules", self.schema)
    }
}

/// Advisory lock key serialising schema creation and migrations across instances.
pub const SCHEMA_LOCK: i64 = 0x7461_6e64_656d; // "tandem"

/// Versioned migrations, applied in order, each once.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("001_rules.sql")),
    (2, include_str!("002_backfill.sql")),
    (3, include_str!("003_shadow.sql")),
    (4, include_str!("004_auto_partition.sql")),
    (5, include_str!("005_guard.sql")),
    (6, include_str!("006_drop_columns.sql")),
    (7, include_str!("007_backfill_pending.sql")),
    (8, include_str!("008_drop_triggers.sql")),
    (9, include_str!("009_backfill_direction.sql")),
    (10, include_str!("010_backfilled.sql")),
    (11, include_str!("011_backfill_parts.sql")),
    (12, include_str!("012_shadow_shapes.sql")),
    (13, include_str!("013_backfilled_to.sql")),
];

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The server refused a query.
    #[error("rule store: {}", server_message(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The rules together are not valid: one rule's legacy table is another's target.
    #[error("rule store: {0}")]
    Rules(#[from] tandem_rules::RuleError),
    /// A stored row does not make a valid rule (edited by hand?).
    #[error("rule store: row for {table}: {reason}")]
    BadRow {
        /// `table_name` of the row.
        table: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The server's own words for a failed query (tokio-postgres prints only "db error").
pub fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => crate::error_text::chain(e),
    }
}

/// One row of `tandem.rules`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    /// The rule it describes.
    pub rule: Rule,
    /// Bumped by every change of the row.
    pub version: i64,
    /// When it last changed (text, as the server formats timestamptz).
    pub updated_at: String,
    /// Who last changed it (admin user, `config`, or the SQL role).
    pub updated_by: String,
}

/// The whole store at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Id of the newest `tandem.rules_history` row: the store's global version. Every
    /// change increases it, so instances compare it to know whether they are current.
    pub version: u64,
    /// Every rule, in any mode, ordered by table.
    pub rules: Vec<StoredRule>,
}

/// Creates the `tandem` schema, the drift support objects and the rule store, applying
/// migrations not applied yet. Idempotent and safe when several instances start at once.
pub async fn migrate(client: &Client, store: &Store) -> Result<(), StoreError> {
    let schema = tandem_rules::quote_ident(&store.schema);
    let migrations = store.qualified("schema_migrations");
    let mut sql = format!(
        "BEGIN; SET LOCAL client_min_messages = warning; \
         SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {} \
         CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {migrations} ( \
             version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        tandem_rules::SUPPORT_SQL
    );
    for (version, body) in MIGRATIONS {
        // Each migration runs only if its number is not recorded yet.
        sql.push_str(&format!(
            " DO $tandem_migrate$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM {migrations} WHERE version = {version}) THEN \
                 EXECUTE {body}; \
                 INSERT INTO {migrations} (version) VALUES ({version}); \
               END IF; END $tandem_migrate$;",
            body = quote_literal(&body.replace("@store@", &schema)),
        ));
    }
    sql.push_str(" COMMIT;");
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Inserts the configured rules that have no row yet; existing rows win. Refused, with
/// nothing written, when a configured rule would chain with a stored one (its table is a
/// stored rule's target, or its target a stored rule's table; see
/// [`tandem_rules::refuse_chains`]).
pub async fn bootstrap(client: &Client, store: &Store, rules: &[Rule]) -> Result<u64, StoreError> {
    let stored = load(client, store).await?;
    // A guard whose tables a long transaction holds is left for later, not a failed start.
    client.batch_execute("SET tandem.guard_defer = on").await?;
    let seeded = rules.iter().filter(|r| find(&stored, &r.table).is_none());
    tandem_rules::refuse_chains(stored.rules.iter().map(|r| &r.rule).chain(seeded))?;
    let sql = format!(
        "INSERT INTO {} (table_name, target, key, mode, sample_rate, \
           on_mirror_error, set_columns, auto_partition, guard, drop_columns, drop_triggers, \
           updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, 'config') \
         ON CONFLICT (table_name) DO NOTHING",
        store.rules()
    );
    let mut inserted = 0;
    for rule in rules {
        inserted += client
            .execute(
                &sql,
                &[
                    &rule.table.to_string(),
                    &rule.target.to_string(),
                    &rule.key,
                    &rule.mode.as_str(),
                    &rule.sample_rate,
                    &rule.on_mirror_error.as_str(),
                    &set_json(&rule.set),
                    &rule.auto_partition,
                    &rule.guard.as_str(),
                    &rule.drop_columns,
                    &rule.drop_triggers,
                ],
            )
            .await?;
    }
    Ok(inserted)
}

/// The columns of `rules` a [`StoredRule`] is read from, in [`stored_rule`]'s order.
pub const RULE_COLUMNS: &str = "r.table_name, r.target, r.key, r.mode, r.sample_rate, \
    r.on_mirror_error, r.set_columns::text, r.version, r.updated_at::text, r.updated_by, \
    r.auto_partition, r.guard, r.drop_columns, r.drop_triggers, r.backfilled, r.backfilled_to";

/// A [`StoredRule`] from a row whose columns `at..` are [`RULE_COLUMNS`]; the error names
/// the table and what is wrong with the row.
pub fn stored_rule(row: &tokio_postgres::Row, at: usize) -> Result<StoredRule, (String, String)> {
    let table: String = row.get(at);
    let rule = rule_from_parts(RuleParts {
        table: &table,
        target: &row.get::<_, String>(at + 1),
        key: row.get(at + 2),
        mode: &row.get::<_, String>(at + 3),
        sample_rate: row.get(at + 4),
        on_mirror_error: &row.get::<_, String>(at + 5),
        set_json: &row.get::<_, String>(at + 6),
    })
    .map_err(|reason| (table.clone(), reason))?;
    let mut rule = rule;
    rule.auto_partition = row.get(at + 10);
    rule.drop_columns = row.get(at + 12);
    rule.drop_triggers = row.get(at + 13);
    rule.backfilled = row.get(at + 14);
    rule.backfilled_to = row.get(at + 15);
    rule.guard = row
        .get::<_, String>(at + 11)
        .parse()
        .map_err(|reason| (table.clone(), reason))?;
    Ok(StoredRule {
        rule,
        version: row.get(at + 7),
        updated_at: row.get(at + 8),
        updated_by: row.get(at + 9),
    })
}

/// Reads the whole store in one snapshot.
pub async fn load(client: &Client, store: &Store) -> Result<Snapshot, StoreError> {
    let sql = format!(
        "SELECT (SELECT coalesce(max(id), 0) FROM {})::int8, {RULE_COLUMNS} \
         FROM (SELECT 1) AS one LEFT JOIN {} AS r ON true \
         ORDER BY r.table_name",
        store.history(),
        store.rules()
    );
    let rows = client.query(&sql, &[]).await?;
    let mut snapshot = Snapshot::default();
    for row in &rows {
        snapshot.version = row.get::<_, i64>(0).max(0) as u64;
        if row.get::<_, Option<String>>(1).is_none() {
            continue; // no rules at all: the LEFT JOIN's empty row
        }
        let stored =
            stored_rule(row, 1).map_err(|(table, reason)| StoreError::BadRow { table, reason })?;
        snapshot.rules.push(stored);
    }
    Ok(snapshot)
}

/// Why a command-line tool could not open the store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Reaching the database failed.
    #[error(transparent)]
    Catalog(#[from] crate::control::catalog::CatalogError),
    /// The store could not be prepared or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A side connection with the store ready: what `tandem backfill`, `parity`,
/// `partitions` and `purge` start from. The config's rules seed the store as when the
/// proxy starts (stored rows win).
pub struct Opened {
    /// The connection (the upstream URL's user and database).
    pub client: Client,
    /// The store's names.
    pub names: Store,
    /// The rules now.
    pub snapshot: Snapshot,
}

/// Connects, migrates and seeds the store, and reads it.
pub async fn open(config: &crate::config::Config) -> Result<Opened, OpenError> {
    let client = crate::control::catalog::connect(config).await?;
    let names = Store::new(&config.store.schema);
    migrate(&client, &names).await?;
    bootstrap(&client, &names, &config.rules).await?;
    let snapshot = load(&client, &names).await?;
    Ok(Opened {
        client,
        names,
        snapshot,
    })
}

/// The text columns of a rule, as stored or typed by an operator.
pub struct RuleParts<'a> {
    /// Legacy table, SQL spelling.
    pub table: &'a str,
    /// Target table, SQL spelling.
    pub target: &'a str,
    /// Key columns, catalog spelling (empty: primary key).
    pub key: Vec<String>,
    /// Mode spelling.
    pub mode: &'a str,
    /// Share of reads sampled.
    pub sample_rate: f64,
    /// `fail` or `record`.
    pub on_mirror_error: &'a str,
    /// `[[column, expression], ...]` as JSON.
    pub set_json: &'a str,
}

/// Builds a rule through the same validation as the config file.
pub fn rule_from_parts(parts: RuleParts<'_>) -> Result<Rule, String> {
    let set: serde_json::Value =
        serde_json::from_str(parts.set_json).map_err(|e| format!("set_columns: {e}"))?;
    let value = serde_json::json!({
        "table": parts.table,
        "target": parts.target,
        "key": parts.key,
        "mode": parts.mode,
        "sample_rate": parts.sample_rate,
        "on_mirror_error": parts.on_mirror_error,
        "set": set,
    });
    serde_json::from_value::<Rule>(value).map_err(|e| e.to_string())
}

/// `set` as stored: `[[column, expression], ...]`.
pub fn set_json(set: &[(String, String)]) -> String {
    serde_json::to_string(set).unwrap_or_else(|_| "[]".into())
}

/// A SQL string literal (standard_conforming_strings on, as since PostgreSQL 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The rule for `table` in a snapshot.
pub fn find<'a>(snapshot: &'a Snapshot, table: &TableName) -> Option<&'a StoredRule> {
    snapshot.rules.iter().find(|r| &r.rule.table == table)
}

/// The store's version: the newest change's id.
pub async fn version(client: &Client, store: &Store) -> Result<u64, StoreError> {
    let sql = format!("SELECT coalesce(max(id), 0)::int8 FROM {}", store.history());
    let row = client.query_one(&sql, &[]).await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}
