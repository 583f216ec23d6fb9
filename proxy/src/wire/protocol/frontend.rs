//! Frontend messages Tandem reads or writes when a session has rules: Query, Parse, Bind,
//! Describe, Execute, Close. Only names, SQL text and row limits are decoded; parameter
//! values are never looked at.

use bytes::{BufMut, BytesMut};

use super::frame::{begin, finish, read_cstr, read_i32};

/// A malformed frontend message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} message")]
pub struct Malformed(pub &'static str);

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed(what))
}

/// The SQL of a Query body, as the client's bytes (in its client_encoding).
pub fn query_sql(body: &[u8]) -> Result<&[u8], Malformed> {
    let (sql, _) = read_cstr(body).ok_or(Malformed("Query"))?;
    Ok(sql)
}

/// A Parse message's parts.
pub struct Parse<'a> {
    /// Prepared statement name ("" = unnamed).
    pub name: &'a str,
    /// The SQL text, as the client's bytes (in its client_encoding).
    pub sql: &'a [u8],
    /// Everything after the SQL: parameter count and type OIDs, kept as sent.
    pub param_types: &'a [u8],
}

/// Decodes a Parse body.
pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, Malformed> {
    let err = Malformed("Parse");
    let (name, rest) = read_cstr(body).ok_or(err.clone())?;
    let (sql, param_types) = read_cstr(rest).ok_or(err.clone())?;
    if param_types.len() < 2 {
        return Err(err);
    }
    Ok(Parse {
        name: utf8(name, "Parse")?,
        sql,
        param_types,
    })
}

/// Whether a Parse body has the shape of one (two C strings, then a parameter count), with
/// names or text that may not be UTF-8.
pub fn parse_is_well_formed(body: &[u8]) -> bool {
    read_cstr(body)
        .and_then(|(_, rest)| read_cstr(rest))
        .is_some_and(|(_, params)| params.len() >= 2)
}

/// Whether a Bind body starts with two C strings (portal and statement names), whatever
/// their encoding.
pub fn bind_names_present(body: &[u8]) -> bool {
    read_cstr(body)
        .and_then(|(_, rest)| read_cstr(rest))
        .is_some()
}

/// Portal and statement names of a Bind body.
pub fn bind_names(body: &[u8]) -> Result<(&str, &str), Malformed> {
    let (portal, rest) = read_cstr(body).ok_or(Malformed("Bind"))?;
    let (statement, _) = read_cstr(rest).ok_or(Malformed("Bind"))?;
    Ok((utf8(portal, "Bind")?, utf8(statement, "Bind")?))
}

/// One Bind parameter: its bytes (None = NULL) and whether it is in binary format.
pub type BindParam = (Option<Vec<u8>>, bool);

/// A Bind's parameter values.
pub fn bind_params(body: &[u8]) -> Result<Vec<BindParam>, Malformed> {
    let err = || Malformed("Bind");
    let (_, rest) = read_cstr(body).ok_or_else(err)?;
    let (_, mut rest) = read_cstr(rest).ok_or_else(err)?;
    let (nformats, r) = read_i16(rest).ok_or_else(err)?;
    rest = r;
    let mut formats = Vec::with_capacity(nformats.max(0) as usize);
    for _ in 0..nformats.max(0) {
        let (f, r) = read_i16(rest).ok_or_else(err)?;
        formats.push(f == 1);
        rest = r;
    }
    let (nparams, r) = read_i16(rest).ok_or_else(err)?;
    rest = r;
    let mut out = Vec::with_capacity(nparams.max(0) as usize);
    for i in 0..nparams.max(0) as usize {
        let (len, r) = crate::wire::protocol::frame::read_i32(rest).ok_or_else(err)?;
        rest = r;
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => *formats.get(i).ok_or_else(err)?,
        };
        if len < 0 {
            out.push((None, binary));
        } else {
            let len = len as usize;
            let value = rest.get(..len).ok_or_else(err)?.to_vec();
            rest = &rest[len..];
            out.push((Some(value), binary));
        }
    }
    Ok(out)
}

fn read_i16(buf: &[u8]) -> Option<(i16, &[u8])> {
    let b: [u8; 2] = buf.get(..2)?.try_into().ok()?;
    Some((i16::from_be_bytes(b), &buf[2..]))
}

/// The parameter type OIDs of a Parse's trailing section (`param_types`).
pub fn param_type_oids(param_types: &[u8]) -> Vec<u32> {
    let n = param_types
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    (0..n)
        .filter_map(|i| {
            let at = 2 + 4 * i;
            let b: [u8; 4] = param_types.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(b))
        })
        .collect()
}

