//! The server side of a ruled session: responses fixed against the expectations.
//!
//! Responses of untouched messages pass unchanged; for a mirrored write the zero-column
//! rows of a statement the client wrote without RETURNING are dropped, RowDescription
//! becomes NoData for its Describe, and the `SELECT n` tag becomes the client's
//! `INSERT 0 n` / `UPDATE n` / `DELETE n`; a rewritten read's RowDescription gets the
//! legacy table's origins back; a 23514 of an auto_partition write is held for a retry.

use std::collections::VecDeque;

use bytes::BytesMut;
use tandem_rules::ColumnOrigin;

use super::retry::{RetryJob, RetryKind};
use super::{data_row, Expect, Mirror, MsgKind, MsgMode, Reports, StmtFix};
use crate::session::framed::Action;
use crate::wire::protocol::backend::ErrorFields;
use crate::wire::protocol::frame::{begin, finish};

/// Server-to-client half: applies the expectations to the responses.
#[derive(Debug, Default)]
pub struct ServerSide;

impl ServerSide {
    /// Tags whose whole body the server side needs (RowDescription too, since a frame can
    /// only be replaced whole).
    pub fn inspects(tag: u8) -> bool {
        matches!(tag, b'C' | b'Z' | b'E' | b'T')
    }

    /// Decides one server message's fate.
    pub fn visit(tag: u8, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        Self::visit_with_retry(tag, body, queue, &mut None)
    }

    /// As [`visit`](Self::visit); a statement to run again after a missing partition is
    /// created is put in `retry_out` (its error and ReadyForQuery are held back).
    pub fn visit_with_retry(
        tag: u8,
        body: &[u8],
        queue: &mut VecDeque<Expect>,
        retry_out: &mut Option<RetryJob>,
    ) -> Action {
        Self::visit_all(tag, body, queue, retry_out, &mut Reports::default())
    }

