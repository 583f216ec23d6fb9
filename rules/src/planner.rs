//! The planner: from a client's SQL string to what the proxy must send instead.
//!
//! [`plan`] cuts the string into statements, leaves alone every statement that does not
//! write a ruled table (reads are never rewritten in `dual_write`), and hands each write to
//! the module for its kind ([`insert`](crate::insert), [`update`](crate::update),
//! [`delete`](crate::delete), [`truncate`](crate::truncate), [`merge`](crate::merge),
//! [`copy`](crate::copy)). Anything Tandem cannot mirror with certainty makes the whole
//! string a [`Plan::Reject`]: running part of a batch unmirrored is never an option.
//!
//! Out of scope, because the SQL text does not show them: writes made by functions,
//! procedures or triggers, writes through views or rules, and temporary tables that shadow a
//! ruled table's name.

use sqlparser::ast::{ObjectType, SetExpr, Statement, UtilityOption, With};

use crate::ident::normalize;
use crate::lexer::{folded_eq, Kind, Scanner};
use crate::name::TableName;
use crate::parse::{parse_statement, renders_faithfully};
use crate::plan::{Outcome, Plan, ResponseFix, StatementPlan};
use crate::prefilter::{mentions_ruled_table, token_spells, RuledNames};
use crate::refusal::{require_dual_write, Refusal, Rejection};
use crate::rule::{GuardPolicy, MirrorErrorPolicy, Mode, ResolvedRule};
use crate::ruleset::RuleSet;
use crate::split::split_statements;
use crate::writes::{ruled_writes, written_table, Ctx};
use crate::{
    bulk, copy, ddl, delete, insert, merge, only, reads, rename, reverse, truncate, update,
};

/// Plan a client's SQL string (one or more statements) under `rules`, resolving bare table
/// names through `search_path` (schema names in catalog spelling, `$user` expanded).
pub fn plan(sql: &str, rules: &RuleSet, search_path: &[String]) -> Plan {
    let ctx = Ctx { rules, search_path };
    let names = RuledNames::new(rules);
    let pieces = split_statements(sql);
    let mut planned = Vec::with_capacity(pieces.len());
    let mut rewritten = false;
    for piece in &pieces {
        let outcome = if mentions_ruled_table(piece, &names) {
            bulk::plan(piece, &names, |skeleton, client| {
                plan_statement_as(skeleton, client, ctx)
            })
            .unwrap_or_else(|| plan_statement(piece, ctx))
        } else {
            Ok(Outcome::Untouched)
        };
        match outcome {
            Err(refusal) if left_to_guard(&refusal, piece, ctx) => {
                planned.push(StatementPlan::untouched(piece))
            }
            Err(refusal) => {
                // The client's text goes with every refusal: the server parses a whole
                // query string before it runs any of it, so a piece neither Tandem nor the
                // server can parse is the server's own 42601, as without Tandem.
                let mut rejection = reject(refusal, rules);
                if let Plan::Reject(r) = &mut rejection {
                    r.statement = Some(sql.to_string());
                }
                return rejection;
            }
            Ok(Outcome::Untouched) => planned.push(StatementPlan::untouched(piece)),
            Ok(Outcome::Rewritten(p)) => {
                rewritten = true;
                planned.push(p);
            }
            Ok(Outcome::CopyIn(copy)) if pieces.len() == 1 => return Plan::CopyIn(copy),
            Ok(Outcome::CopyIn(copy)) => {
                let refusal = Refusal::CopyInBatch { table: copy.table };
                if !left_to_guard(&refusal, piece, ctx) {
                    return reject(refusal, rules);
                }
                planned.push(StatementPlan::untouched(piece))
            }
        }
    }
    if rewritten {
        Plan::Rewritten(planned)
    } else {
        Plan::Passthrough
    }
}

