//! `COPY` and ruled tables.
//!
//! `COPY orders TO STDOUT` and `COPY (SELECT …) TO` only read: untouched. `COPY orders FROM
//! STDIN` writes rows that pass through the proxy, which can mirror them, so the planner
//! describes the copy ([`CopyIn`]) instead of rewriting SQL. `COPY orders FROM 'file'` or
//! `FROM PROGRAM` loads rows the proxy never sees: refused.

use sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};

use crate::ident::normalize;
use crate::plan::{CopyFormat, CopyIn, Outcome};
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
        sql: sql.to_string(),
        policy: rule.rule.on_mirror_error,
    }))
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
    if !options.is_empty() {
        let list: Vec<String> = options.iter().map(ToString::to_string).collect();
        parts.push(format!("({})", list.join(", ")));
    }
    parts.extend(legacy.iter().map(ToString::to_string));
    parts.join(" ")
}

#[cfg(test)]
#[path = "tests/copy.rs"]
mod tests;
