//! Planning a large statement off the session's worker thread.
//!
//! Sessions share a few worker threads (one per CPU), and a message is planned inside the
//! synchronous scan of the client's bytes. A statement of hundreds of kilobytes that is not
//! a bulk INSERT (say `DELETE ... WHERE id IN (<100,000 ids>)`) takes the parser a second
//! or more, and every other session on that thread would wait. So before the scan, the
//! relay calls [`ClientSide::plan_ahead`]: the first complete Query or Parse of at least
//! [`PLAN_AHEAD_BYTES`] is planned on tokio's blocking pool while this session's task
//! awaits it, and `plan_text` takes the result when the scan reaches that statement.
//! Nothing is forwarded meanwhile, so responses stay in order.
//!
//! The plan is used only if the rules, the search_path, the statement's bytes and the
//! session's reading of them (encoding, lexing, certainty) are the same when the scan reaches it; otherwise (an
//! earlier message of the batch changes a setting, the server answers in between) the
//! scan plans it again itself, as it always did.

use std::sync::Arc;

use tandem_rules::{Plan, SessionReading};

use super::client::{ClientSide, Planned};
use crate::session::settings::TextSettings;
use crate::wire::protocol::frame::{parse_header, read_cstr, HEADER_LEN};
use crate::wire::protocol::tag;

/// Statements shorter than this are planned in the scan: under a few milliseconds.
pub(super) const PLAN_AHEAD_BYTES: usize = 16 * 1024;

/// A plan made ahead, and what it was made for.
#[derive(Debug)]
pub(super) struct Ahead {
    /// The statement's bytes.
    sql: Vec<u8>,
    /// The reading it was planned under.
    reading: ReadingKey,
    /// The rules version and search_path it was planned under.
    version: Planned,
    /// The plan (`None`: it names no ruled table).
    plan: Option<Arc<Plan>>,
}

/// An owned [`SessionReading`], to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadingKey {
    text: TextSettings,
    certain: bool,
}

impl ClientSide {
    /// Plans the first large Query or Parse fully buffered in `buf` on the blocking pool
    /// (see the module doc). `queue_empty()`: the server owes nothing for earlier messages.
    pub async fn plan_ahead(&mut self, buf: &[u8], queue_empty: impl FnOnce() -> bool) {
        let Some(sql) = first_large_statement(buf) else {
            return;
        };
        if self.ahead.as_ref().is_some_and(|a| a.sql == sql) {
            return;
        }
        // The reading `plan_text` will compute, if nothing changes before the scan.
        let key = ReadingKey {
            text: self.settings.now(),
            certain: queue_empty() || !self.settings_in_flight,
        };
        let (rules, path, sql, reading) = (
            Arc::clone(&self.rules),
            Arc::clone(&self.search_path),
            sql.to_vec(),
            key.clone(),
        );
        let planned = tokio::task::spawn_blocking(move || {
            let plan = rules.plan_text(&sql, reading.text.reading(reading.certain), &path);
            (sql, plan)
        })
        .await;
        // A panic in the planner surfaces in the scan, which plans it again.
        if let Ok((sql, plan)) = planned {
            self.ahead = Some(Ahead {
                sql,
                reading: key,
                version: self.planned(),
                plan,
            });
        }
    }

    /// The plan made ahead for `src` under `reading`, if there is one (taken: it is used
    /// once). Any other statement drops a stale one.
    pub(super) fn take_ahead(
        &mut self,
        src: &[u8],
        reading: &SessionReading<'_>,
    ) -> Option<Option<Arc<Plan>>> {
        let ahead = self.ahead.take()?;
        let same = ahead.version == self.planned()
            && ahead.sql == src
            && ahead.reading.certain == reading.certain
            && ahead.reading.text.lexing == reading.lexing
            && *ahead.reading.text.client_encoding == *reading.client_encoding;
        same.then_some(ahead.plan)
    }
}

/// The SQL of the first complete Query or Parse in `buf` of at least [`PLAN_AHEAD_BYTES`].
fn first_large_statement(mut buf: &[u8]) -> Option<&[u8]> {
    while let Ok(Some(header)) = parse_header(buf, usize::MAX) {
        let body = buf.get(HEADER_LEN..header.frame_len())?;
        if body.len() >= PLAN_AHEAD_BYTES {
            let sql = match header.tag {
                tag::QUERY => read_cstr(body).map(|(sql, _)| sql),
                tag::PARSE => read_cstr(body)
                    .and_then(|(_, rest)| read_cstr(rest))
                    .map(|(sql, _)| sql),
                _ => None,
            };
            if sql.is_some() {
                return sql;
            }
        }
        buf = &buf[header.frame_len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn the_first_complete_large_query_or_parse_is_found() {
        let big = "x".repeat(PLAN_AHEAD_BYTES);
        let mut buf = frame(b'Q', b"SELECT 1\0");
        buf.extend(frame(b'P', format!("s1\0{big}\0\0\0").as_bytes()));
        assert_eq!(first_large_statement(&buf), Some(big.as_bytes()));
        let query = frame(b'Q', format!("{big}\0").as_bytes());
        assert_eq!(first_large_statement(&query), Some(big.as_bytes()));
        // Not complete yet, or small: planned in the scan.
        assert_eq!(first_large_statement(&query[..query.len() - 1]), None);
        assert_eq!(first_large_statement(&frame(b'Q', b"SELECT 1\0")), None);
    }
}