/// Can the guard in the database take a write Tandem refused? The guard mirrors whatever a
/// statement changed in a guarded table, at the statement's end, in its transaction, so a
/// write Tandem cannot rewrite (MERGE before 17, a data-modifying CTE, `WHERE CURRENT OF`, a key
/// change it cannot follow, `COPY FROM` a server file, a statement its parser cannot read)
/// can run as the client sent it — the client gets exactly Postgres's answer — when every
/// ruled table the statement names is guarded on its legacy table with policy `mirror`
/// (modes `dual_write` and `union_read`, guard in place when the rule was resolved). Never
/// DDL, nor a statement whose reading depends on settings Tandem is unsure of (it may name
/// another table than Tandem read), nor any statement naming a table of a rule in `cutover`
/// (the client's statement would write the legacy table, the mirror side then).
fn left_to_guard(refusal: &Refusal, piece: &str, ctx: Ctx<'_>) -> bool {
    let write = matches!(
        refusal,
        Refusal::Unparsable { .. }
            | Refusal::CurrentOf { .. }
            | Refusal::Merge { .. }
            | Refusal::KeyUpdate { .. }
            | Refusal::NestedWrite { .. }
            | Refusal::CopyFromServer { .. }
            | Refusal::CopyInBatch { .. }
            | Refusal::Returning { .. }
            | Refusal::Unsupported { .. }
    );
    write
        && ctx
            .rules
            .rules
            .iter()
            .filter(|r| r.rule.mode != Mode::Off)
            .all(|r| {
                let guarded = matches!(r.rule.mode, Mode::DualWrite | Mode::UnionRead)
                    && r.rule.guard == GuardPolicy::Mirror
                    && r.shape.guard_ready;
                guarded || !mentions_ruled_table(piece, &RuledNames::of(r))
            })
}

/// A [`Plan::Reject`] carrying the policy of the refused table's rule. In `cutover` and
/// `target_only` the policy is always `fail`: letting the client's statement through would
/// write the legacy table only, while the target is the table of record.
fn reject(refusal: Refusal, rules: &RuleSet) -> Plan {
    let policy = rules
        .rules
        .iter()
        .find(|r| &r.rule.table == refusal.table())
        .map_or(MirrorErrorPolicy::Fail, |r| match r.rule.mode {
            Mode::Cutover | Mode::TargetOnly => MirrorErrorPolicy::Fail,
            _ => r.rule.on_mirror_error,
        });
    Plan::Reject(Rejection::new(refusal, policy))
}

/// Plan one statement that mentions a ruled table's name.
pub(crate) fn plan_statement(piece: &str, ctx: Ctx<'_>) -> Result<Outcome, Refusal> {
    plan_statement_as(piece, piece, ctx)
}

/// Plan `piece`, whose client text is `client` (the two differ only for a bulk INSERT's
/// skeleton, see [`bulk`]); the client's text is what a drift record keeps.
pub(crate) fn plan_statement_as(
    piece: &str,
    client: &str,
    ctx: Ctx<'_>,
) -> Result<Outcome, Refusal> {
    // The parser does not read `U&"…"` identifiers: plan the same statement spelled with
    // plain quoted ones (a rewrite embeds that spelling; an untouched statement is sent as
    // the client wrote it).
    let plain = crate::lexer::plain_unicode_identifiers(piece);
    let piece = plain.as_deref().unwrap_or(piece);
    if let Some(refusal) = ddl::check(piece, ctx) {
        return Err(refusal);
    }
    let stripped = only::strip(piece);
    let stmt = match parse_statement(&stripped.text) {
        Ok(stmt) => stmt,
        Err(reason) => return unparsable(piece, reason, ctx),
    };
    let (_, top) = split_with(&stmt);
    let top_rule = written_table(top).and_then(|n| ctx.active(n));
    // `ONLY` survives a rewrite only on the top-level write to a ruled table (see `only`).
    let top_only =
        top_rule.is_some() && written_table(top).is_some_and(|n| stripped.marks_table(n));
    let outcome = plan_parsed(piece, client, &stmt, top_only, ctx)?;
    let carried =
        usize::from(top_only && top_rule.is_some_and(|r| r.rule.mode != Mode::TargetOnly));
    if stripped.marks.len() > carried {
        let table = match &outcome {
            Outcome::Untouched => return Ok(outcome),
            Outcome::Rewritten(p) => p.rule_table.clone(),
            Outcome::CopyIn(c) => Some(c.table.clone()),
        };
        return Err(Refusal::Unsupported {
            table: table
                .or_else(|| top_rule.map(|r| r.rule.table.clone()))
                .unwrap_or_else(|| TableName::new(None, "?")),
            construct: "UPDATE ONLY / DELETE FROM ONLY other than the statement's own write".into(),
        });
    }
    Ok(outcome)
}

