//! Triggers of a legacy table, copied onto its target, firing once per application write.
//!
//! A legacy table's triggers (audit rows, `updated_at`, queues) stop firing at
//! `target_only`, when nothing writes the legacy table any more, so the target needs the
//! same triggers. But while both tables are written (`dual_write` and `union_read` write
//! legacy and mirror to the target, `cutover` writes the target and mirrors back), a copy
//! that fires on the mirror's writes fires twice per application write: two audit rows.
//! So `tandem init` gives every legacy trigger and its target copy the condition
//! `WHEN (tandem.written_here('<table>'::regclass))`, which holds on the table
//! applications write in the rule's current mode and nowhere else (`triggers.sql`; the
//! guard's rule-store trigger keeps it current in the same transaction as each mode
//! switch, taking no lock on either table). Existing `WHEN` conditions are kept, joined
//! with `AND`.
//!
//! The definitions come from the server (`pg_get_triggerdef`) and are edited at two
//! places found with the lexer: the table after `ON`, and the `WHEN` clause before
//! `EXECUTE`. The server then runs the result, and the parity report checks the outcome
//! in the catalog (the dependency of each trigger's `WHEN` on `tandem.written_here`).

use std::ops::Range;

use crate::lexer::{Kind, Scanner, Token};

/// Why a trigger definition could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerDefError {
    /// The text is not in the form `pg_get_triggerdef` prints.
    #[error("trigger definition not understood ({what}): {definition}")]
    NotUnderstood {
        /// What was looked for.
        what: &'static str,
        /// The definition.
        definition: String,
    },
}

/// The condition for `table` (a SQL name, e.g. `public.orders_v2`).
pub fn condition(table: &str) -> String {
    format!(
        "tandem.written_here('{}'::regclass)",
        table.replace('\'', "''")
    )
}

/// `definition` made for `table` (replacing the table after `ON`) with the condition for
/// `table` in its `WHEN` clause: added (joined with `AND` to a condition already there),
/// or put in place of the condition for another table.
pub fn conditioned_on(definition: &str, table: &str) -> Result<String, TriggerDefError> {
    let parts = parts(definition)?;
    let wanted = condition(table);
    let when = match &parts.when {
        None => format!("WHEN ({wanted}) "),
        Some(expr) => {
            let inner = &definition[expr.clone()];
            match written_here_call(inner) {
                Some(call) => format!(
                    "WHEN ({}{wanted}{}) ",
                    &inner[..call.start],
                    &inner[call.end..]
                ),
                None => format!("WHEN ({wanted} AND ({inner})) "),
            }
        }
    };
    let when_start = parts.when_clause.start;
    Ok(format!(
        "{}{table}{}{when}{}",
        &definition[..parts.table.start],
        &definition[parts.table.end..when_start],
        &definition[parts.execute..]
    ))
}

/// Byte positions in a trigger definition.
struct Parts {
    /// The table after `ON` (quotes included).
    table: Range<usize>,
    /// From `WHEN` (or where it would go) up to `EXECUTE`.
    when_clause: Range<usize>,
    /// The `WHEN` expression, inside its parentheses.
    when: Option<Range<usize>>,
    /// Where `EXECUTE` starts.
    execute: usize,
}

fn span(t: &Token) -> Range<usize> {
    match t.kind {
        // The token covers the text between the quotes.
        Kind::Quoted => t.start - 1..t.end + 1,
        Kind::UnicodeQuoted => t.start - 3..t.end + 1,
        _ => t.start..t.end,
    }
}

fn word(src: &str, t: &Token, w: &str) -> bool {
    t.kind == Kind::Ident && src[t.start..t.end].eq_ignore_ascii_case(w)
}

fn punct(src: &str, t: &Token, p: &str) -> bool {
    t.kind == Kind::Other && &src[t.start..t.end] == p
}

