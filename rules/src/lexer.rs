//! A minimal PostgreSQL lexer: just enough to find identifiers and statement boundaries
//! exactly where the server's scanner (`scan.l`) finds them.
//!
//! The pre-filter runs on every statement the proxy sees, so it cannot afford the full
//! parser. This scanner makes one pass over the bytes, allocates nothing, and knows only
//! what decides where code ends and text begins: string literals (`'…'` with `''`,
//! `E'…'` with backslash escapes, and plain `'…'` with backslash escapes too when
//! `standard_conforming_strings` is off), dollar quotes (`$$…$$`, `$tag$…$tag$`), comments
//! (`--` up to a newline *or carriage return*, and nested `/* */`), quoted identifiers
//! (`"…"` with `""`, `U&"…"` with an optional `UESCAPE`), numbers (so `1items` is a number
//! and an identifier, as PostgreSQL before 15 read it) and `;`. In a client encoding whose
//! multibyte characters may hold ASCII bytes (SJIS, BIG5, GBK, UHC, GB18030, JOHAB) it steps
//! over whole characters, as the server does after converting them, so a trailing `\` or `;`
//! byte inside a character is never read as one.

/// How a session's settings make the server read SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lexing {
    /// `standard_conforming_strings`: when off, a backslash escapes in `'…'` too.
    pub standard_conforming_strings: bool,
    /// The widths of the client encoding's characters.
    pub encoding: CharWidths,
}

impl Default for Lexing {
    /// What the planner assumes: `standard_conforming_strings = on` and UTF-8.
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
            encoding: CharWidths::HighBitBytes,
        }
    }
}

/// How to step over a character that starts with a byte >= 0x80, following PostgreSQL's
/// `pg_encoding_mblen` for the client encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CharWidths {
    /// Every byte of a non-ASCII character is >= 0x80 (UTF-8, SQL_ASCII, LATIN*, WIN*,
    /// KOI8*, EUC_*, MULE_INTERNAL): stepping byte by byte is exact.
    HighBitBytes,
    /// SJIS and SHIFT_JIS_2004: 0xA1-0xDF one byte, any other high byte two.
    Sjis,
    /// BIG5, GBK, UHC: a high byte starts a two-byte character.
    TwoByte,
    /// GB18030: two bytes, or four when the second is a digit.
    Gb18030,
    /// JOHAB: as EUC (0x8E two, 0x8F three, other high bytes two).
    Johab,
}

impl CharWidths {
    /// The widths of a PostgreSQL client encoding, by the name the server reports in
    /// `client_encoding`.
    pub fn of_encoding(name: &str) -> Self {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("SJIS") || is("SHIFT_JIS_2004") {
            CharWidths::Sjis
        } else if is("BIG5") || is("GBK") || is("UHC") {
            CharWidths::TwoByte
        } else if is("GB18030") {
            CharWidths::Gb18030
        } else if is("JOHAB") {
            CharWidths::Johab
        } else {
            CharWidths::HighBitBytes
        }
    }

    /// Length of the character starting at `src[0]` (at least 1).
    fn char_len(self, src: &[u8]) -> usize {
        let Some(&lead) = src.first() else { return 1 };
        if lead < 0x80 {
            return 1;
        }
        match self {
            CharWidths::HighBitBytes => 1,
            CharWidths::Sjis if (0xA1..=0xDF).contains(&lead) => 1,
            CharWidths::Sjis | CharWidths::TwoByte => 2,
            CharWidths::Gb18030 => match src.get(1) {
                Some(b'0'..=b'9') => 4,
                _ => 2,
            },
            CharWidths::Johab => match lead {
                0x8F => 3,
                _ => 2,
            },
        }
    }
}

