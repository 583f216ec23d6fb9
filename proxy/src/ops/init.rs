//! `tandem init`: create the partitioned target from the legacy table's definition, and its
//! rule (mode `off`).
//!
//! Step one of every migration is a target with the legacy table's columns, defaults, NOT
//! NULLs and CHECKs, its indexes, and a partition layout. PostgreSQL requires every unique
//! index of a partitioned table to contain the partition key, so the primary key and unique
//! indexes get the partition key columns appended (which is also the rule's key: the mirror
//! upserts on it). Serial and identity columns keep drawing from the legacy table's sequence
//! (`DEFAULT nextval(...)`), so ids stay unique across both tables whichever one generates
//! them. Layouts:
//!
//! - `list(col)`: one partition per value present in the legacy table, plus DEFAULT
//!   (unless `--no-default`);
//! - `hash(col) N`: N native hash partitions;
//! - `range(col) monthly [months-ahead N]`: one partition per month from the legacy table's
//!   first month to N months ahead (default 3), plus DEFAULT;
//! - `list(col) range(col2) monthly [months-ahead N]`: list partitions sub-partitioned by
//!   month.
//!
//! `list-mod(col) N` (LIST on `mod(hashtext(col), N)`) is refused: PostgreSQL allows no
//! expression or generated column in the partition key of a table with a primary key, so the
//! bucket would have to be a column the mirror cannot fill; `hash(col) N` gives the same
//! spread natively.

use std::fmt::Write as _;

use tandem_rules::{quote_ident, Mode, Rule, TableName};
use tokio_postgres::Client;

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::store::{self, Store};

/// A partition layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// LIST on a column.
    List {
        /// Partition column.
        column: String,
    },
    /// Native HASH into `n` partitions.
    Hash {
        /// Partition column.
        column: String,
        /// Partitions.
        n: u32,
    },
    /// RANGE by month on a timestamp/date column.
    Monthly {
        /// Partition column.
        column: String,
        /// Months created ahead of the current one.
        ahead: u32,
    },
    /// LIST on one column, each list partition RANGE by month on another.
    ListMonthly {
        /// LIST column.
        list: String,
        /// RANGE column.
        range: String,
        /// Months created ahead of the current one.
        ahead: u32,
    },
}

impl Layout {
    /// Parses `list(tenant)`, `hash(id) 8`, `range(created_at) monthly months-ahead 6`,
    /// `list(tenant) range(created_at) monthly`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let words: Vec<String> = spec
            .split_whitespace()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let call = |w: &str, name: &str| -> Option<String> {
            w.strip_prefix(name)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
                .filter(|c| !c.is_empty() && !c.contains(['(', ')', ',']))
                .map(str::to_string)
        };
        let ahead = |rest: &[String]| -> Result<u32, String> {
            match rest {
                [] => Ok(3),
                [k, n] if k == "months-ahead" => n
                    .parse()
                    .map_err(|_| format!("months-ahead takes a number of months, not \"{n}\"")),
                other => Err(format!(
                    "unexpected \"{}\" after monthly; expected nothing or months-ahead <N>",
                    other.join(" ")
                )),
            }
        };
        let usage = "expected list(<col>), hash(<col>) <N>, range(<col>) monthly [months-ahead N] \
                     or list(<col>) range(<col>) monthly [months-ahead N]";
        let first = words.first().ok_or(usage)?;
        if first.starts_with("list-mod(") {
            return Err("list-mod is refused: PostgreSQL allows no expression or generated column in the partition key of a table with a primary key, so the mirror could not fill the bucket; use hash(<col>) <N>".into());
        }
        if let Some(column) = call(first, "hash") {
            let n = match &words[1..] {
                [n] => n.parse().map_err(|_| {
                    format!("hash(<col>) takes a partition count, not \"{n}\", e.g. hash(id) 8")
                })?,
                _ => return Err("hash(<col>) needs a partition count, e.g. hash(id) 8".into()),
            };
            if !(2..=1024).contains(&n) {
                return Err("hash partitions must number 2 to 1024".into());
            }
            return Ok(Layout::Hash { column, n });
        }
        if let Some(column) = call(first, "range") {
            if words.get(1).map(String::as_str) != Some("monthly") {
                return Err("range(<col>) needs `monthly`".into());
            }
            return Ok(Layout::Monthly {
                column,
                ahead: ahead(&words[2..])?,
            });
        }
        if let Some(list) = call(first, "list") {
            return match words.get(1) {
                None => Ok(Layout::List { column: list }),
                Some(w) => {
                    let range = call(w, "range").ok_or(usage)?;
                    if words.get(2).map(String::as_str) != Some("monthly") {
                        return Err("range(<col>) needs `monthly`".into());
                    }
                    Ok(Layout::ListMonthly {
                        list,
                        range,
                        ahead: ahead(&words[3..])?,
                    })
                }
            };
        }
        Err(usage.into())
    }

    /// The partition key columns.
    pub fn columns(&self) -> Vec<String> {
        match self {
            Layout::List { column }
            | Layout::Hash { column, .. }
            | Layout::Monthly { column, .. } => {
                vec![column.clone()]
            }
            Layout::ListMonthly { list, range, .. } => vec![list.clone(), range.clone()],
        }
    }
}

