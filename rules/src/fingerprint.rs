//! Query shapes: a statement with its literals and parameters masked, normalised, hashed.
//!
//! Shadow reads are counted and compared per shape, so that `WHERE id = 5` sent as a simple
//! query and `WHERE id = $1` prepared and bound with 5 are one shape, and the thousand
//! literal variants of a hot read do not each look rare. The rules, applied to the tokens of
//! the server's own scanner (see [`crate::lexer`]), so comments and string bodies are never
//! mistaken for code:
//!
//! - every constant becomes `?`: numbers, `'…'` / `E'…'` / `U&'…'` strings (a typed literal
//!   such as `DATE '…'` keeps its type name: `date ?`), dollar-quoted strings, `true` and
//!   `false`, and parameters `$n`; a minus sign directly after an operator, `(` or `,`
//!   belongs to its number (`= -5` is `= ?`);
//! - a cast right after a constant is dropped (`$1::int`, `'2024-01-01'::date` are `?`),
//!   as the simple form of the same read usually has none;
//! - a parenthesised list of constants is one constant: `IN (1, 2, 3)` and `IN ($1, $2)`
//!   are `in (?)`;
//! - unquoted words are lower-cased (the server folds them), a quoted identifier that needs
//!   no quotes loses them (`"orders"` is `orders`), comments and spacing are dropped and a
//!   trailing `;` ignored.
//!
//! The text is kept readable (tokens spaced as people write them) because reports show it.
//! The fingerprint is the 64-bit FNV-1a hash of that text, as 16 hex digits in the store.

use crate::lexer::{Kind, Scanner};

/// A statement's shape: its normalised text and that text's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryShape {
    /// 64-bit FNV-1a of `text`.
    pub hash: u64,
    /// The statement with constants masked as `?`, normalised.
    pub text: String,
}

impl QueryShape {
    /// The fingerprint as stored: 16 lowercase hex digits.
    pub fn fingerprint(&self) -> String {
        hex(self.hash)
    }
}

/// A hash as 16 lowercase hex digits.
pub fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// The shape of `sql` (see the module documentation for the rules).
pub fn query_shape(sql: &str) -> QueryShape {
    let text = normalise(sql);
    QueryShape {
        hash: fnv1a(text.as_bytes()),
        text,
    }
}