/// What a token is; only the kinds the pre-filter and splitter care about are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted identifier or keyword; the span covers it.
    Ident,
    /// A `"quoted"` identifier; the span covers the text between the quotes, `""` unfolded.
    Quoted,
    /// A `U&"…"` identifier; the span covers the text between the quotes, and
    /// [`Token::uescape`] is its escape character.
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
    /// The escape character of a `U&"…"` identifier (`\` unless `UESCAPE` says otherwise).
    pub uescape: u8,
}

/// Iterator over the tokens of a SQL string. Comments and whitespace yield nothing.
pub(crate) struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
    lexing: Lexing,
}

impl<'a> Scanner<'a> {
    /// A scanner with the planner's defaults (see [`Lexing::default`]).
    pub(crate) fn new(sql: &'a str) -> Self {
        Self::with(sql.as_bytes(), Lexing::default())
    }

    /// A scanner that reads `src` as a session with `lexing` would.
    pub(crate) fn with(src: &'a [u8], lexing: Lexing) -> Self {
        Self {
            src,
            pos: 0,
            lexing,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.src.get(self.pos + offset).copied()
    }

    /// Steps over the character at `pos`.
    fn step(&mut self) {
        let len = self.lexing.encoding.char_len(&self.src[self.pos..]);
        self.pos = (self.pos + len).min(self.src.len());
    }

    /// Skip a `'…'` body starting after the opening quote; `backslash` for `E'…'`.
    fn skip_string(&mut self, backslash: bool) {
        while let Some(&b) = self.src.get(self.pos) {
            match b {
                b'\\' if backslash => {
                    self.pos += 1;
                    if self.pos < self.src.len() {
                        self.step();
                    }
                }
                b'\'' if self.peek(1) == Some(b'\'') => self.pos += 2,
                b'\'' => {
                    self.pos += 1;
                    break;
                }
                _ => self.step(),
            }
        }
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
            self.step();
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
                self.step();
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

    /// Skip whitespace and comments from `pos` without consuming; returns the next
    /// position holding something else.
    fn after_blanks(&self, mut pos: usize) -> usize {
        let mut probe = Scanner {
            src: self.src,
            pos,
            lexing: self.lexing,
        };
        loop {
            match probe.src.get(pos) {
                Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b') => pos += 1,
                Some(b'-') if probe.src.get(pos + 1) == Some(&b'-') => {
                    pos = line_comment_end(probe.src, pos);
                }
                Some(b'/') if probe.src.get(pos + 1) == Some(&b'*') => {
                    probe.pos = pos;
                    probe.skip_block_comment();
                    pos = probe.pos;
                }
                _ => return pos,
            }
        }
    }

    /// After a `U&"…"` identifier ending at `pos`: the escape character of a following
    /// `UESCAPE 'c'` clause, if there is one.
    fn uescape_after(&self, pos: usize) -> Option<u8> {
        let at = self.after_blanks(pos);
        let word = self.src.get(at..at + 7)?;
        if !word.eq_ignore_ascii_case(b"uescape")
            || self.src.get(at + 7).is_some_and(|b| is_ident_cont(*b))
        {
            return None;
        }
        let quote = self.after_blanks(at + 7);
        match self.src.get(quote..quote + 3)? {
            [b'\'', c, b'\''] => Some(*c),
            _ => None,
        }
    }

    /// After a `U&"…"` identifier ending at `pos`: where its `UESCAPE 'c'` clause ends,
    /// if it has one.
    fn uescape_clause_end(&self, pos: usize) -> Option<usize> {
        self.uescape_after(pos)?;
        let at = self.after_blanks(pos);
        Some(self.after_blanks(at + 7) + 3)
    }

    /// Skip a numeric literal as the server's scanner reads one: digits, a fraction, an
    /// exponent. Letters after it start a new token.
    fn skip_number(&mut self) {
        let digits = |s: &mut Self| {
            while s.peek(0).is_some_and(|d| d.is_ascii_digit() || d == b'_') {
                s.pos += 1;
            }
        };
        digits(self);
        if self.peek(0) == Some(b'.') && self.peek(1) != Some(b'.') {
            self.pos += 1;
            digits(self);
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if self.peek(1 + sign).is_some_and(|d| d.is_ascii_digit()) {
                self.pos += 1 + sign;
                digits(self);
            }
        }
    }
}

/// Where a `--` comment starting at `start` ends: at a newline or carriage return, as the
/// server's `non_newline` class says, or at the end of the text.
fn line_comment_end(src: &[u8], start: usize) -> usize {
    src[start..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(src.len(), |n| start + n)
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
            let token = |kind, end| {
                Some(Token {
                    kind,
                    start,
                    end,
                    uescape: b'\\',
                })
            };
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b' => self.pos += 1,
                b'-' if self.peek(1) == Some(b'-') => {
                    self.pos = line_comment_end(self.src, start);
                }
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment(),
                b'\'' => {
                    self.pos += 1;
                    self.skip_string(!self.lexing.standard_conforming_strings);
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
                    let end = self.skip_quoted_ident();
                    return Some(Token {
                        kind: Kind::UnicodeQuoted,
                        start: start + 3,
                        end,
                        uescape: self.uescape_after(self.pos).unwrap_or(b'\\'),
                    });
                }
                b'"' => {
                    self.pos += 1;
                    let end = self.skip_quoted_ident();
                    return Some(Token {
                        kind: Kind::Quoted,
                        start: start + 1,
                        end,
                        uescape: b'\\',
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
                    self.skip_number();
                    return token(Kind::Other, self.pos);
                }
                b'.' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => {
                    self.skip_number();
                    return token(Kind::Other, self.pos);
                }
                _ if is_ident_start(b) => {
                    while self.peek(0).is_some_and(is_ident_cont) {
                        self.step();
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

/// PostgreSQL's `NAMEDATALEN - 1`: a longer identifier is truncated to this many bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// Does the identifier whose (folded, unescaped) bytes `bytes` yields equal `name` once
/// truncated as the server truncates it (to 63 bytes, not splitting a UTF-8 character)?
fn truncated_eq(bytes: impl Iterator<Item = u8>, name: &[u8]) -> bool {
    let mut buf = [0u8; MAX_IDENT_BYTES + 1];
    let mut n = 0;
    for b in bytes {
        if n == buf.len() {
            break;
        }
        buf[n] = b;
        n += 1;
    }
    let mut end = n.min(MAX_IDENT_BYTES);
    if n > MAX_IDENT_BYTES {
        // buf[63] is the first byte cut; a continuation byte there means its character
        // started before the cut, and the whole character goes.
        while end > 0 && buf[end] & 0xC0 == 0x80 {
            end -= 1;
        }
    }
    &buf[..end] == name
}

/// Does the body of a `"quoted"` identifier (with `""` escapes) name exactly `name`?
pub(crate) fn quoted_eq(body: &[u8], name: &[u8]) -> bool {
    let mut i = 0;
    let unescaped = std::iter::from_fn(|| {
        let b = *body.get(i)?;
        i += if b == b'"' { 2 } else { 1 };
        Some(b)
    });
    truncated_eq(unescaped, name)
}

/// Does an unquoted identifier fold (ASCII lower-casing, as for a UTF-8 database) to
/// exactly `name`?
pub(crate) fn folded_eq(ident: &[u8], name: &[u8]) -> bool {
    truncated_eq(ident.iter().map(|b| b.to_ascii_lowercase()), name)
}

/// Does the body of a `U&"…"` identifier with escape character `escape` name exactly
/// `name`? `None` when the escapes are invalid (the server refuses the statement then).
pub(crate) fn unicode_eq(body: &[u8], escape: u8, name: &[u8]) -> Option<bool> {
    Some(truncated_eq(
        unicode_decode(body, escape)?.into_iter(),
        name,
    ))
}

/// The name a `U&"…"` identifier's body spells (UTF-8, not yet truncated), `None` when its
/// escapes are invalid.
pub(crate) fn unicode_decode(body: &[u8], escape: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let hex = |digits: &[u8]| -> Option<u32> {
        let text = std::str::from_utf8(digits).ok()?;
        if text.len() != digits.len() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    };
    let mut pending_high: Option<u32> = None;
    while i < body.len() {
        let b = body[i];
        if b == b'"' {
            out.push(b'"');
            i += 2;
            continue;
        }
        if b != escape {
            if pending_high.is_some() {
                return None;
            }
            out.push(b);
            i += 1;
            continue;
        }
        let (code, len) = match body.get(i + 1) {
            Some(&c) if c == escape => {
                out.push(escape);
                i += 2;
                continue;
            }
            Some(b'+') => (hex(body.get(i + 2..i + 8)?)?, 8),
            Some(_) => (hex(body.get(i + 1..i + 5)?)?, 5),
            None => return None,
        };
        i += len;
        let code = match (pending_high.take(), code) {
            (None, 0xD800..=0xDBFF) => {
                pending_high = Some(code);
                continue;
            }
            (Some(high), 0xDC00..=0xDFFF) => 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00),
            (Some(_), _) | (None, 0xDC00..=0xDFFF) | (None, 0) => return None,
            (None, code) => code,
        };
        let ch = char::from_u32(code)?;
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
    }
    if pending_high.is_some() {
        return None;
    }
    Some(out)
}

/// `sql` with every `U&"…"` identifier (and its `UESCAPE` clause) spelled as the plain
/// quoted identifier it means, for the SQL parser, which does not read the Unicode form:
/// the same statement to the server. `None` when there is none, or one cannot be decoded.
pub(crate) fn plain_unicode_identifiers(sql: &str) -> Option<String> {
    if !sql.contains("&\"") {
        return None;
    }
    let src = sql.as_bytes();
    let scanner = Scanner::new(sql);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut found = false;
    for token in Scanner::new(sql) {
        if token.kind != Kind::UnicodeQuoted {
            continue;
        }
        if token.end >= src.len() || token.start < 3 || token.start - 3 < copied {
            return None;
        }
        let name =
            String::from_utf8(unicode_decode(&src[token.start..token.end], token.uescape)?).ok()?;
        let close = token.end + 1;
        let end = scanner.uescape_clause_end(close).unwrap_or(close);
        out.push_str(&sql[copied..token.start - 3]);
        out.push('"');
        out.push_str(&name.replace('"', "\"\""));
        out.push('"');
        copied = end;
        found = true;
    }
    if !found {
        return None;
    }
    out.push_str(sql.get(copied..)?);
    Some(out)
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
                (Kind::UnicodeQuoted, "x"),
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
    fn unicode_identifiers_are_spelled_plainly_for_the_parser() {
        assert_eq!(
            plain_unicode_identifiers(r#"INSERT INTO U&"\006Frders" VALUES (1)"#).as_deref(),
            Some(r#"INSERT INTO "orders" VALUES (1)"#)
        );
        assert_eq!(
            plain_unicode_identifiers(
                r#"DELETE FROM u&"!006Frd""ers" /* c */ UESCAPE '!' WHERE x"#
            )
            .as_deref(),
            Some(r#"DELETE FROM "ord""ers" WHERE x"#)
        );
        assert_eq!(plain_unicode_identifiers("SELECT 'U&\"x\"'"), None);
        assert_eq!(plain_unicode_identifiers(r#"SELECT U&"\zz""#), None);
    }

    #[test]
    fn compares_names() {
        assert!(quoted_eq(b"a\"\"b", b"a\"b"));
        assert!(!quoted_eq(b"a\"\"b", b"a\"\"b"));
        assert!(folded_eq(b"ORDERS", b"orders"));
        assert!(!folded_eq(b"ORDERS", b"Orders"));
    }
}
