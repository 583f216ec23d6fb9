//! Prepared statements under changing rules.
//!
//! A statement prepared (by Parse, or by SQL `PREPARE`) under one rules version may run
//! under another: each is remembered with the version it was planned under and planned
//! again on its next Bind, Describe or `EXECUTE`, with a hidden Close + Parse (or
//! `DEALLOCATE` + `PREPARE`) when the text the server holds must change.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tandem_rules::{MirrorErrorPolicy, Plan, Rejection};
use tracing::debug;

use super::client::{ClientSide, Known};
use super::refusal::{raise_in_place, refusal_of, stale_statement, undecodable_name};
use super::{Expect, MsgKind, MsgMode, Prepared};
use crate::session::framed::Action;
use crate::wire::protocol::frontend;

impl ClientSide {
    pub(super) fn parse(&mut self, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        let pass = Expect::Msg {
            kind: MsgKind::Parse,
            mode: MsgMode::Pass,
        };
        let Ok(parse) = frontend::parse_parse(body) else {
            if frontend::parse_is_well_formed(body) {
                // Only its name is not UTF-8.
                let mut out = BytesMut::new();
                raise_in_place(&undecodable_name(), queue, &mut out);
                return Action::Replace(out);
            }
            // Malformed: the server refuses it itself.
            queue.push_back(pass);
            return Action::Forward;
        };
        let stale = self.stale_execute(&String::from_utf8_lossy(parse.sql));
        if let Some(rejection) = stale {
            let mut out = BytesMut::new();
            self.statements.remove(parse.name);
            raise_in_place(&rejection, queue, &mut out);
            return Action::Replace(out);
        }
        let plan = self.plan_text(parse.sql, queue);
        // The text as a string: exact for UTF-8; otherwise it only ever names no ruled
        // table, or is refused (see `tandem_rules::reading`), so it is never re-sent.
        let sql = String::from_utf8_lossy(parse.sql).into_owned();
        let mut known = Known {
            sql: sql.clone(),
            param_types: parse.param_types.to_vec(),
            sent: sql.clone(),
            version: self.planned(),
            plan: plan.clone(),
            touch: tandem_rules::settings_touch(parse.sql),
            text: self.settings.now(),
            shape: std::sync::OnceLock::new(),
        };
        if let Some(Plan::Rewritten(statements)) = plan.as_deref() {
            if statements.len() == 1 {
                known.sent = statements[0].sql.clone();
            }
        }
        // A named statement Tandem has a record of: the server refuses the Parse (42P05)
        // unless the client dropped it by SQL DEALLOCATE, which Tandem does not follow. Keep
        // the old record aside until the server settles it (see `settle_parses`).
        let displaces = !parse.name.is_empty() && self.known.contains_key(parse.name);
        if displaces {
            let old = (
                self.known.get(parse.name).cloned(),
                self.statements.get(parse.name).cloned(),
            );
            self.displaced.insert(parse.name.to_string(), old);
        }
        if matches!(plan.as_deref(), Some(Plan::Reject(r)) if r.policy != MirrorErrorPolicy::Record)
        {
            // Refused: the server never gets this statement (and keeps the old one, if any).
            if displaces {
                self.displaced.remove(parse.name);
            } else {
                self.known.remove(parse.name);
            }
        } else {
            self.known.insert(parse.name.to_string(), known);
        }
        let pass = if displaces {
            Expect::Msg {
                kind: MsgKind::Parse,
                mode: MsgMode::Replaces(parse.name.to_string()),
            }
        } else {
            pass
        };
        let mut out = BytesMut::new();
        match plan.as_deref() {
            None | Some(Plan::Passthrough) => {
                // `EXECUTE q` of a rewritten SQL-prepared read: its rows keep their origins.
                let execute = match tandem_rules::executes_by_statement(&sql).as_slice() {
                    [Some(name)] => self.execute_origins(name),
                    _ => None,
                };
                match execute {
                    Some(origins) => {
                        self.statements
                            .insert(parse.name.to_string(), Prepared::Read(origins));
                    }
                    None => {
                        self.statements.remove(parse.name);
                    }
                }
                queue.push_back(pass);
                Action::Forward
            }
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => {
                let statement = &statements[0];
                match Prepared::of(statement, &self.stats.rules) {
                    Some(prepared) => {
                        self.statements.insert(parse.name.to_string(), prepared);
                    }
                    None => {
                        self.statements.remove(parse.name);
                    }
                }
                queue.push_back(pass);
                frontend::encode_parse(parse.name, &statement.sql, parse.param_types, &mut out);
                Action::Replace(out)
            }
            Some(Plan::Rewritten(_)) => {
                // Several statements in one Parse: Postgres refuses it itself.
                self.statements.remove(parse.name);
                queue.push_back(pass);
                Action::Forward
            }
            Some(Plan::Reject(rejection)) if rejection.policy == MirrorErrorPolicy::Record => {
                self.record(rejection, &sql);
                self.statements.remove(parse.name);
                queue.push_back(pass);
                Action::Forward
            }
            Some(other) => {
                // Refuse at the Parse's place in the stream: run a statement that raises the
                // refusal, hiding the ParseComplete/BindComplete of the messages injected to
                // run it. The server then skips the client's messages up to Sync, as after
                // any failed Parse, and the transaction state is exactly Postgres's own.
                if !displaces {
                    self.statements.remove(parse.name);
                }
                raise_in_place(&refusal_of(other), queue, &mut out);
                Action::Replace(out)
            }
        }
    }

