//! `COPY` and ruled tables.
//!
//! `COPY orders TO STDOUT` and `COPY (SELECT …) TO` only read: untouched. `COPY orders FROM
//! STDIN` writes rows that pass through the proxy, which can mirror them, so the planner
//! describes the copy ([`CopyIn`]) instead of rewriting SQL. `COPY orders FROM 'file'` or
//! `FROM PROGRAM` loads rows the proxy never sees: refused.

use sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};

use crate::ident::normalize;
use crate::plan::{CopyFormat, CopyIn, Outcome, PlainFirst};
use crate::record::literal;
use crate::refusal::require_dual_write;
use crate::refusal::Refusal;
use crate::reverse::reversed;
use crate::rule::{MirrorErrorPolicy, Mode, ResolvedRule};
use crate::sqlgen::{insert_cte, upsert_cte, WRITE_CTE};
use crate::writes::Ctx;

/// Plan a COPY statement.
pub(crate) fn plan(stmt: &Statement, sql: &str, ctx: Ctx<'_>) -> Result<Outcome, Refusal> {
    let Statement::Copy {
        source: CopySource::Table {
            table_name,
            columns,
        },
        to: false,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Ok(Outcome::Untouched);
    };
    let Some(rule) = ctx.active(table_name) else {
        return Ok(Outcome::Untouched);
    };
    require_dual_write(rule)?;
    let table = rule.rule.table.clone();
    if !matches!(target, CopyTarget::Stdin) {
        return Err(Refusal::CopyFromServer { table });
    }
    let columns = if columns.is_empty() {
        rule.shape.legacy_columns.clone()
    } else {
        columns.iter().map(normalize).collect()
    };
    Ok(Outcome::CopyIn(CopyIn {
        table,
        target: rule.rule.target.clone(),
        columns,
        format: format(options, legacy_options),
        options: render_options(options, legacy_options),
        freeze: options
            .iter()
            .any(|o| matches!(o, CopyOption::Freeze(true))),
        sql: sql.to_string(),
        policy: rule.rule.on_mirror_error,
        plain_first: plain_first(rule),
    }))
}

/// The mirror CTE's two forms for the rule's INSERT rewrite (reversed in `cutover`, as
/// the planner reverses it); `None` under `record`, whose mirror is no CTE.
fn plain_first(rule: &ResolvedRule) -> Option<PlainFirst> {
    if rule.rule.on_mirror_error != MirrorErrorPolicy::Fail {
        return None;
    }
    let mirror = match rule.rule.mode {
        Mode::Cutover => reversed(rule),
        _ => rule.clone(),
    };
    let mirror_oid = mirror.shape.target_oid;
    (mirror_oid != 0).then(|| PlainFirst {
        upsert: upsert_cte(&mirror),
        insert: insert_cte(&mirror),
        mirror_oid,
    })
}

impl CopyIn {
    /// A statement raising the server's own error for a column list COPY would refuse, in
    /// COPY's order (each name in turn: missing 42703, generated 42P10, repeated 42701),
    /// to run before anything else: the server checks the list before CopyInResponse, and
    /// Tandem's staging table, made from the list, would fail otherwise.
    pub fn columns_check(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| literal(c)).collect();
        let relation = literal(&self.table.name);
        format!(
            "DO $tandem$ DECLARE a record; BEGIN \
             FOR a IN SELECT u.name, att.attnum, att.attgenerated, \
             EXISTS (SELECT FROM unnest(ARRAY[{names}]::text[]) WITH ORDINALITY p(name, ord) \
             WHERE p.name = u.name AND p.ord < u.ord) AS repeated \
             FROM unnest(ARRAY[{names}]::text[]) WITH ORDINALITY u(name, ord) \
             LEFT JOIN pg_attribute att ON att.attrelid = {table}::regclass \
             AND att.attname = u.name AND att.attnum > 0 AND NOT att.attisdropped \
             ORDER BY u.ord LOOP \
             IF a.attnum IS NULL THEN RAISE EXCEPTION USING ERRCODE = '42703', \
             MESSAGE = format('column \"%s\" of relation \"%s\" does not exist', a.name, {relation}); \
             END IF; \
             IF a.attgenerated <> '' THEN RAISE EXCEPTION USING ERRCODE = '42P10', \
             MESSAGE = format('column \"%s\" is a generated column', a.name), \
             DETAIL = 'Generated columns cannot be used in COPY.'; END IF; \
             IF a.repeated THEN RAISE EXCEPTION USING ERRCODE = '42701', \
             MESSAGE = format('column \"%s\" specified more than once', a.name); END IF; \
             END LOOP; END $tandem$",
            names = names.join(", "),
            table = literal(&self.table.to_string()),
        )
    }

    /// With `FREEZE`: a statement raising the server's own error when the legacy table
    /// does not meet FREEZE's condition, to run once the rows are in Tandem's staging table
    /// (where the server checks it too: after CopyInResponse). A partitioned table is
    /// refused (0A000); otherwise the table must have been created or truncated in the
    /// current transaction (55000), which its `pg_class` row shows: those are written by
    /// this transaction. (Postgres asks for the current subtransaction; a savepoint taken
    /// since is not told apart.)
    pub fn freeze_check(&self) -> Option<String> {
        if !self.freeze {
            return None;
        }
        let table = literal(&self.table.to_string());
        let raise = |code: &str, message: &str| {
            format!(
                "RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {}",
                literal(message)
            )
        };
        Some(format!(
            "DO $tandem$ DECLARE c pg_class%ROWTYPE; BEGIN \
             SELECT * INTO c FROM pg_class WHERE oid = {table}::regclass; \
             IF c.relkind = 'p' THEN {partitioned}; END IF; \
             IF (SELECT xmin FROM pg_class WHERE oid = c.oid) IS DISTINCT FROM \
             pg_current_xact_id()::xid THEN {old}; END IF; END $tandem$",
            partitioned = raise("0A000", "cannot perform COPY FREEZE on a partitioned table"),
            old = raise(
                "55000",
                "cannot perform COPY FREEZE because the table was not created or truncated \
                 in the current subtransaction"
            ),
        ))
    }
}

