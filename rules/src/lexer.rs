//! A minimal PostgreSQL lexer: just enough to find identifiers and statement boundaries.
//!
//! The pre-filter runs on every statement the proxy sees, so it cannot afford the full
//! parser. This scanner makes one pass over the bytes, allocates nothing, and knows only
//! what decides where code ends and text begins: string literals (`'…'` with `''`,
//! `E'…'` with backslash escapes), dollar quotes (`$$…$$`, `$tag$…$tag$`), comments (`--`
//! and nested `/* */`), quoted identifiers (`"…"` with `""`, `U&"…"`) and `;`. It assumes
//! `standard_conforming_strings = on`, the server default since 9.1.

/// What a token is; only the kinds the pre-filter and splitter care about are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted identifier or keyword; the span covers it.
    Ident,
    /// A `"quoted"` identifier; the span covers the text between the quotes, `""` unfolded.
    Quoted,
    /// A `U&"…"` identifier, whose escapes this scanner does not decode.
    UnicodeQuoted,
    /// A `;` outside any literal or comment.
    Semicolon,
    /// Anything else: literals, numbers, parameters, operators, punctuation.
    Other,
}

/// One token: its kind and byte span in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// Iterator over the tokens of a SQL string. Comments and whitespace yield nothing.
pub(crate) struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(sql: &'a str) -> Self {
        Self {
            src: sql.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.src.get(self.pos + offset).copied()
    }

    /// Skip a `'…'` body starting after the opening quote; `backslash` for `E'…'`.
    fn skip_string(&mut self, backslash: bool) {
        while let Some(&b) = self.src.get(self.pos) {
            self.pos += 1;
            match b {
                b'\\' if backslash => self.pos += 1,
                b'\'' if self.peek(0) == Some(b'\'') => self.pos += 1,
                b'\'' => break,
                _ => {}
            }
        }
        // A trailing backslash in an unterminated `E'` string steps past the end.
        self.pos = self.pos.min(self.src.len());
    }

    /// Skip a `"…"` body starting after the opening quote; returns where the body ends.
    fn skip_quoted_ident(&mut self) -> usize {
        while let Some(&b) = self.src.get(self.pos) {
            if b == b'"' {
                if self.peek(1) == Some(b'"') {
                    self.pos += 2;
                    continue;
                }
                let end = self.pos;
                self.pos += 1;
                return end;
            }
            self.pos += 1;
        }
        self.src.len()
    }

    /// Skip a nested `/* … */` comment starting at its `/*`.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.src.len() {
            if self.peek(0) == Some(b'/') && self.peek(1) == Some(b'*') {
                depth += 1;
                self.pos += 2;
            } else if self.peek(0) == Some(b'*') && self.peek(1) == Some(b'/') {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    /// At a `$`: skip a dollar-quoted string if one starts here and return true.
    fn try_skip_dollar_quote(&mut self) -> bool {
        let open_start = self.pos;
        let mut i = self.pos + 1;
        if let Some(&b) = self.src.get(i) {
            if b != b'$' && !is_ident_start(b) {
                return false;
            }
        }
        while let Some(&b) = self.src.get(i) {
            if b == b'$' {
                break;
            }
            if !is_ident_start(b) && !b.is_ascii_digit() {
                return false;
            }
            i += 1;
        }
        if i >= self.src.len() {
            return false;
        }
        let delimiter = &self.src[open_start..=i];
        let body = i + 1;
        self.pos = find(&self.src[body..], delimiter)
            .map_or(self.src.len(), |at| body + at + delimiter.len());
        true
    }
}

/// First index of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl Iterator for Scanner<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        loop {
            let start = self.pos;
            let b = *self.src.get(start)?;
            let token = |kind, end| Some(Token { kind, start, end });
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.pos += 1,
                b'-' if self.peek(1) == Some(b'-') => {
                    self.pos =
                        find(&self.src[start..], b"\n").map_or(self.src.len(), |n| start + n);
                }
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment(),
                b'\'' => {
                    self.pos += 1;
                    self.skip_string(false);
                    return token(Kind::Other, self.pos);
                }
                b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                    self.pos += 2;
                    self.skip_string(true);
                    return token(Kind::Other, self.pos);
                }
                b'u' | b'U' if self.peek(1) == Some(b'&') && self.peek(2) == Some(b'\'') => {
                    self.pos += 3;
                    self.skip_string(false);
                    return token(Kind::Other, self.pos);
                }
                b'u' | b'U' if self.peek(1) == Some(b'&') && self.peek(2) == Some(b'"') => {
                    self.pos += 3;
                    self.skip_quoted_ident();
                    return token(Kind::UnicodeQuoted, self.pos);
                }
                b'"' => {
                    self.pos += 1;
                    let end = self.skip_quoted_ident();
                    return Some(Token {
                        kind: Kind::Quoted,
                        start: start + 1,
                        end,
                    });
                }
                b'$' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => {
                    self.pos += 1;
                    while self.peek(0).is_some_and(|d| d.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    return token(Kind::Other, self.pos);
                }
                b'$' => {
                    if !self.try_skip_dollar_quote() {
                        self.pos += 1;
                    }
                    return token(Kind::Other, self.pos);
                }
                b';' => {
                    self.pos += 1;
                    return token(Kind::Semicolon, self.pos);
                }
                b'0'..=b'9' => {
                    while self
                        .peek(0)
                        .is_some_and(|d| d.is_ascii_alphanumeric() || d == b'.' || d == b'_')
                    {
                        self.pos += 1;
                    }
                    return token(Kind::Other, self.pos);
                }
                _ if is_ident_start(b) => {
                    while self.peek(0).is_some_and(is_ident_cont) {
                        self.pos += 1;
                    }
                    return token(Kind::Ident, self.pos);
                }
                _ => {
                    self.pos += 1;
                    return token(Kind::Other, self.pos);
                }
            }
        }
    }
}