/// One normalised token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A word (keyword or unquoted identifier), lower-cased on output.
    Word(&'a str),
    /// A quoted identifier, written back with its quotes.
    Quoted(&'a str),
    /// Other text kept as written (`U&"…"`).
    Raw(&'a str),
    /// A constant or parameter.
    Const,
    /// One punctuation or operator character.
    Punct(u8),
}

fn tokens(sql: &str) -> Vec<Tok<'_>> {
    let src = sql.as_bytes();
    let mut out: Vec<Tok<'_>> = Vec::new();
    for token in Scanner::new(sql) {
        let body = &sql[token.start..token.end];
        let first = src[token.start];
        let tok = match token.kind {
            Kind::Ident => {
                if body.eq_ignore_ascii_case("true") || body.eq_ignore_ascii_case("false") {
                    Tok::Const
                } else {
                    Tok::Word(body)
                }
            }
            Kind::Quoted => {
                let plain = !body.is_empty()
                    && body
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                    && !body.as_bytes()[0].is_ascii_digit();
                if plain {
                    Tok::Word(body)
                } else {
                    Tok::Quoted(body)
                }
            }
            Kind::UnicodeQuoted => {
                Tok::Raw(sql.get(token.start - 3..token.end + 1).unwrap_or(body))
            }
            Kind::Semicolon => Tok::Punct(b';'),
            Kind::Other => {
                let constant = first == b'\''
                    || first.is_ascii_digit()
                    || (first == b'.' && body.len() > 1)
                    || (first == b'$' && body.len() > 1)
                    || (matches!(first, b'e' | b'E' | b'u' | b'U') && body.len() > 1);
                if constant {
                    // A unary minus belongs to its number.
                    let unary = matches!(out.last(), Some(Tok::Punct(b'-')))
                        && matches!(
                            out.len().checked_sub(2).and_then(|i| out.get(i)),
                            None | Some(Tok::Punct(
                                b'(' | b',' | b'=' | b'<' | b'>' | b'*' | b'/' | b'+'
                            ))
                        );
                    if unary && first != b'\'' && first != b'$' {
                        out.pop();
                    }
                    Tok::Const
                } else {
                    Tok::Punct(first)
                }
            }
        };
        out.push(tok);
    }
    while matches!(out.last(), Some(Tok::Punct(b';'))) {
        out.pop();
    }
    out
}

/// Drops casts after constants and folds lists of constants.
fn simplify(tokens: Vec<Tok<'_>>) -> Vec<Tok<'_>> {
    let mut out: Vec<Tok<'_>> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let tok = tokens[i];
        // `? :: type` (with `[]` or `(n, m)` after the type name): the cast goes.
        if matches!(out.last(), Some(Tok::Const))
            && tok == Tok::Punct(b':')
            && tokens.get(i + 1) == Some(&Tok::Punct(b':'))
            && matches!(tokens.get(i + 2), Some(Tok::Word(_) | Tok::Quoted(_)))
        {
            i += 3;
            // Multi-word type names: `double precision`, `character varying`,
            // `timestamp with time zone`.
            while let Some(Tok::Word(w)) = tokens.get(i) {
                let w = w.to_ascii_lowercase();
                if matches!(
                    w.as_str(),
                    "precision" | "varying" | "with" | "without" | "time" | "zone"
                ) {
                    i += 1;
                } else {
                    break;
                }
            }
            loop {
                match (tokens.get(i), tokens.get(i + 1)) {
                    (Some(Tok::Punct(b'[')), Some(Tok::Punct(b']'))) => i += 2,
                    (Some(Tok::Punct(b'(')), _) => {
                        let close = tokens[i..]
                            .iter()
                            .position(|t| *t == Tok::Punct(b')'))
                            .map(|p| i + p + 1);
                        match close {
                            Some(end)
                                if tokens[i + 1..end - 1]
                                    .iter()
                                    .all(|t| matches!(t, Tok::Const | Tok::Punct(b','))) =>
                            {
                                i = end
                            }
                            _ => break,
                        }
                    }
                    _ => break,
                }
            }
            continue;
        }
        // `( ?, ?, ? )`: one constant.
        if tok == Tok::Punct(b',')
            && matches!(out.last(), Some(Tok::Const))
            && matches!(
                out.len().checked_sub(2).and_then(|p| out.get(p)),
                Some(Tok::Punct(b'('))
            )
        {
            let mut j = i;
            let mut constants = true;
            while tokens.get(j) == Some(&Tok::Punct(b',')) {
                if tokens.get(j + 1) != Some(&Tok::Const) {
                    constants = false;
                    break;
                }
                j += 2;
            }
            if constants && tokens.get(j) == Some(&Tok::Punct(b')')) {
                i = j;
                continue;
            }
        }
        out.push(tok);
        i += 1;
    }
    out
}

/// The normalised text of `sql`.
pub fn normalise(sql: &str) -> String {
    let tokens = simplify(tokens(sql));
    let mut text = String::with_capacity(sql.len());
    let mut previous: Option<Tok<'_>> = None;
    for tok in tokens {
        if let Some(p) = previous {
            if spaced(p, tok) {
                text.push(' ');
            }
        }
        match tok {
            Tok::Word(w) => text.extend(w.chars().map(|c| c.to_ascii_lowercase())),
            Tok::Quoted(q) => {
                text.push('"');
                text.push_str(q);
                text.push('"');
            }
            Tok::Raw(r) => text.push_str(r),
            Tok::Const => text.push('?'),
            Tok::Punct(b) => text.push(char::from(b)),
        }
        previous = Some(tok);
    }
    text
}

/// Whether a space goes between two tokens (as people write SQL: `count(*)`, `a.b`,
/// `x, y`, `a <= b`, `x::int`).
fn spaced(previous: Tok<'_>, next: Tok<'_>) -> bool {
    let operator = |b: u8| b"+-*/<>=~!@#%^&|`?:".contains(&b);
    match (previous, next) {
        (_, Tok::Punct(b',' | b')' | b'.' | b';' | b']' | b'[')) => false,
        (Tok::Punct(b'(' | b'.' | b'['), _) => false,
        (Tok::Punct(b':'), _) | (_, Tok::Punct(b':')) => false,
        (Tok::Punct(a), Tok::Punct(b)) if operator(a) && operator(b) => false,
        (Tok::Word(_) | Tok::Quoted(_) | Tok::Raw(_), Tok::Punct(b'(')) => false,
        _ => true,
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) {
        assert_eq!(normalise(a), normalise(b), "{a}  vs  {b}");
        assert_eq!(query_shape(a).hash, query_shape(b).hash);
    }

    #[test]
    fn simple_and_prepared_forms_of_one_read_share_a_shape() {
        same(
            "SELECT * FROM orders WHERE id = 5",
            "select *  from orders\n where id = $1;",
        );
        same(
            "SELECT note FROM orders WHERE tenant = 'acme' AND amount > -3.5 LIMIT 10",
            "SELECT note FROM orders WHERE tenant = $1 AND amount > $2 LIMIT $3",
        );
        same(
            "SELECT * FROM orders WHERE created_at > '2024-01-01'::timestamp with time zone",
            "SELECT * FROM orders WHERE created_at > $1::timestamptz",
        );
        same(
            "SELECT * FROM orders WHERE id IN (1, 2, 3)",
            "SELECT * FROM orders WHERE id IN ($1, $2)",
        );
        same(
            "SELECT * FROM \"orders\" WHERE flag = true -- comment",
            "SELECT * FROM orders /* c */ WHERE flag = $1",
        );
        same("SELECT $tag$x$tag$ FROM t", "SELECT E'x\\n' FROM t");
        assert_eq!(
            normalise("SELECT count(*), o.id FROM orders o WHERE o.amount >= 5 AND x::text <> 'a'"),
            "select count(*), o.id from orders o where o.amount >= ? and x::text <> ?"
        );
    }

    #[test]
    fn different_reads_are_different_shapes() {
        let shape = |s| query_shape(s).hash;
        assert_ne!(shape("SELECT a FROM t"), shape("SELECT b FROM t"));
        assert_ne!(shape("SELECT * FROM t1"), shape("SELECT * FROM t2"));
        assert_ne!(
            shape("SELECT * FROM t WHERE a = 1"),
            shape("SELECT * FROM t WHERE a = 1 AND b = 2")
        );
        assert_ne!(shape("SELECT \"A\" FROM t"), shape("SELECT a FROM t"));
        // A binary minus stays an operator.
        assert_eq!(normalise("SELECT a - 1 FROM t"), "select a - ? from t");
        // Text inside literals and comments is never read as code.
        same("SELECT 'a; FROM x' FROM t", "SELECT '' FROM t -- FROM y");
        assert_eq!(query_shape("SELECT 1").fingerprint().len(), 16);
    }
}