impl CopyIn {
    /// The statement that moves the staged rows into both tables, given `planned`, the
    /// rewrite of `INSERT INTO <legacy> (...) SELECT ... FROM <staging>`.
    ///
    /// A COPY only adds rows, so the mirror table has none of their keys unless it drifted:
    /// the rewrite's upsert (`ON CONFLICT ... DO UPDATE`, a speculative insertion per row,
    /// measured at a quarter of a 1M-row COPY's time) is then wasted. So the whole rewrite
    /// runs first with a plain insert in a `DO` block, and only a unique violation in the
    /// mirror table (or a table under it) runs it again as written, with the upsert; any
    /// other error, a unique violation of the legacy table included, is raised as it was.
    /// The first try is a subtransaction: rolled back whole, it leaves nothing behind in
    /// either table (sequences, as always, are not rolled back). Both forms are one
    /// statement each, so the guard checks each at its end as before.
    ///
    /// `planned` is returned unchanged when it is not the expected shape (the `record`
    /// policy, a statement the rewrite renders otherwise).
    pub fn mirror_statement(&self, planned: &str) -> String {
        let Some(forms) = &self.plain_first else {
            return planned.to_string();
        };
        let select = format!(" SELECT FROM {WRITE_CTE}");
        let Some((head, tail)) = planned.split_once(&forms.upsert) else {
            return planned.to_string();
        };
        let Some(check) = tail.strip_prefix(&select) else {
            return planned.to_string();
        };
        if check.contains(&forms.upsert) || !(check.is_empty() || check.starts_with(" WHERE ")) {
            return planned.to_string();
        }
        // PL/pgSQL needs a destination for the final SELECT; count(*) reads tandem_w once
        // more, and its WHERE (the resolution check) still runs before anything is written.
        let finish = format!(" SELECT count(*) INTO tandem_copy_rows FROM {WRITE_CTE}{check}");
        let first = format!("{head}{}{finish}", forms.insert);
        let again = format!("{head}{}{finish}", forms.upsert);
        let mut tag = "$tandem_copy$".to_string();
        while planned.contains(tag.trim_end_matches('$')) {
            tag.insert(tag.len() - 1, '_');
        }
        // `use_column`: a column named like a variable means the column, as in the
        // statement Tandem would otherwise send.
        format!(
            "DO {tag} #variable_conflict use_column\n\
             DECLARE tandem_copy_rows bigint; tandem_copy_schema text; tandem_copy_table text; \
             BEGIN {first}; \
             EXCEPTION WHEN unique_violation THEN \
             GET STACKED DIAGNOSTICS tandem_copy_schema = SCHEMA_NAME, \
             tandem_copy_table = TABLE_NAME; \
             IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace \
             WHERE s.nspname = tandem_copy_schema AND c.relname = tandem_copy_table \
             AND ({oid}::oid = c.oid OR {oid}::oid IN (SELECT a.relid::oid \
             FROM pg_catalog.pg_partition_ancestors(c.oid) AS a))) THEN RAISE; END IF; \
             {again}; END {tag}",
            oid = forms.mirror_oid,
        )
    }
}

fn format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> CopyFormat {
    for option in options {
        if let CopyOption::Format(name) = option {
            return match name.value.to_ascii_lowercase().as_str() {
                "csv" => CopyFormat::Csv,
                "binary" => CopyFormat::Binary,
                _ => CopyFormat::Text,
            };
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Csv(_) => return CopyFormat::Csv,
            CopyLegacyOption::Binary => return CopyFormat::Binary,
            _ => {}
        }
    }
    CopyFormat::Text
}

fn render_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> String {
    let mut parts = Vec::new();
    let list: Vec<String> = options
        .iter()
        .filter(|o| !matches!(o, CopyOption::Freeze(_)))
        .map(ToString::to_string)
        .collect();
    if !list.is_empty() {
        parts.push(format!("({})", list.join(", ")));
    }
    parts.extend(legacy.iter().map(ToString::to_string));
    parts.join(" ")
}

#[cfg(test)]
#[path = "tests/copy.rs"]
mod tests;