/// Plan one parsed statement; `only` says its top-level write carried `ONLY`; `client` is
/// the client's text of `piece`.
fn plan_parsed(
    piece: &str,
    client: &str,
    stmt: &Statement,
    only: bool,
    ctx: Ctx<'_>,
) -> Result<Outcome, Refusal> {
    if let Some((renamed, rule)) = rename::rewrite(stmt, ctx) {
        return renamed_plan(stmt, &renamed, rule, ctx);
    }
    let writes = ruled_writes(stmt, ctx);
    if writes.is_empty() {
        if let Some(read) = reads::rewrite(stmt, ctx) {
            if !renders_faithfully(stmt) {
                return Err(Refusal::Unsupported {
                    table: read
                        .rule_table
                        .clone()
                        .unwrap_or_else(|| TableName::new(None, "?")),
                    construct: "a read Tandem cannot re-render faithfully".into(),
                });
            }
            return Ok(Outcome::Rewritten(read));
        }
    }
    let (with, top) = split_with(stmt);
    match top {
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => {
            let rule = written_table(top).and_then(|n| ctx.active(n));
            let top_count = usize::from(rule.is_some());
            if writes.len() > top_count {
                let nested = writes
                    .iter()
                    .find(|w| rule.is_none_or(|r| r.rule.table != w.rule.table))
                    .unwrap_or(&writes[0]);
                return Err(Refusal::NestedWrite {
                    table: nested.rule.table.clone(),
                    context: "a WITH clause",
                });
            }
            let Some(rule) = rule else {
                return Ok(Outcome::Untouched);
            };
            plan_write(
                stmt,
                with,
                top,
                rule,
                client,
                only,
                ctx.rules.server_version_num,
            )
        }
        Statement::Explain {
            analyze, options, ..
        } if !explain_runs(*analyze, options.as_deref()) => Ok(Outcome::Untouched),
        _ if !writes.is_empty() => Err(Refusal::NestedWrite {
            table: writes[0].rule.table.clone(),
            context: describe(top),
        }),
        Statement::Truncate(t) => truncate::plan(t, ctx),
        Statement::Copy { .. } => copy::plan(top, piece, ctx),
        Statement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } => match names.iter().find_map(|n| ctx.active(n)) {
            Some(rule) => Err(Refusal::DropRuled {
                table: rule.rule.table.clone(),
            }),
            None => Ok(Outcome::Untouched),
        },
        _ => Ok(Outcome::Untouched),
    }
}

/// Plan a top-level INSERT/UPDATE/DELETE/MERGE whose table has an active `rule`; `piece` is
/// the client's text of `stmt`; `server_version` the server's `server_version_num`.
fn plan_write(
    stmt: &Statement,
    with: Option<&With>,
    top: &Statement,
    rule: &ResolvedRule,
    piece: &str,
    only: bool,
    server_version: u32,
) -> Result<Outcome, Refusal> {
    if let Statement::Merge(_) = top {
        if server_version < merge::MERGE_RETURNING {
            return Err(merge::refuse(rule));
        }
    }
    require_dual_write(rule)?;
    if !is_plain_with(stmt) || !renders_faithfully(stmt) {
        return Err(Refusal::Unsupported {
            table: rule.rule.table.clone(),
            construct: "a statement Tandem cannot re-render faithfully".into(),
        });
    }
    if rule.rule.mode == Mode::Cutover {
        if only {
            return Err(Refusal::Unsupported {
                table: rule.rule.table.clone(),
                construct: "UPDATE ONLY / DELETE FROM ONLY in cutover".into(),
            });
        }
        return Ok(Outcome::Rewritten(reverse::rewrite(
            with,
            top,
            rule,
            piece,
            server_version,
        )?));
    }
    let plan = match top {
        Statement::Insert(ins) => insert::rewrite(with, ins, rule, piece)?,
        Statement::Update(upd) => update::rewrite(with, upd, rule, piece, only)?,
        Statement::Delete(del) => delete::rewrite(with, del, rule, piece, only)?,
        Statement::Merge(m) => merge::rewrite(with, m, rule, piece, only, server_version)?,
        _ => return Ok(Outcome::Untouched),
    };
    Ok(Outcome::Rewritten(plan))
}

/// A statement whose `target_only` tables were renamed to their targets: planned again for
/// any other ruled table it names (the renamed ones are no longer ruled names).
fn renamed_plan(
    original: &Statement,
    renamed: &Statement,
    rule: &ResolvedRule,
    ctx: Ctx<'_>,
) -> Result<Outcome, Refusal> {
    if !renders_faithfully(original) {
        return Err(Refusal::Unsupported {
            table: rule.rule.table.clone(),
            construct: "a statement Tandem cannot re-render faithfully".into(),
        });
    }
    let sql = renamed.to_string();
    match plan_statement(&sql, ctx)? {
        Outcome::Untouched => Ok(Outcome::Rewritten(StatementPlan {
            sql,
            response: ResponseFix::None,
            rule_table: Some(rule.rule.table.clone()),
            policy: Some(MirrorErrorPolicy::Fail),
        })),
        other => Ok(other),
    }
}