fn parts(def: &str) -> Result<Parts, TriggerDefError> {
    let fail = |what| TriggerDefError::NotUnderstood {
        what,
        definition: def.to_string(),
    };
    let tokens: Vec<Token> = Scanner::new(def).collect();
    if !tokens.first().is_some_and(|t| word(def, t, "create")) {
        return Err(fail("CREATE"));
    }
    let on = tokens
        .iter()
        .position(|t| word(def, t, "on"))
        .ok_or_else(|| fail("ON table"))?;
    // The table: a name, or schema.name.
    let first = tokens.get(on + 1).ok_or_else(|| fail("the table"))?;
    let mut last = on + 1;
    if tokens.get(on + 2).is_some_and(|t| punct(def, t, ".")) {
        last = on + 3;
    }
    let end = tokens.get(last).ok_or_else(|| fail("the table"))?;
    let table = span(first).start..span(end).end;
    let each = (last + 1..tokens.len().saturating_sub(2))
        .find(|&i| word(def, &tokens[i], "for") && word(def, &tokens[i + 1], "each"))
        .ok_or_else(|| fail("FOR EACH"))?;
    let mut i = each + 3; // FOR EACH ROW|STATEMENT
    let after_level = tokens.get(i).ok_or_else(|| fail("EXECUTE"))?;
    let clause_start = after_level.start;
    let mut when = None;
    if word(def, after_level, "when") {
        let open = tokens.get(i + 1).ok_or_else(|| fail("WHEN ("))?;
        if !punct(def, open, "(") {
            return Err(fail("WHEN ("));
        }
        let close = closing(def, &tokens, i + 1).ok_or_else(|| fail("the end of WHEN"))?;
        when = Some(open.end..tokens[close].start);
        i = close + 1;
    }
    let execute = tokens.get(i).ok_or_else(|| fail("EXECUTE"))?;
    if !word(def, execute, "execute") {
        return Err(fail("EXECUTE"));
    }
    Ok(Parts {
        table,
        when_clause: clause_start..execute.start,
        when,
        execute: execute.start,
    })
}

/// The span of a `tandem.written_here(...)` call in a `WHEN` expression.
fn written_here_call(expr: &str) -> Option<Range<usize>> {
    let tokens: Vec<Token> = Scanner::new(expr).collect();
    let at = (0..tokens.len().saturating_sub(3)).find(|&i| {
        word(expr, &tokens[i], "tandem")
            && punct(expr, &tokens[i + 1], ".")
            && word(expr, &tokens[i + 2], "written_here")
            && punct(expr, &tokens[i + 3], "(")
    })?;
    let close = closing(expr, &tokens, at + 3)?;
    Some(tokens[at].start..tokens[close].end)
}

/// The index of the `)` that closes the `(` at `open`.
fn closing(src: &str, tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        if punct(src, t, "(") {
            depth += 1;
        } else if punct(src, t, ")") {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_without_when_gets_the_condition_and_the_new_table() {
        let def = "CREATE TRIGGER audit AFTER INSERT OR UPDATE ON public.orders FOR EACH ROW EXECUTE FUNCTION audit_row()";
        assert_eq!(
            conditioned_on(def, "public.orders_v2").unwrap(),
            "CREATE TRIGGER audit AFTER INSERT OR UPDATE ON public.orders_v2 FOR EACH ROW WHEN (tandem.written_here('public.orders_v2'::regclass)) EXECUTE FUNCTION audit_row()"
        );
    }

    #[test]
    fn a_when_condition_is_kept_and_joined() {
        let def = "CREATE TRIGGER \"Touch\" BEFORE UPDATE OF note ON \"My Schema\".\"Orders\" FOR EACH ROW WHEN ((old.note IS DISTINCT FROM new.note)) EXECUTE FUNCTION touch('a) EXECUTE x')";
        assert_eq!(
            conditioned_on(def, "\"My Schema\".\"Orders\"").unwrap(),
            "CREATE TRIGGER \"Touch\" BEFORE UPDATE OF note ON \"My Schema\".\"Orders\" FOR EACH ROW WHEN (tandem.written_here('\"My Schema\".\"Orders\"'::regclass) AND ((old.note IS DISTINCT FROM new.note))) EXECUTE FUNCTION touch('a) EXECUTE x')"
        );
    }

    #[test]
    fn the_condition_for_another_table_is_replaced() {
        let def = "CREATE TRIGGER audit AFTER DELETE ON orders REFERENCING OLD TABLE AS gone FOR EACH STATEMENT WHEN ((tandem.written_here('orders'::regclass) AND (1 = 1))) EXECUTE FUNCTION audit_stmt()";
        assert_eq!(
            conditioned_on(def, "orders_v2").unwrap(),
            "CREATE TRIGGER audit AFTER DELETE ON orders_v2 REFERENCING OLD TABLE AS gone FOR EACH STATEMENT WHEN ((tandem.written_here('orders_v2'::regclass) AND (1 = 1))) EXECUTE FUNCTION audit_stmt()"
        );
    }

    #[test]
    fn a_constraint_trigger_keeps_its_clauses() {
        let def = "CREATE CONSTRAINT TRIGGER later AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_later()";
        assert_eq!(
            conditioned_on(def, "orders").unwrap(),
            "CREATE CONSTRAINT TRIGGER later AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (tandem.written_here('orders'::regclass)) EXECUTE FUNCTION check_later()"
        );
    }

    #[test]
    fn text_that_is_not_a_trigger_definition_is_refused() {
        assert!(conditioned_on("SELECT 1", "t").is_err());
        assert!(conditioned_on(
            "CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW WHEN (a",
            "t"
        )
        .is_err());
    }
}
