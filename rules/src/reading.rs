//! Whether the planner may read a client's statement with its defaults.
//!
//! The planner (and the parser under it) reads SQL as UTF-8 with
//! `standard_conforming_strings` on. A session may differ: another `client_encoding`, the
//! old string syntax, or a statement still running that is about to change either. Most
//! text reads the same under all of them (ASCII with no backslash, the common case, is
//! decided without a second look); for the rest, [`read`] lexes the bytes as the session
//! does, and as it might if a setting is changing, and answers one of three ways: no ruled
//! table is named under any of those readings (pass it through), the session reads it
//! exactly as the planner would (plan it), or Tandem cannot be sure (refuse it, naming the
//! table and the setting).

use crate::lexer::{CharWidths, Lexing, Scanner, Token};
use crate::name::TableName;
use crate::prefilter::{first_ruled_name, RuledNames};
use crate::refusal::{Refusal, Unreadable};
use crate::ruleset::RuleSet;

/// How a session reads SQL text right now, as far as Tandem knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionReading<'a> {
    /// The session's lexing settings, as the server last reported them.
    pub lexing: Lexing,
    /// The client encoding's name, as the server reported it.
    pub client_encoding: &'a str,
    /// False while a statement that may change those settings is still running.
    pub certain: bool,
}

impl Default for SessionReading<'_> {
    fn default() -> Self {
        Self {
            lexing: Lexing::default(),
            client_encoding: "UTF8",
            certain: true,
        }
    }
}

/// What to do with a statement's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading<'a> {
    /// No ruled table is named however the session reads it: send it as it is.
    Unruled,
    /// The session reads it as the planner does: plan this text.
    Plannable(&'a str),
    /// Tandem cannot be sure how the server reads it.
    Unreadable(Refusal),
}

/// Decides how the planner may treat `src` in a session reading it as `session` does.
pub fn read<'a>(
    src: &'a [u8],
    session: SessionReading<'_>,
    rules: &RuleSet,
    names: &RuledNames,
) -> Reading<'a> {
    if names.is_empty() {
        return Reading::Unruled;
    }
    let plain = src.iter().all(|&b| b < 0x80 && b != b'\\');
    if plain {
        // ASCII reads the same in every client encoding, and without a backslash the
        // string syntax does not matter.
        return match first_ruled_name(src, Lexing::default(), names) {
            None => Reading::Unruled,
            Some(_) => Reading::Plannable(ascii(src)),
        };
    }
    let mut readings = vec![session.lexing];
    if !session.certain {
        let flipped = Lexing {
            standard_conforming_strings: !session.lexing.standard_conforming_strings,
            ..session.lexing
        };
        readings.push(flipped);
        for lexing in [session.lexing, flipped] {
            readings.push(Lexing {
                encoding: CharWidths::HighBitBytes,
                ..lexing
            });
        }
    }
    let Some(name) = readings
        .iter()
        .find_map(|lexing| first_ruled_name(src, *lexing, names))
    else {
        return Reading::Unruled;
    };
    let table = rule_table(rules, name);
    let utf8_session = ["UTF8", "UTF-8", "UNICODE"]
        .iter()
        .any(|n| session.client_encoding.eq_ignore_ascii_case(n));
    let has_high = src.iter().any(|&b| b >= 0x80);
    if has_high && (!utf8_session || !session.certain) {
        let why = if utf8_session {
            Unreadable::SettingInFlight
        } else {
            Unreadable::Encoding(session.client_encoding.to_string())
        };
        return Reading::Unreadable(Refusal::Unreadable { table, why });
    }
    let Ok(text) = std::str::from_utf8(src) else {
        // Invalid UTF-8 in a UTF8 session: the server refuses the message itself.
        return Reading::Unruled;
    };
    let planner = tokens(src, Lexing::default());
    if readings
        .iter()
        .all(|lexing| tokens(src, *lexing) == planner)
    {
        return Reading::Plannable(text);
    }
    let why = if session.certain {
        Unreadable::BackslashString
    } else {
        Unreadable::SettingInFlight
    };
    Reading::Unreadable(Refusal::Unreadable { table, why })
}

/// What a statement may do to the session settings Tandem follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingsTouch {
    /// It may set `standard_conforming_strings` or `client_encoding` (`SET`, `RESET`,
    /// `DISCARD`, `set_config(...)`, `SET NAMES`).
    pub sets: bool,
    /// It may set `search_path` (`SET search_path`, `SET SCHEMA`, `RESET`, `DISCARD`,
    /// `set_config(...)`).
    pub search_path: bool,
    /// It may change the current role, which `"$user"` in `search_path` stands for.
    pub role: bool,
    /// It may end a transaction (`COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE
    /// TRANSACTION`), which undoes a setting made inside it when the transaction fails or
    /// rolls back (or `ROLLBACK TO` a savepoint before it).
    pub ends_transaction: bool,
    /// It may change any setting or the current role (`SET`, `RESET`, `DISCARD`,
    /// `set_config(...)`, `SET ROLE`, `SET SESSION AUTHORIZATION`): what shadow reads run
    /// with (see `tandem::control::shadow`).
    pub settings: bool,
}