/// `WITH … <write>` arrives as a query whose body is the write: split the two.
fn split_with(stmt: &Statement) -> (Option<&With>, &Statement) {
    if let Statement::Query(query) = stmt {
        if let SetExpr::Insert(inner)
        | SetExpr::Update(inner)
        | SetExpr::Delete(inner)
        | SetExpr::Merge(inner) = query.body.as_ref()
        {
            return (query.with.as_ref(), inner);
        }
    }
    (None, stmt)
}

/// A `WITH … <write>` query carries nothing but the WITH clause and the write.
fn is_plain_with(stmt: &Statement) -> bool {
    match stmt {
        Statement::Query(q) => {
            q.order_by.is_none()
                && q.limit_clause.is_none()
                && q.fetch.is_none()
                && q.locks.is_empty()
                && q.for_clause.is_none()
                && q.settings.is_none()
                && q.format_clause.is_none()
                && q.pipe_operators.is_empty()
        }
        _ => true,
    }
}

/// Does this EXPLAIN run its statement? Only with ANALYZE (`EXPLAIN ANALYZE`, or an
/// `ANALYZE` option not set to false); a plain EXPLAIN of a write writes nothing, so it
/// passes through untouched and shows the plan of the client's own statement.
fn explain_runs(analyze: bool, options: Option<&[UtilityOption]>) -> bool {
    analyze
        || options.unwrap_or_default().iter().any(|option| {
            let off = option.arg.as_ref().is_some_and(|arg| {
                let value = arg.to_string().to_ascii_lowercase();
                matches!(value.trim_matches('\''), "false" | "off" | "no" | "0")
            });
            normalize(&option.name) == "analyze" && !off
        })
}

/// Where a nested write sits, for the refusal message.
fn describe(stmt: &Statement) -> &'static str {
    match stmt {
        Statement::Query(_) => "a WITH clause",
        Statement::Explain { .. } => "EXPLAIN ANALYZE",
        Statement::Prepare { .. } => "PREPARE",
        Statement::Copy { .. } => "COPY (query) TO",
        _ => "another statement",
    }
}

/// A statement the parser cannot read: refuse it when it names an active rule's table,
/// since it might write it; otherwise it is none of Tandem's business. The refusal names
/// the table the client meant: by its schema when qualified, else through search_path.
fn unparsable(piece: &str, reason: String, ctx: Ctx<'_>) -> Result<Outcome, Refusal> {
    let bytes = piece.as_bytes();
    let tokens: Vec<_> = Scanner::new(piece).collect();
    let mut current_of = false;
    let mut mentioned: Option<&ResolvedRule> = None;
    for (i, token) in tokens.iter().enumerate() {
        let text = &bytes[token.start..token.end];
        let is_ident = token.kind == Kind::Ident;
        current_of |= i > 0
            && is_ident
            && folded_eq(text, b"of")
            && tokens[i - 1].kind == Kind::Ident
            && folded_eq(&bytes[tokens[i - 1].start..tokens[i - 1].end], b"current");
        if mentioned.is_some() {
            continue;
        }
        let spelled: Vec<&ResolvedRule> = ctx
            .rules
            .rules
            .iter()
            .filter(|r| {
                r.rule.mode != Mode::Off && token_spells(token, bytes, r.rule.table.name.as_bytes())
            })
            .collect();
        let Some(first) = spelled.first() else {
            continue;
        };
        let schema = (i >= 2 && &bytes[tokens[i - 1].start..tokens[i - 1].end] == b".")
            .then(|| &tokens[i - 2])
            .filter(|t| matches!(t.kind, Kind::Ident | Kind::Quoted));
        let by_schema = |schema: &str| {
            spelled
                .iter()
                .find(|r| r.rule.table.schema.as_deref() == Some(schema))
                .copied()
        };
        let meant = match schema {
            Some(t) => spelled.iter().copied().find(|r| {
                let s = r
                    .rule
                    .table
                    .schema
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes();
                token_spells(t, bytes, s)
            }),
            None => ctx.search_path.iter().find_map(|schema| by_schema(schema)),
        };
        mentioned = Some(meant.unwrap_or(first));
    }
    match mentioned {
        None => Ok(Outcome::Untouched),
        Some(rule) if current_of => Err(Refusal::CurrentOf {
            table: rule.rule.table.clone(),
        }),
        Some(rule) => Err(Refusal::Unparsable {
            table: rule.rule.table.clone(),
            reason,
        }),
    }
}

#[cfg(test)]
#[path = "tests/planner.rs"]
mod tests;
