//! One legacy/target table pair of a given target shape ([`Kind`]): names, DDL, the rule
//! it calls for, and snapshots of its rows for assertions.

use tokio_postgres::Client;

use super::{db_text, diff_sql, rows_text, RuleToml, LEGACY_COLUMNS};
use crate::unique;

/// What the target of a twin pair looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<legacy>_v2`, `PARTITION BY LIST (tenant)`: acme, globex and a DEFAULT partition;
    /// PK (id, tenant); rule key `["id", "tenant"]`.
    List,
    /// As `List` without the DEFAULT partition: a tenant other than acme/globex has nowhere
    /// to go in the target (23514).
    ListNoDefault,
    /// `<legacy>_v2`, `PARTITION BY HASH (id)`, 4 partitions; PK (id); rule key left empty
    /// (so the legacy primary key is used).
    Hash,
    /// `<legacy>_shadow` with `_sync_status` (set to `'synced'` by the rule) and
    /// `_migrated_at DEFAULT now()`; PK (id); rule key `["id"]`.
    Shadow,
}

/// One legacy table, its target, and a plain `src` table to join against.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Legacy table (in `public`).
    pub legacy: String,
    /// Target table (in `public`).
    pub target: String,
    /// A table without a rule: `(tenant text PRIMARY KEY, amount, note)` with three rows
    /// (acme, globex, umbrella).
    pub src: String,
}

impl Pair {
    /// Fresh names for `kind`.
    pub fn new(kind: Kind) -> Self {
        let legacy = unique("dw");
        let target = match kind {
            Kind::Shadow => format!("{legacy}_shadow"),
            _ => format!("{legacy}_v2"),
        };
        let src = format!("{legacy}_src");
        Self {
            legacy,
            target,
            src,
        }
    }

    /// `template` with `{legacy}`, `{target}` and `{src}` replaced by this pair's names,
    /// `{LEGACY}` by the legacy name in upper case (which the server folds back) and
    /// `{legacy_unicode}` by the legacy name as a `U&"\0064..."` identifier.
    pub fn sql(&self, template: &str) -> String {
        let unicode: String = self
            .legacy
            .chars()
            .map(|c| format!("\\{:04X}", c as u32))
            .collect();
        template
            .replace("{legacy_unicode}", &format!("U&\"{unicode}\""))
            .replace("{legacy}", &self.legacy)
            .replace("{LEGACY}", &self.legacy.to_uppercase())
            .replace("{target}", &self.target)
            .replace("{src}", &self.src)
    }

    /// The DDL creating the pair.
    pub fn ddl(&self, kind: Kind) -> String {
        let cols = "id bigint NOT NULL, tenant text NOT NULL, amount numeric(10,2) NOT NULL, \
                    note text, score float8 NOT NULL, token uuid NOT NULL, \
                    created_at timestamptz NOT NULL";
        let target = match kind {
            Kind::List | Kind::ListNoDefault => {
                let mut s = format!(
                    "CREATE TABLE {{target}} ({cols}, PRIMARY KEY (id, tenant)) PARTITION BY LIST (tenant);
                     CREATE TABLE {{target}}_acme PARTITION OF {{target}} FOR VALUES IN ('acme');
                     CREATE TABLE {{target}}_globex PARTITION OF {{target}} FOR VALUES IN ('globex');"
                );
                if kind == Kind::List {
                    s.push_str("CREATE TABLE {target}_other PARTITION OF {target} DEFAULT;");
                }
                s
            }
            Kind::Hash => {
                let mut s = format!(
                    "CREATE TABLE {{target}} ({cols}, PRIMARY KEY (id)) PARTITION BY HASH (id);"
                );
                for r in 0..4 {
                    s.push_str(&format!(
                        "CREATE TABLE {{target}}_h{r} PARTITION OF {{target}} \
                         FOR VALUES WITH (MODULUS 4, REMAINDER {r});"
                    ));
                }
                s
            }
            Kind::Shadow => format!(
                "CREATE TABLE {{target}} ({cols}, _sync_status text NOT NULL DEFAULT 'pending', \
                 _migrated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id));"
            ),
        };
        self.sql(&format!(
            "CREATE TABLE {{legacy}} (
                 id bigserial PRIMARY KEY,
                 tenant text NOT NULL DEFAULT 'acme',
                 amount numeric(10,2) NOT NULL DEFAULT 0,
                 note text,
                 score float8 NOT NULL DEFAULT random(),
                 token uuid NOT NULL DEFAULT gen_random_uuid(),
                 created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {{src}} (tenant text PRIMARY KEY, amount numeric(10,2), note text);
             INSERT INTO {{src}} VALUES ('acme', 11, 'src acme'), ('globex', 12, 'src globex'),
                 ('umbrella', 13, 'src umbrella');
             {target}"
        ))
    }