/// Kind ('S' statement or 'P' portal) and name of a Describe or Close body.
pub fn target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a str), Malformed> {
    let (&kind, rest) = body.split_first().ok_or(Malformed(what))?;
    let (name, _) = read_cstr(rest).ok_or(Malformed(what))?;
    if kind != b'S' && kind != b'P' {
        return Err(Malformed(what));
    }
    Ok((kind, utf8(name, what)?))
}

/// Portal name and row limit of an Execute body.
pub fn execute(body: &[u8]) -> Result<(&str, i32), Malformed> {
    let (portal, rest) = read_cstr(body).ok_or(Malformed("Execute"))?;
    let (max_rows, _) = read_i32(rest).ok_or(Malformed("Execute"))?;
    Ok((utf8(portal, "Execute")?, max_rows))
}

fn cstr(out: &mut BytesMut, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.put_u8(0);
}

/// Encodes a Query.
pub fn encode_query(sql: &str, out: &mut BytesMut) {
    encode_query_bytes(sql.as_bytes(), out);
}

/// Encodes a Query whose text is the client's own bytes (in its client_encoding).
pub fn encode_query_bytes(sql: &[u8], out: &mut BytesMut) {
    let start = begin(out, b'Q');
    out.extend_from_slice(sql);
    out.put_u8(0);
    finish(out, start);
}

/// Encodes a Parse with raw parameter-type bytes (count + OIDs) as the client sent them.
pub fn encode_parse(name: &str, sql: &str, param_types: &[u8], out: &mut BytesMut) {
    let start = begin(out, b'P');
    cstr(out, name);
    cstr(out, sql);
    out.put_slice(param_types);
    finish(out, start);
}

/// Encodes a Close of a statement (`kind` b'S') or portal (b'P').
pub fn encode_close(kind: u8, name: &str, out: &mut BytesMut) {
    let start = begin(out, b'C');
    out.put_u8(kind);
    cstr(out, name);
    finish(out, start);
}

/// Encodes a Bind with no parameters and default result formats.
pub fn encode_bind_empty(portal: &str, statement: &str, out: &mut BytesMut) {
    let start = begin(out, b'B');
    cstr(out, portal);
    cstr(out, statement);
    out.put_i16(0);
    out.put_i16(0);
    out.put_i16(0);
    finish(out, start);
}

/// Encodes an Execute.
pub fn encode_execute(portal: &str, max_rows: i32, out: &mut BytesMut) {
    let start = begin(out, b'E');
    cstr(out, portal);
    out.put_i32(max_rows);
    finish(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        let mut b = BytesMut::new();
        encode_parse("s1", "SELECT $1", &[0, 1, 0, 0, 0, 23], &mut b);
        let p = parse_parse(&b[5..]).unwrap();
        assert_eq!(
            (p.name, p.sql, p.param_types),
            ("s1", &b"SELECT $1"[..], &[0u8, 1, 0, 0, 0, 23][..])
        );
        assert!(parse_parse(b"s1\0SELECT").is_err());
        // Bind "p1" "s1": one binary format, two params (NULL, 4 bytes), no result formats.
        let bind = b"p1\0s1\0\0\x01\0\x01\0\x02\xff\xff\xff\xff\0\0\0\x04abcd\0\0";
        assert_eq!(
            bind_params(bind).unwrap(),
            vec![(None, true), (Some(b"abcd".to_vec()), true)]
        );
        assert!(bind_params(b"p1\0s1\0\0\0\0\x01\0\0\0\x09ab").is_err());
        assert_eq!(
            param_type_oids(&[0, 2, 0, 0, 0, 23, 0, 0, 0, 0]),
            vec![23, 0]
        );
        let mut b = BytesMut::new();
        encode_execute("p", 5, &mut b);
        assert_eq!(execute(&b[5..]).unwrap(), ("p", 5));
        assert!(execute(b"p\0\0").is_err());
        assert_eq!(target(b"Sname\0", "Describe").unwrap(), (b'S', "name"));
        assert!(target(b"Xname\0", "Describe").is_err());
        assert!(target(b"", "Describe").is_err());
        let mut b = BytesMut::new();
        encode_bind_empty("", "st", &mut b);
        assert_eq!(bind_names(&b[5..]).unwrap(), ("", "st"));
        let mut b = BytesMut::new();
        encode_query("SELECT 1", &mut b);
        assert_eq!(query_sql(&b[5..]).unwrap(), b"SELECT 1");
    }
}