/// What `tandem init` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Legacy table.
    pub table: TableName,
    /// Target (default `<table>_v2`).
    pub target: Option<TableName>,
    /// Partition layout.
    pub layout: Layout,
    /// No DEFAULT partition.
    pub no_default: bool,
    /// Print the DDL only.
    pub dry_run: bool,
}

/// Why init failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Reaching or reading the database failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The store could not be prepared.
    #[error(transparent)]
    Store(#[from] crate::control::store::StoreError),
    /// A query failed.
    #[error("init failed: {}", catalog::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// Something about the tables or the layout is wrong.
    #[error("{0}")]
    Refused(String),
}

/// What init did (or would do).
#[derive(Debug, Clone)]
pub struct Report {
    /// The target created.
    pub target: TableName,
    /// Every statement, in order.
    pub ddl: Vec<String>,
    /// Index parity: legacy indexes and the target index that covers each (or why none).
    pub index_parity: Vec<String>,
    /// The rule's key.
    pub key: Vec<String>,
    /// Whether anything was executed.
    pub applied: bool,
    /// The rule's guard policy and state once added (`mirror: idle`: its triggers wait, as
    /// no-ops, for `dual_write`); `None` in a dry run.
    pub guard: Option<String>,
    /// Foreign keys referencing the legacy table, each with the statements that re-point
    /// it to the target (`target_only` is refused until they are).
    pub foreign_keys: Vec<String>,
}

struct LegacyColumn {
    name: String,
    ty: String,
    not_null: bool,
    default: Option<String>,
    generated: Option<String>,
    identity_sequence: Option<String>,
}

/// Creates the target (unless dry-run) and adds the rule in mode `off`.
pub async fn run(config: &Config, options: &Options) -> Result<Report, InitError> {
    let mut client = catalog::connect(config).await?;
    let legacy = &options.table;
    let target = options
        .target
        .clone()
        .unwrap_or_else(|| legacy.with_suffix("_v2"));
    let oid: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[&legacy.to_string()])
        .await?
        .get(0);
    let oid =
        oid.ok_or_else(|| InitError::Refused(format!("legacy table {legacy} does not exist")))?;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&target.to_string()])
        .await?
        .get(0);
    if exists {
        return Err(InitError::Refused(format!(
            "target {target} already exists; drop it or choose another --target"
        )));
    }
    let columns = legacy_columns(&client, oid, legacy).await?;
    for c in options.layout.columns() {
        let Some(col) = columns.iter().find(|l| l.name == c) else {
            return Err(InitError::Refused(format!(
                "partition column {c} is not a column of {legacy}"
            )));
        };
        if col.generated.is_some() {
            return Err(InitError::Refused(format!(
                "partition column {c} is generated; PostgreSQL does not allow it in a partition key"
            )));
        }
    }
    let pk = primary_key(&client, oid).await?;
    if pk.is_empty() {
        return Err(InitError::Refused(format!(
            "{legacy} has no primary key; the mirror needs a key (add one, or create the target by hand)"
        )));
    }
    let mut key = pk.clone();
    for c in options.layout.columns() {
        if !key.contains(&c) {
            key.push(c);
        }
    }
    let mut ddl = vec![create_table(
        &target,
        &columns,
        &key,
        &checks(&client, oid).await?,
        &options.layout,
    )];
    let (indexes, parity) = indexes(&client, oid, &target, &key, &options.layout).await?;
    ddl.extend(indexes);
    ddl.extend(partitions(&client, legacy, &target, options).await?);
    ddl.extend(access_rules(&client, oid, &target).await?);
    // Each legacy trigger copied onto the target, and both made to fire only on the table
    // applications write (see tandem_rules::triggers).
    let triggers = crate::control::triggers::pairs(&client, legacy, &target, &[]).await?;
    ddl.extend(
        crate::control::triggers::fix_statements(&triggers, legacy, &target)
            .map_err(|e| InitError::Refused(e.to_string()))?
            .into_iter()
            .map(|s| format!("{s};")),
    );
    // Statistics from the start: autovacuum never analyses a partitioned parent, and a
    // planner without them misjudges the union read's anti join.
    ddl.push(format!("ANALYZE {target};"));
    let applied = !options.dry_run;
    let mut guard = None;
    let names = Store::new(&config.store.schema);
    if applied {
        // The support objects first: the copied triggers' condition calls one of them.
        store::migrate(&client, &names).await?;
        let tx = client.transaction().await?;
        // Conditioning the legacy table's triggers locks it: wait no longer than the guard.
        tx.batch_execute(
            "SELECT set_config('lock_timeout', \
               coalesce(nullif(current_setting('tandem.guard_lock_timeout', true), ''), '2s'), true)",
        )
        .await?;
        for statement in &ddl {
            tx.batch_execute(statement).await?;
        }
        tx.commit().await?;
        let mut rule = Rule::new(legacy.clone(), Mode::Off, key.clone());
        rule.target = target.clone();
        store::bootstrap(&client, &names, &[rule]).await?;
        let snapshot = store::load(&client, &names).await?;
        let policy = store::find(&snapshot, legacy).map(|r| r.rule.guard.as_str());
        let state = crate::control::guard::states(&client, &names)
            .await?
            .remove(&legacy.to_string())
            .map(|g| g.describe());
        guard = Some(format!(
            "{}: {}",
            policy.unwrap_or("?"),
            state.as_deref().unwrap_or("missing")
        ));
    }
    // Foreign keys that reference the legacy table: each must be re-pointed before
    // target_only (the target now exists, so the plan knows its unique keys).
    let foreign_keys = crate::control::foreign_keys::problems(&client, legacy, &target)
        .await?
        .into_iter()
        .filter(|p| p.kind == "references_legacy")
        .map(|p| {
            if applied {
                p.describe()
            } else {
                format!(
                    "foreign key {} ({}) references the legacy table; the plan to re-point it is printed once the target exists",
                    p.constraint, p.definition
                )
            }
        })
        .collect();
    Ok(Report {
        foreign_keys,
        target,
        ddl,
        index_parity: parity,
        key,
        applied,
        guard,
    })
}