/// What `src` may do to the session settings Tandem follows, judged from its words (a
/// function that sets them without naming them is not seen; the server's reports, and
/// Tandem's own checks at execution, catch that).
pub fn settings_touch(src: &[u8]) -> SettingsTouch {
    let mut touch = SettingsTouch::default();
    let mut previous_set = false;
    // Whether the next token starts a statement: transaction ends are statements of their
    // own (`END` also closes a CASE).
    let mut at_start = true;
    for token in Scanner::with(src, Lexing::default()) {
        let first = std::mem::replace(&mut at_start, token.kind == crate::lexer::Kind::Semicolon);
        if token.kind != crate::lexer::Kind::Ident {
            previous_set = false;
            continue;
        }
        let word = &src[token.start..token.end];
        let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
        if (first && is("set")) || is("set_config") || is("reset") || is("discard") {
            touch.settings = true;
        }
        if is("role") || is("authorization") {
            touch.settings = true;
        }
        if is("standard_conforming_strings") || is("client_encoding") || is("names") {
            touch.sets = true;
        } else if is("set_config") || is("reset") || is("discard") {
            touch.sets = true;
            touch.search_path = true;
            touch.role = true;
        } else if is("search_path") || (previous_set && is("schema")) {
            touch.search_path = true;
        } else if is("role") || is("authorization") {
            touch.role = true;
        } else if first
            && (is("commit") || is("end") || is("rollback") || is("abort") || is("prepare"))
        {
            touch.ends_transaction = true;
        }
        previous_set = is("set");
    }
    touch
}

/// The custom settings (`app.tenant`: a name with a dot) `src` may set: `SET [SESSION |
/// LOCAL] a.b ...` and `set_config('a.b', ...)`, names folded as the server folds them.
/// Tandem asks the server their values (they are not listed in `pg_settings`), so a name
/// seen here that the statement did not set costs nothing but a lookup.
pub fn custom_setting_names(src: &[u8]) -> Vec<String> {
    let tokens: Vec<crate::lexer::Token> = Scanner::with(src, Lexing::default()).collect();
    let text = |t: &crate::lexer::Token| String::from_utf8_lossy(&src[t.start..t.end]).into_owned();
    let ident = |t: &crate::lexer::Token| match t.kind {
        crate::lexer::Kind::Ident => Some(text(t).to_ascii_lowercase()),
        crate::lexer::Kind::Quoted => Some(text(t).replace("\"\"", "\"")),
        _ => None,
    };
    let is = |t: &crate::lexer::Token, w: &str| {
        t.kind == crate::lexer::Kind::Ident
            && src[t.start..t.end].eq_ignore_ascii_case(w.as_bytes())
    };
    let mut out = Vec::new();
    let mut at_start = true;
    for (i, t) in tokens.iter().enumerate() {
        let first = std::mem::replace(&mut at_start, t.kind == crate::lexer::Kind::Semicolon);
        if first && is(t, "set") {
            let mut j = i + 1;
            if tokens
                .get(j)
                .is_some_and(|t| is(t, "session") || is(t, "local"))
            {
                j += 1;
            }
            if let (Some(a), Some(dot), Some(b)) =
                (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
            {
                if &src[dot.start..dot.end] == b"." {
                    if let (Some(a), Some(b)) = (ident(a), ident(b)) {
                        out.push(format!("{a}.{b}"));
                    }
                }
            }
        } else if is(t, "set_config") {
            if let (Some(open), Some(lit)) = (tokens.get(i + 1), tokens.get(i + 2)) {
                let lit = &src[lit.start..lit.end];
                if &src[open.start..open.end] == b"("
                    && lit.len() > 2
                    && lit[0] == b'\''
                    && lit[lit.len() - 1] == b'\''
                {
                    let name = String::from_utf8_lossy(&lit[1..lit.len() - 1]).into_owned();
                    if name.contains('.') && !name.contains('\'') && !name.contains('\\') {
                        out.push(name.to_ascii_lowercase());
                    }
                }
            }
        }
    }
    out
}

/// Whether a statement of `src` that may change `search_path` (or, when `path_has_user`,
/// the role) comes before one that names a ruled table: that one would be planned with a
/// search_path the server no longer uses.
pub fn search_path_changes_before_ruled(
    src: &[u8],
    lexing: Lexing,
    names: &RuledNames,
    path_has_user: bool,
) -> bool {
    let mut changed = false;
    for span in crate::split::statement_spans(src, lexing) {
        let piece = &src[span];
        if changed && first_ruled_name(piece, lexing, names).is_some() {
            return true;
        }
        let touch = settings_touch(piece);
        changed |= touch.search_path || (path_has_user && touch.role);
    }
    false
}

/// The schemas of a `search_path` value, as the server splits it (`SplitIdentifierString`):
/// comma-separated names, unquoted ones folded to lower case and truncated, quoted ones
/// kept with `""` unescaped; `$user` (quoted or not) replaced by `user`. `None` when it is malformed.
pub fn parse_search_path(raw: &str, user: &str) -> Option<Vec<String>> {
    let mut schemas = Vec::new();
    let mut rest = raw.trim_start();
    if rest.is_empty() {
        return Some(schemas);
    }
    loop {
        let (name, quoted, after) = if let Some(body) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = body.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => {
                        if body[i + 1..].starts_with('"') {
                            name.push('"');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => name.push(c),
                    None => return None,
                }
            };
            (name, true, &body[end..])
        } else {
            let end = rest
                .find(|c: char| c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            (rest[..end].to_string(), false, &rest[end..])
        };
        let name = if quoted {
            name
        } else {
            crate::ident::normalize(&sqlparser::ast::Ident::new(name))
        };
        // `$user`, quoted (as in the default) or not, stands for the current role.
        let name = if name == "$user" {
            user.to_string()
        } else {
            name
        };
        schemas.push(name);
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None if rest.is_empty() => return Some(schemas),
            None => return None,
        }
    }
}