/// Does the body of a `"quoted"` identifier (with `""` escapes) spell exactly `name`?
pub(crate) fn quoted_eq(body: &[u8], name: &[u8]) -> bool {
    let mut i = 0;
    let mut j = 0;
    while i < body.len() {
        let b = body[i];
        i += if b == b'"' { 2 } else { 1 };
        if name.get(j) != Some(&b) {
            return false;
        }
        j += 1;
    }
    j == name.len()
}

/// Does an unquoted identifier fold (ASCII lower-casing) to exactly `name`?
pub(crate) fn folded_eq(ident: &[u8], name: &[u8]) -> bool {
    ident.len() == name.len()
        && ident
            .iter()
            .zip(name)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(sql: &str) -> Vec<(Kind, &str)> {
        Scanner::new(sql)
            .filter(|t| t.kind != Kind::Other)
            .map(|t| (t.kind, &sql[t.start..t.end]))
            .collect()
    }

    #[test]
    fn skips_literals_and_comments() {
        let sql = "select 'a;b''c', E'x\\'y;', $$ ; $$, $t$ a $ ; $t$ -- c;\n /* a /* b; */ ; */ z";
        assert_eq!(
            idents(sql),
            vec![(Kind::Ident, "select"), (Kind::Ident, "z")]
        );
    }

    #[test]
    fn finds_quoted_identifiers_and_semicolons() {
        let sql = "insert into \"a\"\"b\" values ($1); u&\"x\"";
        assert_eq!(
            idents(sql),
            vec![
                (Kind::Ident, "insert"),
                (Kind::Ident, "into"),
                (Kind::Quoted, "a\"\"b"),
                (Kind::Ident, "values"),
                (Kind::Semicolon, ";"),
                (Kind::UnicodeQuoted, "u&\"x\""),
            ]
        );
    }

    #[test]
    fn identifiers_may_contain_dollars() {
        assert_eq!(
            idents("a$b $1 x"),
            vec![(Kind::Ident, "a$b"), (Kind::Ident, "x")]
        );
    }

    #[test]
    fn unterminated_input_ends_cleanly() {
        for sql in [
            "'abc", "\"abc", "$$abc", "/* abc", "E'\\", "E'a\\", "$t$ x", "x \"", "U&\"",
        ] {
            for token in Scanner::new(sql) {
                assert!(token.start <= token.end && token.end <= sql.len(), "{sql}");
            }
            assert!(Scanner::new(sql).count() <= 2, "{sql}");
        }
    }

    #[test]
    fn compares_names() {
        assert!(quoted_eq(b"a\"\"b", b"a\"b"));
        assert!(!quoted_eq(b"a\"\"b", b"a\"\"b"));
        assert!(folded_eq(b"ORDERS", b"orders"));
        assert!(!folded_eq(b"ORDERS", b"Orders"));
    }
}