    /// The server's word on Parses of names Tandem had a record of: a created statement
    /// keeps the new record; a refused (or skipped) Parse brings the old one back, since
    /// the old statement is the one the server still holds.
    pub fn settle_parses(&mut self, settled: Vec<(String, bool)>) {
        for (name, created) in settled {
            let Some((known, prepared)) = self.displaced.remove(&name) else {
                continue;
            };
            if created {
                continue;
            }
            match known {
                Some(k) => {
                    self.known.insert(name.clone(), k);
                }
                None => {
                    self.known.remove(&name);
                }
            }
            match prepared {
                Some(p) => {
                    self.statements.insert(name, p);
                }
                None => {
                    self.statements.remove(&name);
                }
            }
        }
    }

    /// Before a Bind or Describe of prepared statement `name`: if it was planned under older
    /// rules, plan it again and, when the text the server must hold changed, put a hidden
    /// Close + Parse of the new text in `out` (the caller appends the client's message).
    /// A statement the new rules refuse gets the refusal raised in its place, so the
    /// server fails the client's message and skips to Sync; it stays stale and is tried
    /// again on its next use. Returns whether `out` holds messages to send first.
    pub(super) fn refresh(
        &mut self,
        name: &str,
        queue: &mut VecDeque<Expect>,
        out: &mut BytesMut,
    ) -> bool {
        let version = self.planned();
        let Some(known) = self.known.get(name) else {
            // A statement made by SQL PREPARE, bound through the protocol.
            if let Err(rejection) = self.refresh_other_way(name, true) {
                raise_in_place(&rejection, queue, out);
                return true;
            }
            return false;
        };
        if known.version == version {
            return false;
        }
        let known = known.clone();
        let plan = self.plan_known(&known);
        let (sent, prepared) = match plan.as_deref() {
            None | Some(Plan::Passthrough) => (known.sql.clone(), None),
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => (
                statements[0].sql.clone(),
                Prepared::of(&statements[0], &self.stats.rules),
            ),
            Some(Plan::Rewritten(_)) => (known.sql.clone(), None),
            Some(Plan::Reject(rejection)) if rejection.policy == MirrorErrorPolicy::Record => {
                self.record(rejection, &known.sql);
                (known.sql.clone(), None)
            }
            Some(other) => {
                raise_in_place(&refusal_of(other), queue, out);
                return true;
            }
        };
        match prepared {
            Some(p) => {
                self.statements.insert(name.to_string(), p);
            }
            None => {
                self.statements.remove(name);
            }
        }
        let changed = sent != known.sent;
        self.known.insert(
            name.to_string(),
            Known {
                sent: sent.clone(),
                version,
                plan: plan.clone(),
                ..known.clone()
            },
        );
        if !changed {
            return false;
        }
        debug!(
            statement = name,
            "prepared statement planned again under new rules"
        );
        frontend::encode_close(b'S', name, out);
        frontend::encode_parse(name, &sent, &known.param_types, out);
        queue.push_back(Expect::Msg {
            kind: MsgKind::Close,
            mode: MsgMode::Hide,
        });
        queue.push_back(Expect::Msg {
            kind: MsgKind::Parse,
            mode: MsgMode::Hide,
        });
        true
    }

    /// Remembers a SQL-level `PREPARE` (unless the rules refused it, in which case the
    /// server never gets it).
    pub(super) fn remember_sql_prepared(
        &mut self,
        name: String,
        sql: &str,
        plan: Option<Arc<Plan>>,
    ) {
        let sent = match plan.as_deref() {
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => statements[0].sql.clone(),
            Some(Plan::Reject(r)) if r.policy != MirrorErrorPolicy::Record => {
                self.sql_prepared.remove(&name);
                return;
            }
            _ => sql.to_string(),
        };
        self.sql_prepared.insert(
            name,
            Known {
                sql: sql.to_string(),
                param_types: Vec::new(),
                sent,
                version: self.planned(),
                plan,
                touch: tandem_rules::SettingsTouch::default(),
                text: self.settings.now(),
                shape: std::sync::OnceLock::new(),
            },
        );
    }