    /// As [`visit_with_retry`](Self::visit_with_retry); the answer to Tandem's search_path
    /// probe is put in `probe_out` once its ReadyForQuery arrived.
    pub fn visit_all(
        tag: u8,
        body: &[u8],
        queue: &mut VecDeque<Expect>,
        retry_out: &mut Option<RetryJob>,
        reports: &mut Reports,
    ) -> Action {
        // Asynchronous messages can arrive at any point.
        if matches!(tag, b'N' | b'A' | b'S') {
            return Action::Forward;
        }
        if let Some(Expect::Probe { answer }) = queue.front_mut() {
            match tag {
                b'D' => answer.values = data_row(body).unwrap_or_default(),
                b'E' => answer.failed = true,
                b'Z' => {
                    if let Some(Expect::Probe { answer }) = queue.pop_front() {
                        reports.probe = Some(answer);
                    }
                }
                _ => {}
            }
            return Action::Drop;
        }
        if tag == b'Z' {
            while let Some(e) = queue.pop_front() {
                match e {
                    Expect::Query {
                        retry: Some(retry),
                        failed: Some(error),
                        ..
                    } => {
                        let mut ready = BytesMut::from(&[b'Z', 0, 0, 0, 5][..]);
                        ready.extend_from_slice(body);
                        *retry_out = Some(RetryJob {
                            retry: RetryKind::Simple(retry),
                            error,
                            ready,
                        });
                        return Action::Drop;
                    }
                    Expect::Query {
                        held: Some(mut held),
                        ..
                    } => {
                        held.extend_from_slice(&[b'Z', 0, 0, 0, 5]);
                        held.extend_from_slice(body);
                        return Action::Replace(held);
                    }
                    Expect::RetryExec {
                        retry,
                        failed: Some(error),
                        ..
                    } => {
                        // The rest of this batch, up to its Sync, was skipped by the server.
                        while let Some(e) = queue.pop_front() {
                            if matches!(e, Expect::Sync) {
                                break;
                            }
                        }
                        let mut ready = BytesMut::from(&[b'Z', 0, 0, 0, 5][..]);
                        ready.extend_from_slice(body);
                        *retry_out = Some(RetryJob {
                            retry: RetryKind::Extended(retry),
                            error,
                            ready,
                        });
                        return Action::Drop;
                    }
                    Expect::Sync | Expect::Query { .. } => break,
                    // Never answered before the ReadyForQuery: the server did not run it.
                    Expect::Msg {
                        mode: MsgMode::Replaces(name),
                        ..
                    } => reports.parses.push((name, false)),
                    Expect::Msg { .. } | Expect::RetryExec { .. } | Expect::Probe { .. } => {}
                }
            }
            return Action::Forward;
        }
        let Some(head) = queue.front_mut() else {
            return Action::Forward;
        };
        if tag == b'E' {
            // A mirrored write that found no partition of the target, alone in flight, with
            // auto_partition: hold the error; the client side makes the partition and runs
            // the statement again.
            let alone = queue.len() == 1;
            if let Some(Expect::Query {
                retry: Some(_),
                failed,
                ..
            }) = queue.front_mut()
            {
                let fields = ErrorFields::parse(body);
                if alone
                    && failed.is_none()
                    && fields.code.as_deref() == Some("23514")
                    && fields.message.starts_with("no partition of relation")
                {
                    let mut frame = BytesMut::with_capacity(body.len() + 5);
                    let start = begin(&mut frame, b'E');
                    frame.extend_from_slice(body);
                    finish(&mut frame, start);
                    *failed = Some(frame);
                    return Action::Drop;
                }
            }
            // The same for the Execute of a prepared write, when nothing but Tandem's own
            // hidden messages and the Sync follow it (anything else would have been skipped
            // by the server, and could not be replayed in order).
            if let Some(Expect::RetryExec { failed: None, .. }) = queue.front() {
                let fields = ErrorFields::parse(body);
                let after: Vec<&Expect> = queue.iter().skip(1).collect();
                let sync_at = after.iter().position(|e| matches!(e, Expect::Sync));
                let only_hidden = sync_at.is_some_and(|at| {
                    at + 1 == after.len()
                        && after[..at].iter().all(|e| {
                            matches!(
                                e,
                                Expect::Msg {
                                    mode: MsgMode::Hide,
                                    ..
                                }
                            )
                        })
                });
                if only_hidden
                    && fields.code.as_deref() == Some("23514")
                    && fields.message.starts_with("no partition of relation")
                {
                    let mut frame = BytesMut::with_capacity(body.len() + 5);
                    let start = begin(&mut frame, b'E');
                    frame.extend_from_slice(body);
                    finish(&mut frame, start);
                    if let Some(Expect::RetryExec { failed, .. }) = queue.front_mut() {
                        *failed = Some(frame);
                    }
                    return Action::Drop;
                }
            }
            // After an error the server skips everything up to the next Sync, and a
            // deferred tag must never be seen. A Parse that failed, or was skipped, created
            // nothing: the statement of that name is still the old one.
            while matches!(
                queue.front(),
                Some(Expect::Msg { .. } | Expect::RetryExec { .. })
            ) {
                if let Some(Expect::Msg {
                    mode: MsgMode::Replaces(name),
                    ..
                }) = queue.pop_front()
                {
                    reports.parses.push((name, false));
                }
            }
            if let Some(Expect::Query { held, .. }) = queue.front_mut() {
                *held = None;
            }
            return Action::Forward;
        }
        match head {
            // Handled above, before any other expectation.
            Expect::Probe { .. } => Action::Drop,
            Expect::Query {
                failed: Some(_), ..
            } => Action::Drop,
            Expect::Query {
                fixes, next, held, ..
            } => {
                let fix = fixes.get(*next).cloned().unwrap_or(StmtFix::Pass);
                if matches!(tag, b'C' | b'I') {
                    *next += 1;
                }
                match (fix, tag) {
                    (StmtFix::Hide, _) => Action::Drop,
                    (StmtFix::Defer, b'C') => {
                        *held = Some(command_complete(body));
                        Action::Drop
                    }
                    (StmtFix::Mirror(m), b'C') => fixed_tag(body, m, reports),
                    (StmtFix::Read(origins), b'T') => patch_origins(body, &origins),
                    (
                        StmtFix::Mirror(Mirror {
                            returning: false, ..
                        }),
                        b'T' | b'D',
                    ) => Action::Drop,
                    _ => Action::Forward,
                }
            }
            Expect::Msg { kind, mode } => {
                let kind = *kind;
                let action = match mode {
                    MsgMode::Pass => Action::Forward,
                    MsgMode::Hide => Action::Drop,
                    MsgMode::NoData if tag == b'T' => Action::Replace(no_data()),
                    MsgMode::NoData => Action::Forward,
                    MsgMode::Read(origins) if tag == b'T' => patch_origins(body, origins),
                    MsgMode::Read(_) => Action::Forward,
                    MsgMode::Replaces(name) => {
                        if kind.ends_with(tag) {
                            reports.parses.push((name.clone(), true));
                        }
                        Action::Forward
                    }
                    MsgMode::Mirror(m) => match tag {
                        b'D' if !m.returning => Action::Drop,
                        b'C' => fixed_tag(body, *m, reports),
                        _ => Action::Forward,
                    },
                };
                if kind.ends_with(tag) {
                    queue.pop_front();
                }
                action
            }
            Expect::RetryExec {
                failed: Some(_), ..
            } => Action::Drop,
            Expect::RetryExec { mirror, .. } => {
                let m = *mirror;
                let action = match tag {
                    b'D' if !m.returning => Action::Drop,
                    b'C' => fixed_tag(body, m, reports),
                    _ => Action::Forward,
                };
                if MsgKind::Execute.ends_with(tag) {
                    queue.pop_front();
                }
                action
            }
            Expect::Sync => Action::Forward,
        }
    }
}