    /// The rule `kind` calls for on this pair, with the `fail` policy.
    pub fn rule(&self, kind: Kind) -> RuleToml {
        let rule = RuleToml::dual_write(&self.legacy);
        match kind {
            Kind::List | Kind::ListNoDefault => rule.key(&["id", "tenant"]),
            Kind::Hash => rule,
            Kind::Shadow => rule
                .target(&format!("public.{}", self.target))
                .key(&["id"])
                .set("_sync_status", "'synced'"),
        }
    }

    /// Creates the pair's tables, directly.
    pub async fn create(&self, kind: Kind, client: &Client) {
        client
            .batch_execute(&self.ddl(kind))
            .await
            .unwrap_or_else(|e| panic!("cannot create {}: {}", self.legacy, db_text(&e)));
    }

    /// Gives the target the legacy table's column defaults, the id drawn from the legacy
    /// sequence, as `tandem init` does: without them `cutover` is refused (an insert that
    /// leaves a column out would fail on the target).
    pub async fn copy_defaults(&self, client: &Client) {
        client
            .batch_execute(&self.sql(
                "ALTER TABLE {target} ALTER COLUMN id SET DEFAULT nextval('{legacy}_id_seq'), \
                 ALTER COLUMN tenant SET DEFAULT 'acme', ALTER COLUMN amount SET DEFAULT 0, \
                 ALTER COLUMN score SET DEFAULT random(), \
                 ALTER COLUMN token SET DEFAULT gen_random_uuid(), \
                 ALTER COLUMN created_at SET DEFAULT now()",
            ))
            .await
            .unwrap_or_else(|e| panic!("cannot copy defaults to {}: {}", self.target, db_text(&e)));
    }

    /// Rows that differ between legacy and target on the mirrored columns, plus target rows
    /// whose target-only columns were not filled as the rule says. Empty when in parity.
    pub async fn drift(&self, kind: Kind, check: &Client) -> Vec<String> {
        rows_text(check, &self.drift_sql(kind)).await
    }

    /// The query [`Pair::drift`] runs (one text column, a row per difference), to run it
    /// elsewhere: inside a session's open transaction, where uncommitted rows count.
    pub fn drift_sql(&self, kind: Kind) -> String {
        let mut sql = diff_sql(&self.legacy, &self.target, LEGACY_COLUMNS);
        if kind == Kind::Shadow {
            sql.push_str(&self.sql(
                " UNION ALL SELECT 'target-only columns not filled: ' || t::text FROM {target} t \
                 WHERE _sync_status IS DISTINCT FROM 'synced' OR _migrated_at IS NULL",
            ));
        }
        sql
    }

    /// Every legacy row as text, in id order: a snapshot to prove a statement changed nothing.
    pub async fn legacy_rows(&self, check: &Client) -> Vec<String> {
        rows_text(
            check,
            &self.sql("SELECT l::text FROM {legacy} l ORDER BY id"),
        )
        .await
    }

    /// Every target row as text, in id order.
    pub async fn target_rows(&self, check: &Client) -> Vec<String> {
        rows_text(
            check,
            &self.sql("SELECT t::text FROM {target} t ORDER BY id"),
        )
        .await
    }

    /// Number of legacy and target rows.
    pub async fn counts(&self, check: &Client) -> (i64, i64) {
        let row = check
            .query_one(
                &self
                    .sql("SELECT (SELECT count(*) FROM {legacy}), (SELECT count(*) FROM {target})"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("count rows: {}", db_text(&e)));
        (row.get(0), row.get(1))
    }

    /// Placeholder spellings of this pair's names, longest first so that `x_v2` is not
    /// rewritten as `{legacy}_v2`.
    pub(super) fn names(&self) -> Vec<(String, &'static str)> {
        let mut names = vec![
            (self.target.clone(), "{target}"),
            (self.src.clone(), "{src}"),
            (self.legacy.clone(), "{legacy}"),
        ];
        names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        names
    }

    pub(super) async fn oids(&self, check: &Client) -> Vec<(u32, &'static str)> {
        let mut out = Vec::new();
        for (name, placeholder) in self.names() {
            let row = check
                .query_one(
                    "SELECT oid, reltype FROM pg_class WHERE oid = $1::text::regclass",
                    &[&name],
                )
                .await
                .unwrap_or_else(|e| panic!("oid of {name}: {}", db_text(&e)));
            out.push((row.get(0), placeholder));
            let row_type: &'static str = match placeholder {
                "{legacy}" => "{legacy row type}",
                "{target}" => "{target row type}",
                _ => "{src row type}",
            };
            out.push((row.get(1), row_type));
        }
        out
    }
}