    /// For each statement `sql` EXECUTEs that was PREPAREd under older rules: plan its
    /// PREPARE again; when the server must hold a different text, return `DEALLOCATE` +
    /// the new `PREPARE` to run (hidden) before the client's query. A PREPARE the new
    /// rules refuse fails the EXECUTE with that refusal.
    pub(super) fn refresh_sql_prepared(
        &mut self,
        sql: &str,
    ) -> Result<Vec<String>, Box<Rejection>> {
        let mut prefix = Vec::new();
        if self.sql_prepared.is_empty() && self.known.is_empty() {
            return Ok(prefix);
        }
        let version = self.planned();
        for name in tandem_rules::executed_names(sql) {
            let Some(known) = self.sql_prepared.get(&name).cloned() else {
                // A statement made by a protocol Parse, run by SQL EXECUTE.
                self.refresh_other_way(&name, false)?;
                continue;
            };
            if known.version == version {
                continue;
            }
            let (sent, plan) = self.planned_for(&known)?;
            if sent != known.sent {
                prefix.push(format!("DEALLOCATE {}", tandem_rules::quote_ident(&name)));
                prefix.push(sent.clone());
            }
            self.sql_prepared.insert(
                name,
                Known {
                    sent,
                    version,
                    plan,
                    ..known
                },
            );
        }
        Ok(prefix)
    }

    /// For a Parse whose text EXECUTEs prepared statements: the refusal when one of them
    /// was planned under older rules and must now run differently (a Parse cannot carry the
    /// hidden re-prepare a simple Query gets).
    fn stale_execute(&self, sql: &str) -> Option<Rejection> {
        if self.sql_prepared.is_empty() && self.known.is_empty() {
            return None;
        }
        let version = self.planned();
        tandem_rules::executed_names(sql)
            .into_iter()
            .find_map(|name| {
                let known = self
                    .sql_prepared
                    .get(&name)
                    .or_else(|| self.known.get(&name))?;
                if known.version.holds_under(&version) {
                    return None;
                }
                match self.sent_for(known) {
                    Err(rejection) => Some(*rejection),
                    Ok(sent) if sent != known.sent => Some(stale_statement(&name)),
                    Ok(_) => None,
                }
            })
    }

    /// What the server must hold for a remembered statement under the rules in force: the
    /// rewrite, or the client's own text; a refusal when the rules refuse it.
    fn sent_for(&self, known: &Known) -> Result<String, Box<Rejection>> {
        self.planned_for(known).map(|(sent, _)| sent)
    }

    /// [`sent_for`](Self::sent_for), with the plan it came from.
    fn planned_for(&self, known: &Known) -> Result<(String, Option<Arc<Plan>>), Box<Rejection>> {
        let plan = self.plan_known(known);
        let sent = match plan.as_deref() {
            None | Some(Plan::Passthrough) => known.sql.clone(),
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => statements[0].sql.clone(),
            Some(Plan::Rewritten(_)) => known.sql.clone(),
            Some(Plan::Reject(r)) if r.policy == MirrorErrorPolicy::Record => {
                self.record(r, &known.sql);
                known.sql.clone()
            }
            Some(other) => return Err(Box::new(refusal_of(other))),
        };
        Ok((sent, plan))
    }

    /// A prepared statement run the other way from how it was made: a SQL `PREPARE` bound
    /// through the protocol (`sql_level`), or a protocol Parse run by SQL `EXECUTE`. When
    /// it was planned under older rules and must now run differently, it cannot be prepared
    /// again from here (a Parse does not take a PREPARE's text; a PREPARE cannot carry a
    /// Parse's declared parameter types), so it is refused; when it runs the same, it is
    /// marked current.
    fn refresh_other_way(&mut self, name: &str, sql_level: bool) -> Result<(), Box<Rejection>> {
        let version = self.planned();
        let map = if sql_level {
            &self.sql_prepared
        } else {
            &self.known
        };
        let Some(known) = map.get(name).cloned() else {
            return Ok(());
        };
        if known.version == version {
            return Ok(());
        }
        if !known.version.holds_under(&version) && self.sent_for(&known)? != known.sent {
            return Err(Box::new(stale_statement(name)));
        }
        let map = if sql_level {
            &mut self.sql_prepared
        } else {
            &mut self.known
        };
        if let Some(k) = map.get_mut(name) {
            k.version = version;
        }
        Ok(())
    }
}
