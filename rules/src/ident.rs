//! SQL identifier spelling: how PostgreSQL folds and quotes names.
//!
//! Every name Tandem writes into a rewritten statement (target table, mirrored columns, key
//! columns) goes through [`quote_ident`], which follows PostgreSQL's own `quote_ident()`: a
//! name is left bare only when reading it back unquoted yields the same name. Names coming
//! out of the parser go through [`normalize`], which applies the fold the server applies.

use sqlparser::ast::Ident;

/// Keywords that PostgreSQL 15 does not accept as a bare column or table name in every
/// position (its reserved, type/function-name and column-name keyword classes). Quoting them
/// is always safe; leaving one bare can change what a statement means.
#[rustfmt::skip]
const NEEDS_QUOTES: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
    "authorization", "between", "bigint", "binary", "bit", "boolean", "both", "case", "cast",
    "char", "character", "check", "coalesce", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "dec", "decimal",
    "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "exists",
    "extract", "false", "fetch", "float", "for", "foreign", "freeze", "from", "full", "grant",
    "greatest", "group", "grouping", "having", "ilike", "in", "initially", "inner", "inout",
    "int", "integer", "intersect", "interval", "into", "is", "isnull", "join", "lateral",
    "leading", "least", "left", "like", "limit", "localtime", "localtimestamp", "national",
    "natural", "nchar", "none", "normalize", "not", "notnull", "null", "nullif", "numeric",
    "offset", "on", "only", "or", "order", "out", "outer", "overlaps", "overlay", "placing",
    "position", "precision", "primary", "real", "references", "returning", "right", "row",
    "select", "session_user", "setof", "similar", "smallint", "some", "substring", "symmetric",
    "table", "tablesample", "then", "time", "timestamp", "to", "trailing", "treat", "trim",
    "true", "union", "unique", "user", "using", "values", "varchar", "variadic", "verbose",
    "when", "where", "window", "with", "xmlattributes", "xmlconcat", "xmlelement", "xmlexists",
    "xmlforest", "xmlnamespaces", "xmlparse", "xmlpi", "xmlroot", "xmlserialize", "xmltable",
];

/// Spell `name` (an exact catalog name) so PostgreSQL reads it back as exactly `name`.
pub fn quote_ident(name: &str) -> String {
    if is_bare_safe(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// True when `name` can be written without quotes: lower-case ASCII letters, digits and `_`,
/// not starting with a digit, and not a keyword.
fn is_bare_safe(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    first_ok
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && !NEEDS_QUOTES.contains(&name)
}

/// A parser identifier for an exact catalog name, quoted when needed.
pub(crate) fn ident(name: &str) -> Ident {
    if is_bare_safe(name) {
        Ident::new(name)
    } else {
        Ident::with_quote('"', name)
    }
}

/// Up to 40 characters of `text` fit for a generated name that needs no quoting: ASCII
/// letters and digits lower-cased, anything else `_` (a partition suffix, a temp table).
pub fn name_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// The catalog name a parsed identifier refers to: unquoted identifiers fold to lower case
/// (ASCII only, as the server does for UTF-8 databases), quoted ones are kept exactly.
/// Like the server, it truncates a name longer than 63 bytes (not splitting a character):
/// a longer spelling of a ruled table's name IS that table.
pub fn normalize(ident: &Ident) -> String {
    let mut name = match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    };
    if name.len() > crate::lexer::MAX_IDENT_BYTES {
        let mut end = crate::lexer::MAX_IDENT_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("orders_v2"), "orders_v2");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("my table"), "\"my table\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("order"), "\"order\"");
        assert_eq!(quote_ident("2x"), "\"2x\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn normalizes_like_the_server() {
        assert_eq!(normalize(&Ident::new("ORDERS")), "orders");
        assert_eq!(normalize(&Ident::with_quote('"', "ORDERS")), "ORDERS");
        let long = format!("{}_AND_MORE", "T".repeat(60));
        assert_eq!(
            normalize(&Ident::new(long.as_str())),
            format!("{}_an", "t".repeat(60))
        );
        let wide = format!("{}é", "t".repeat(62));
        assert_eq!(
            normalize(&Ident::with_quote('"', wide.as_str())),
            "t".repeat(62)
        );
    }
}