/// A RowDescription whose fields' table OID and attribute number are replaced by the
/// known legacy origins. A body that does not parse is forwarded as it is.
fn patch_origins(body: &[u8], origins: &[Option<ColumnOrigin>]) -> Action {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    let start = begin(&mut out, b'T');
    out.extend_from_slice(body);
    finish(&mut out, start);
    let Some(count) = body.get(..2).map(|c| i16::from_be_bytes([c[0], c[1]])) else {
        return Action::Forward;
    };
    let mut at = 2usize;
    for i in 0..count.max(0) as usize {
        let Some(nul) = body.get(at..).and_then(|b| b.iter().position(|&c| c == 0)) else {
            return Action::Forward;
        };
        at += nul + 1;
        if body.len() < at + 18 {
            return Action::Forward;
        }
        if let Some(Some(origin)) = origins.get(i) {
            // +5: the frame header in `out`.
            out[5 + at..5 + at + 4].copy_from_slice(&origin.table_oid.to_be_bytes());
            out[5 + at + 4..5 + at + 6].copy_from_slice(&origin.attnum.to_be_bytes());
        }
        at += 18;
    }
    Action::Replace(out)
}

fn no_data() -> BytesMut {
    BytesMut::from(&[b'n', 0, 0, 0, 4][..])
}

/// CommandComplete for a mirrored write: `SELECT n` becomes the client's own tag.
/// The statement's rows are reported for its rule's counters.
fn fixed_tag(body: &[u8], mirror: Mirror, reports: &mut Reports) -> Action {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    let rows = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.strip_prefix("SELECT "))
        .and_then(|n| n.parse::<u64>().ok());
    let Some(rows) = rows else {
        return Action::Forward;
    };
    reports.mirrored.push((mirror.rule, rows));
    let mut tag = mirror.tag.tag(rows).into_bytes();
    tag.push(0);
    Action::Replace(command_complete(&tag))
}