async fn legacy_columns(
    client: &Client,
    oid: u32,
    legacy: &TableName,
) -> Result<Vec<LegacyColumn>, InitError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
               CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
               CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
               CASE WHEN a.attidentity <> '' THEN pg_get_serial_sequence($2, a.attname) END \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid, &legacy.to_string()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| LegacyColumn {
            name: r.get(0),
            ty: r.get(1),
            not_null: r.get(2),
            default: r.get(3),
            generated: r.get(4),
            identity_sequence: r.get(5),
        })
        .collect())
}

/// The legacy table's access rules, as statements giving the target the same: owner, row
/// level security (enabled, forced), each policy, table and column privileges. Without them
/// `union_read` and later modes are refused (see `control::access`): the target would show
/// every tenant's rows to a role that sees one tenant's.
async fn access_rules(
    client: &Client,
    oid: u32,
    target: &TableName,
) -> Result<Vec<String>, InitError> {
    let rows = client
        .query(
            "SELECT s FROM (
               SELECT 1 AS o, format('ALTER TABLE %s OWNER TO %I;', $2::text, pg_get_userbyid(c.relowner)) AS s
                 FROM pg_class c WHERE c.oid = $1
               UNION ALL
               SELECT 2, format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY;', $2::text)
                 FROM pg_class c WHERE c.oid = $1 AND c.relrowsecurity
               UNION ALL
               SELECT 3, format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', $2::text)
                 FROM pg_class c WHERE c.oid = $1 AND c.relforcerowsecurity
               UNION ALL
               SELECT 4, format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s;', p.polname, $2::text,
                        CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                        CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                      WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                        (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', ')
                           FROM unnest(p.polroles) AS r),
                        ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')',
                        ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')')
                 FROM pg_policy p WHERE p.polrelid = $1
               UNION ALL
               SELECT 5, format('GRANT %s ON %s TO %s%s;', a.privilege_type, $2::text,
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                 FROM pg_class c, aclexplode(c.relacl) AS a
                WHERE c.oid = $1 AND c.relacl IS NOT NULL AND a.grantee <> c.relowner
               UNION ALL
               SELECT 6, format('GRANT %s (%I) ON %s TO %s%s;', a.privilege_type, att.attname, $2::text,
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                 FROM pg_attribute att, aclexplode(att.attacl) AS a
                WHERE att.attrelid = $1 AND att.attnum > 0 AND NOT att.attisdropped
                  AND att.attacl IS NOT NULL
             ) AS x ORDER BY o, s",
            &[&oid, &target.to_string()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn primary_key(client: &Client, oid: u32) -> Result<Vec<String>, InitError> {
    Ok(client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn checks(client: &Client, oid: u32) -> Result<Vec<String>, InitError> {
    Ok(client
        .query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1 AND contype = 'c' ORDER BY conname",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

fn list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn create_table(
    target: &TableName,
    columns: &[LegacyColumn],
    key: &[String],
    checks: &[String],
    layout: &Layout,
) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", quote_ident(&c.name), c.ty);
            if let Some(g) = &c.generated {
                let _ = write!(s, " GENERATED ALWAYS AS ({g}) STORED");
            } else if let Some(seq) = &c.identity_sequence {
                // Keep drawing ids from the legacy identity's sequence.
                let _ = write!(s, " DEFAULT nextval({})", store::quote_literal(seq));
            } else if let Some(d) = &c.default {
                let _ = write!(s, " DEFAULT {d}");
            }
            if c.not_null || key.contains(&c.name) {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    parts.extend(checks.iter().cloned());
    parts.push(format!("PRIMARY KEY ({})", list(key)));
    let by = match layout {
        Layout::List { column } => format!("LIST ({})", quote_ident(column)),
        Layout::Hash { column, .. } => format!("HASH ({})", quote_ident(column)),
        Layout::Monthly { column, .. } => format!("RANGE ({})", quote_ident(column)),
        Layout::ListMonthly { list, .. } => format!("LIST ({})", quote_ident(list)),
    };
    format!(
        "CREATE TABLE {target} (\n    {}\n) PARTITION BY {by};",
        parts.join(",\n    ")
    )
}

/// The legacy's other indexes on the target (unique ones extended with the partition key),
/// and the parity listing.
async fn indexes(
    client: &Client,
    oid: u32,
    target: &TableName,
    key: &[String],
    layout: &Layout,
) -> Result<(Vec<String>, Vec<String>), InitError> {
    let rows = client
        .query(
            "SELECT c.relname::text, i.indisunique, i.indisprimary, \
               (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) \
                  WITH ORDINALITY AS k(attnum, ord) JOIN pg_attribute a \
                  ON a.attrelid = i.indrelid AND a.attnum = k.attnum), \
               am.amname::text, i.indexprs IS NOT NULL OR i.indpred IS NOT NULL, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
             WHERE i.indrelid = $1 ORDER BY c.relname",
            &[&oid],
        )
        .await?;
    let mut ddl = Vec::new();
    let mut parity = Vec::new();
    let partition_cols = layout.columns();
    for r in &rows {
        let name: String = r.get(0);
        let unique: bool = r.get(1);
        let primary: bool = r.get(2);
        let cols: Vec<String> = r.get::<_, Option<Vec<String>>>(3).unwrap_or_default();
        let method: String = r.get(4);
        let complex: bool = r.get(5);
        let def: String = r.get(6);
        if primary {
            parity.push(format!(
                "{name} (primary key on {}) -> target primary key ({})",
                cols.join(", "),
                key.join(", ")
            ));
            continue;
        }
        if complex {
            parity.push(format!(
                "{name} is an expression or partial index: not created ({def}); create it by hand"
            ));
            continue;
        }
        let mut target_cols = cols.clone();
        let mut note = String::new();
        if unique {
            for c in &partition_cols {
                if !target_cols.contains(c) {
                    target_cols.push(c.clone());
                    note = format!(
                        " (partition key {} appended: uniqueness is per partition key)",
                        partition_cols.join(", ")
                    );
                }
            }
        }
        ddl.push(format!(
            "CREATE {}INDEX ON {target} USING {method} ({});",
            if unique { "UNIQUE " } else { "" },
            list(&target_cols)
        ));
        parity.push(format!(
            "{name} ({}{}) -> target {}index on ({}){note}",
            method,
            if unique { ", unique" } else { "" },
            if unique { "unique " } else { "" },
            target_cols.join(", ")
        ));
    }
    Ok((ddl, parity))
}

/// The values of a LIST column present in the legacy table (at most 1000).
async fn list_values(
    client: &Client,
    legacy: &TableName,
    column: String,
) -> Result<Vec<String>, InitError> {
    let sql = format!(
        "SELECT DISTINCT {c}::text FROM {legacy} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT 1001",
        c = quote_ident(&column)
    );
    let rows = client.query(&sql, &[]).await?;
    if rows.len() > 1000 {
        return Err(InitError::Refused(format!(
            "{column} has more than 1000 distinct values: a LIST layout would need as many partitions; use hash({column}) N"
        )));
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Months from the legacy table's first to `ahead` months after the current one:
/// (name suffix `YYYY_MM`, first day, first day of the next month).
async fn month_bounds(
    client: &Client,
    legacy: &TableName,
    column: String,
    ahead: u32,
) -> Result<Vec<(String, String, String)>, InitError> {
    let sql = format!(
        "SELECT to_char(m, 'YYYY_MM'), m::date::text, (m + interval '1 month')::date::text \
         FROM generate_series(date_trunc('month', coalesce((SELECT min({c}) FROM {legacy}), now())::timestamp), \
                              date_trunc('month', now()::timestamp) + interval '{ahead} months', interval '1 month') AS m",
        c = quote_ident(&column)
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A partition name: the target's name plus a suffix made of safe characters.
pub(crate) fn partition_name(target: &TableName, suffix: &str) -> TableName {
    target.with_suffix(&format!("_{}", tandem_rules::name_part(suffix)))
}

async fn partitions(
    client: &Client,
    legacy: &TableName,
    target: &TableName,
    options: &Options,
) -> Result<Vec<String>, InitError> {
    let mut ddl = Vec::new();
    let lit = |v: &str| store::quote_literal(v);
    let values = |column: &str| list_values(client, legacy, column.to_string());
    let months = |column: &str, ahead: u32| month_bounds(client, legacy, column.to_string(), ahead);
    match &options.layout {
        Layout::List { column } => {
            for v in values(column).await? {
                ddl.push(format!(
                    "CREATE TABLE {} PARTITION OF {target} FOR VALUES IN ({});",
                    partition_name(target, &v),
                    lit(&v)
                ));
            }
        }
        Layout::Hash { n, .. } => {
            for i in 0..*n {
                ddl.push(format!(
                    "CREATE TABLE {} PARTITION OF {target} FOR VALUES WITH (MODULUS {n}, REMAINDER {i});",
                    partition_name(target, &format!("p{i}"))
                ));
            }
        }
        Layout::Monthly { column, ahead } => {
            for (name, from, to) in months(column, *ahead).await? {
                ddl.push(format!(
                    "CREATE TABLE {} PARTITION OF {target} FOR VALUES FROM ({}) TO ({});",
                    partition_name(target, &name),
                    lit(&from),
                    lit(&to)
                ));
            }
        }
        Layout::ListMonthly { list, range, ahead } => {
            let months = months(range, *ahead).await?;
            for v in values(list).await? {
                let parent = partition_name(target, &v);
                ddl.push(format!(
                    "CREATE TABLE {parent} PARTITION OF {target} FOR VALUES IN ({}) PARTITION BY RANGE ({});",
                    lit(&v),
                    quote_ident(range)
                ));
                for (name, from, to) in &months {
                    ddl.push(format!(
                        "CREATE TABLE {} PARTITION OF {parent} FOR VALUES FROM ({}) TO ({});",
                        partition_name(&parent, name),
                        lit(from),
                        lit(to)
                    ));
                }
                if !options.no_default {
                    ddl.push(format!(
                        "CREATE TABLE {} PARTITION OF {parent} DEFAULT;",
                        partition_name(&parent, "default")
                    ));
                }
            }
        }
    }
    if !options.no_default && !matches!(options.layout, Layout::Hash { .. }) {
        ddl.push(format!(
            "CREATE TABLE {} PARTITION OF {target} DEFAULT;",
            partition_name(target, "default")
        ));
    }
    Ok(ddl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse() {
        assert_eq!(
            Layout::parse("list(tenant)").unwrap(),
            Layout::List {
                column: "tenant".into()
            }
        );
        assert_eq!(
            Layout::parse("hash(id) 8").unwrap(),
            Layout::Hash {
                column: "id".into(),
                n: 8
            }
        );
        assert_eq!(
            Layout::parse("range(created_at) monthly months-ahead 6").unwrap(),
            Layout::Monthly {
                column: "created_at".into(),
                ahead: 6
            }
        );
        assert_eq!(
            Layout::parse("LIST(tenant) RANGE(created_at) MONTHLY").unwrap(),
            Layout::ListMonthly {
                list: "tenant".into(),
                range: "created_at".into(),
                ahead: 3
            }
        );
        for bad in [
            "",
            "hash(id)",
            "hash(id) 1",
            "range(x)",
            "list()",
            "tree(x)",
            "list-mod(id) 100",
            "range(x) monthly months-ahead x",
        ] {
            assert!(Layout::parse(bad).is_err(), "{bad}");
        }
        assert!(Layout::parse("list-mod(id) 100")
            .unwrap_err()
            .contains("hash"));
    }
}
