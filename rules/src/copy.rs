//! `COPY` and ruled tables.
//!
//! `COPY orders TO STDOUT` and `COPY (SELECT …) TO` only read: untouched. `COPY orders FROM
//! STDIN` writes rows that pass through the proxy, which can mirror them, so the planner
//! describes the copy ([`CopyIn`]) instead of rewriting SQL. `COPY orders FROM 'file'` or
//! `FROM PROGRAM` loads rows the proxy never sees: refused.

use sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};

use crate::ident::normalize;
use crate::plan::{CopyFormat, CopyIn, Outcome};
use crate::record::literal;
use crate::refusal::require_dual_write;
use crate::refusal::Refusal;
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
    }))
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