/// A CommandComplete frame around a NUL-terminated tag.
fn command_complete(tag_with_nul: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(tag_with_nul.len() + 5);
    let start = begin(&mut out, b'C');
    out.extend_from_slice(tag_with_nul);
    finish(&mut out, start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::stats::RuleId;
    use std::sync::Arc;
    use tandem_rules::WriteTag;

    fn mirror(returning: bool) -> StmtFix {
        StmtFix::Mirror(Mirror {
            tag: WriteTag::Update,
            returning,
            rule: RuleId::NONE,
        })
    }

    fn bytes(a: Action) -> Option<Vec<u8>> {
        match a {
            Action::Replace(b) => Some(b.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn simple_query_fixes_tag_and_drops_rows() {
        let mut q = VecDeque::new();
        q.push_back(Expect::Query {
            fixes: Arc::from([StmtFix::Pass, mirror(false), StmtFix::Hide]),
            next: 0,
            held: None,
            retry: None,
            failed: None,
        });
        // Statement 1 untouched.
        assert!(matches!(
            ServerSide::visit(b'T', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"SELECT 1\0", &mut q),
            Action::Forward
        ));
        // Statement 2 mirrored without RETURNING.
        assert!(matches!(ServerSide::visit(b'T', b"", &mut q), Action::Drop));
        assert!(matches!(ServerSide::visit(b'D', b"", &mut q), Action::Drop));
        let c = bytes(ServerSide::visit(b'C', b"SELECT 3\0", &mut q)).unwrap();
        assert_eq!(&c[5..], b"UPDATE 3\0");
        assert!(matches!(
            ServerSide::visit(b'Z', b"I", &mut q),
            Action::Forward
        ));
        assert!(q.is_empty());
    }

    #[test]
    fn extended_fixes_describe_and_execute_and_skips_after_error() {
        let mut q = VecDeque::new();
        for e in [
            Expect::Msg {
                kind: MsgKind::Parse,
                mode: MsgMode::Pass,
            },
            Expect::Msg {
                kind: MsgKind::DescribeStatement,
                mode: MsgMode::NoData,
            },
            Expect::Msg {
                kind: MsgKind::Bind,
                mode: MsgMode::Pass,
            },
            Expect::Msg {
                kind: MsgKind::Execute,
                mode: MsgMode::Mirror(Mirror {
                    tag: WriteTag::Insert,
                    returning: false,
                    rule: RuleId::NONE,
                }),
            },
            Expect::Sync,
        ] {
            q.push_back(e);
        }
        assert!(matches!(
            ServerSide::visit(b'1', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b't', b"", &mut q),
            Action::Forward
        ));
        assert_eq!(
            bytes(ServerSide::visit(b'T', b"", &mut q)).unwrap(),
            b"n\0\0\0\x04"
        );
        assert!(matches!(
            ServerSide::visit(b'2', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(ServerSide::visit(b'D', b"", &mut q), Action::Drop));
        let c = bytes(ServerSide::visit(b'C', b"SELECT 2\0", &mut q)).unwrap();
        assert_eq!(&c[5..], b"INSERT 0 2\0");
        ServerSide::visit(b'Z', b"I", &mut q);
        assert!(q.is_empty());

        q.push_back(Expect::Msg {
            kind: MsgKind::Parse,
            mode: MsgMode::Hide,
        });
        q.push_back(Expect::Msg {
            kind: MsgKind::Bind,
            mode: MsgMode::Hide,
        });
        q.push_back(Expect::Msg {
            kind: MsgKind::Execute,
            mode: MsgMode::Pass,
        });
        q.push_back(Expect::Msg {
            kind: MsgKind::Bind,
            mode: MsgMode::Pass,
        });
        q.push_back(Expect::Sync);
        assert!(matches!(ServerSide::visit(b'1', b"", &mut q), Action::Drop));
        assert!(matches!(ServerSide::visit(b'2', b"", &mut q), Action::Drop));
        assert!(matches!(
            ServerSide::visit(b'E', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(q.front(), Some(Expect::Sync)));
        ServerSide::visit(b'Z', b"E", &mut q);
        assert!(q.is_empty());
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn deferred_copy_tag_is_dropped_on_error() {
        let mut q = VecDeque::new();
        q.push_back(Expect::Query {
            fixes: Arc::from([
                StmtFix::Hide,
                StmtFix::Hide,
                StmtFix::Defer,
                StmtFix::Hide,
                StmtFix::Hide,
            ]),
            next: 0,
            held: None,
            retry: None,
            failed: None,
        });
        assert!(matches!(
            ServerSide::visit(b'C', b"DO\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"TRUNCATE TABLE\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'G', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"COPY 2\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'E', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b'Z', b"I", &mut q),
            Action::Forward
        ));
        q.push_back(Expect::Query {
            fixes: Arc::from([StmtFix::Defer, StmtFix::Hide]),
            next: 0,
            held: None,
            retry: None,
            failed: None,
        });
        assert!(matches!(
            ServerSide::visit(b'C', b"COPY 2\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"SELECT 2\0", &mut q),
            Action::Drop
        ));
        match ServerSide::visit(b'Z', b"I", &mut q) {
            Action::Replace(b) => assert_eq!(&b[..], b"C\0\0\0\x0bCOPY 2\0Z\0\0\0\x05I"),
            other => panic!("{other:?}"),
        }
    }
}
