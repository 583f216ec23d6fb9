//! Wire transcripts: frames turned into one comparable line each, with table names and
//! OIDs replaced by placeholders and volatile values masked.

use super::VOLATILE_COLUMNS;

pub(super) fn oid_name(oid: u32, oids: &[(u32, &'static str)]) -> String {
    if oid == 0 {
        return "0".into();
    }
    oids.iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("oid {oid}"))
}

/// One line per frame, comparable across the twins: table names (in errors, values such as
/// an EXPLAIN's plan, and result column names), table OIDs and their row types' OIDs become
/// placeholders, values of [`VOLATILE_COLUMNS`] become `<set>`/`NULL`, DataRows of one
/// result are sorted (RETURNING has no defined order), and server-internal error fields
/// (file, line, routine) are dropped. Everything else is kept: full command tags,
/// RowDescription fields (name, table, attnum, type, size, modifier, format), parameter
/// types, NoData, errors (SQLSTATE, message, detail, hint, position) and the transaction
/// status of ReadyForQuery.
pub fn transcript(
    frames: &[(u8, Vec<u8>)],
    names: &[(String, &'static str)],
    oids: &[(u32, &'static str)],
) -> Vec<String> {
    let rename = |s: &str| {
        let mut s = s.to_string();
        for (name, placeholder) in names {
            s = s.replace(name.as_str(), placeholder);
        }
        s
    };
    let mut out: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    let mut volatile: Vec<bool> = Vec::new();
    for (tag, body) in frames {
        let mut r = Reader(body);
        if *tag != b'D' && !rows.is_empty() {
            rows.sort();
            out.append(&mut rows);
        }
        let line = match tag {
            b'T' => {
                let n = r.i16();
                volatile.clear();
                let fields: Vec<String> = (0..n)
                    .map(|_| {
                        let name = rename(&r.cstr());
                        volatile.push(VOLATILE_COLUMNS.contains(&name.as_str()));
                        let table = oid_name(r.u32(), oids);
                        let attnum = r.i16();
                        let (ty, len, modifier, format) = (r.u32(), r.i16(), r.i32(), r.i16());
                        // A table's row type has an OID of its own: a placeholder too.
                        let ty = oids
                            .iter()
                            .find(|(o, _)| *o == ty)
                            .map_or_else(|| ty.to_string(), |(_, n)| n.to_string());
                        format!("{name} table={table} attnum={attnum} type={ty} len={len} mod={modifier} fmt={format}")
                    })
                    .collect();
                format!("RowDescription [{}]", fields.join("; "))
            }
            b'D' => {
                let n = r.i16() as usize;
                let values: Vec<String> = (0..n)
                    .map(|i| {
                        let len = r.i32();
                        let value = if len < 0 {
                            "NULL".to_string()
                        } else {
                            rename(&String::from_utf8_lossy(r.take(len as usize)))
                        };
                        if volatile.get(i).copied().unwrap_or(false) && value != "NULL" {
                            "<set>".to_string()
                        } else {
                            value
                        }
                    })
                    .collect();
                rows.push(format!("DataRow {values:?}"));
                continue;
            }
            b'C' => format!("CommandComplete {}", r.cstr()),
            b'E' | b'N' => {
                let mut fields = Vec::new();
                loop {
                    let code = r.u8();
                    if code == 0 {
                        break;
                    }
                    let value = r.cstr();
                    if matches!(code, b'V' | b'C' | b'M' | b'D' | b'H' | b'P') {
                        let value = if code == b'D' {
                            mask_failing_row(&value)
                        } else {
                            value
                        };
                        fields.push(format!("{}={}", code as char, rename(&value)));
                    }
                }
                let kind = if *tag == b'E' { "Error" } else { "Notice" };
                format!("{kind} {}", fields.join(" | "))
            }
            b'Z' => format!("ReadyForQuery {}", r.u8() as char),
            b't' => {
                let n = r.i16();
                let types: Vec<u32> = (0..n).map(|_| r.u32()).collect();
                format!("ParameterDescription {types:?}")
            }
            b'S' => format!("ParameterStatus {}={}", r.cstr(), r.cstr()),
            b'1' => "ParseComplete".into(),
            b'2' => "BindComplete".into(),
            b'3' => "CloseComplete".into(),
            b'n' => "NoData".into(),
            b'I' => "EmptyQueryResponse".into(),
            b's' => "PortalSuspended".into(),
            other => format!("message {:?} {:?}", *other as char, body),
        };
        out.push(line);
    }
    rows.sort();
    out.append(&mut rows);
    out
}

/// The detail `Failing row contains (...)` with uuid and timestamp values (the volatile
/// columns) shown as `<set>`.
fn mask_failing_row(detail: &str) -> String {
    let Some(row) = detail.strip_prefix("Failing row contains (") else {
        return detail.to_string();
    };
    let volatile = |v: &str| {
        let uuid = v.len() == 36 && v.matches('-').count() == 4;
        let timestamp = v.len() > 19 && v.as_bytes().get(4) == Some(&b'-') && v.contains(':');
        uuid || timestamp
    };
    let values: Vec<&str> = row
        .trim_end_matches(").")
        .split(", ")
        .map(|v| if volatile(v) { "<set>" } else { v })
        .collect();
    format!("Failing row contains ({}).", values.join(", "))
}

/// Big-endian reader over a message body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn i16(&mut self) -> i16 {
        let b = self.take(2);
        if b.len() < 2 {
            return 0;
        }
        i16::from_be_bytes([b[0], b[1]])
    }
    fn i32(&mut self) -> i32 {
        let b = self.take(4);
        if b.len() < 4 {
            return 0;
        }
        i32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    fn u32(&mut self) -> u32 {
        self.i32() as u32
    }
    fn cstr(&mut self) -> String {
        let end = self.0.iter().position(|b| *b == 0).unwrap_or(self.0.len());
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.take(end + 1);
        s
    }
}

/// A transcript without error positions (`P=`): an error the server raises on Tandem's
/// rewritten text points into that text, not the client's.
pub fn without_positions(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| match l.find(" | P=") {
            Some(at) if l.starts_with("Error ") || l.starts_with("Notice ") => l[..at].to_string(),
            _ => l,
        })
        .collect()
}