/// The text of an all-ASCII byte string.
fn ascii(src: &[u8]) -> &str {
    // ASCII is UTF-8; the fallback is never taken.
    std::str::from_utf8(src).unwrap_or_default()
}

/// Every token of `src` as `lexing` reads it, for comparing two readings.
fn tokens(src: &[u8], lexing: Lexing) -> Vec<Token> {
    Scanner::with(src, lexing).collect()
}

/// The ruled table a bare name found by the pre-filter belongs to (the first rule with that
/// name; a refusal names it).
fn rule_table(rules: &RuleSet, name: &[u8]) -> TableName {
    rules
        .rules
        .iter()
        .find(|r| r.rule.table.name.as_bytes() == name)
        .map(|r| r.rule.table.clone())
        .unwrap_or_else(|| TableName::new(None, &String::from_utf8_lossy(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Mode, ResolvedRule, Rule, TableShape};

    fn rules() -> (RuleSet, RuledNames) {
        let rule = Rule::new(
            TableName::parse("public.orders").unwrap(),
            Mode::DualWrite,
            vec!["id".into()],
        );
        let shape = TableShape {
            mirrored_columns: vec!["id".into()],
            ..TableShape::default()
        };
        let set = RuleSet::new(1, vec![ResolvedRule::new(rule, shape).unwrap()]).unwrap();
        let names = RuledNames::new(&set);
        (set, names)
    }

    fn why(reading: Reading<'_>) -> Option<Unreadable> {
        match reading {
            Reading::Unreadable(Refusal::Unreadable { why, .. }) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn plain_text_is_planned_or_passed_without_a_second_look() {
        let (set, names) = rules();
        let s = SessionReading::default();
        assert_eq!(read(b"SELECT 1", s, &set, &names), Reading::Unruled);
        assert_eq!(
            read(b"DELETE FROM orders", s, &set, &names),
            Reading::Plannable("DELETE FROM orders")
        );
        let latin1 = SessionReading {
            client_encoding: "LATIN1",
            certain: false,
            ..s
        };
        assert_eq!(
            read(b"DELETE FROM orders", latin1, &set, &names),
            Reading::Plannable("DELETE FROM orders")
        );
    }

    #[test]
    fn non_ascii_text_in_another_encoding_is_refused_only_when_it_names_a_ruled_table() {
        let (set, names) = rules();
        let latin1 = SessionReading {
            client_encoding: "LATIN1",
            ..SessionReading::default()
        };
        assert_eq!(
            read(
                b"INSERT INTO other VALUES ('caf\xe9')",
                latin1,
                &set,
                &names
            ),
            Reading::Unruled
        );
        assert_eq!(
            why(read(
                b"INSERT INTO orders VALUES ('caf\xe9')",
                latin1,
                &set,
                &names
            )),
            Some(Unreadable::Encoding("LATIN1".into()))
        );
        let utf8 = SessionReading::default();
        assert_eq!(
            read(
                "INSERT INTO orders VALUES ('café')".as_bytes(),
                utf8,
                &set,
                &names
            ),
            Reading::Plannable("INSERT INTO orders VALUES ('café')")
        );
    }

    #[test]
    fn backslashes_before_quotes_are_refused_when_strings_are_not_standard() {
        let (set, names) = rules();
        let off = SessionReading {
            lexing: Lexing {
                standard_conforming_strings: false,
                ..Lexing::default()
            },
            ..SessionReading::default()
        };
        // Reads the same either way: planned.
        assert!(matches!(
            read(br"INSERT INTO orders VALUES ('C:\dir')", off, &set, &names),
            Reading::Plannable(_)
        ));
        // The quote ends the string only with standard strings.
        assert_eq!(
            why(read(
                br"INSERT INTO orders VALUES ('a\'', 'b')",
                off,
                &set,
                &names
            )),
            Some(Unreadable::BackslashString)
        );
        // Hidden inside a string under the session's reading: not named at all.
        assert_eq!(
            read(br"SELECT 'a\'; DELETE FROM orders; --'", off, &set, &names),
            Reading::Unruled
        );
    }

    #[test]
    fn search_paths_split_as_the_server_splits_them() {
        assert_eq!(
            parse_search_path("\"$user\", public", "app").unwrap(),
            vec!["app", "public"]
        );
        assert_eq!(
            parse_search_path("$user, public", "App").unwrap(),
            vec!["App", "public"]
        );
        assert_eq!(
            parse_search_path(" S2 ,\"We\"\"ird\",public", "u").unwrap(),
            vec!["s2", "We\"ird", "public"]
        );
        assert_eq!(parse_search_path("", "u").unwrap(), Vec::<String>::new());
        assert!(parse_search_path("a,,b", "u").is_none());
        assert!(parse_search_path("\"open", "u").is_none());
    }

    #[test]
    fn a_search_path_change_before_a_ruled_statement_in_one_string_is_seen() {
        let (_, names) = rules();
        let l = Lexing::default();
        assert!(search_path_changes_before_ruled(
            b"SET search_path TO s2; INSERT INTO orders VALUES (1)",
            l,
            &names,
            false
        ));
        assert!(!search_path_changes_before_ruled(
            b"INSERT INTO orders VALUES (1); SET search_path TO s2",
            l,
            &names,
            false
        ));
        assert!(!search_path_changes_before_ruled(
            b"SET ROLE app; INSERT INTO orders VALUES (1)",
            l,
            &names,
            false
        ));
        assert!(search_path_changes_before_ruled(
            b"SET ROLE app; INSERT INTO orders VALUES (1)",
            l,
            &names,
            true
        ));
    }

    #[test]
    fn statements_that_may_change_settings_are_told_apart() {
        let t = settings_touch(b"SET search_path TO s2, public");
        assert!(t.search_path && !t.sets && !t.role);
        assert!(settings_touch(b"set schema 'x'").search_path);
        assert!(!settings_touch(b"SELECT schema FROM t").search_path);
        assert!(settings_touch(b"SELECT set_config('search_path', 'x', false)").search_path);
        assert!(settings_touch(b"SET ROLE app").role);
        assert!(settings_touch(b"SET standard_conforming_strings = off").sets);
        assert!(settings_touch(b"ROLLBACK TO SAVEPOINT a").ends_transaction);
        assert!(settings_touch(b"SELECT 1; end").ends_transaction);
        assert!(settings_touch(b"SET app.tenant = 'acme'").settings);
        assert!(settings_touch(b"BEGIN; set local app.tenant to 'x'").settings);
        assert!(settings_touch(b"SELECT set_config('app.tenant', 'x', true)").settings);
        assert!(settings_touch(b"SET SESSION AUTHORIZATION app").settings);
        assert!(!settings_touch(b"UPDATE t SET note = 'x'").settings);
        assert_eq!(
            custom_setting_names(b"SET app.Tenant = 'a'; set local \"My\".x to 1; SELECT set_config('App.user', 'u', true); UPDATE t SET a.b = 1; SET work_mem = '1MB'"),
            vec!["app.tenant", "My.x", "app.user"]
        );
        assert!(!settings_touch(b"UPDATE t SET a = CASE WHEN b THEN 1 END").ends_transaction);
        assert_eq!(
            settings_touch(b"INSERT INTO t VALUES (1)"),
            SettingsTouch::default()
        );
    }

    #[test]
    fn a_setting_changing_in_flight_refuses_what_it_would_change() {
        let (set, names) = rules();
        let unsure = SessionReading {
            certain: false,
            ..SessionReading::default()
        };
        assert_eq!(
            why(read(
                br"SELECT 'a\'; DELETE FROM orders; --'",
                unsure,
                &set,
                &names
            )),
            Some(Unreadable::SettingInFlight)
        );
        assert_eq!(
            why(read(
                "DELETE FROM orders WHERE note = 'é'".as_bytes(),
                unsure,
                &set,
                &names
            )),
            Some(Unreadable::SettingInFlight)
        );
        assert!(matches!(
            read(
                br"DELETE FROM orders WHERE note = 'C:\dir'",
                unsure,
                &set,
                &names
            ),
            Reading::Plannable(_)
        ));
    }
}
