//! The client side of a ruled session: what each client message becomes.
//!
//! A Query or Parse that writes a ruled table is replaced by its rewritten form (or by a
//! statement that raises Tandem's refusal), and every message that earns a response pushes
//! an [`Expect`] for the [server side](super::server). Binds and Executes follow the
//! prepared statements and portals that need a fix; COPY into a ruled table goes through a
//! session temp table and one mirrored INSERT.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use tandem_rules::{join_statements, MirrorErrorPolicy, Plan, Rejection, SettingsTouch};
use tracing::debug;

use super::refusal::{self, raise_before, raise_in_place, refusal_of, undecodable_name};
use super::{append_frame, plain_query, Expect, MsgKind, MsgMode, Prepared, StmtFix};
use crate::control::active_rules::ActiveRules;
use crate::control::drift::DriftSink;
use crate::control::shadow::Sampler;
use crate::control::watch::RulesWatch;
use crate::session::framed::Action;
use crate::session::settings::{SessionSettings, TextSettings};
use crate::wire::protocol::frontend;

/// A prepared statement as the server holds it: the client's SQL, what was sent for it,
/// and the rules version it was planned under.
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// The client's text.
    pub(super) sql: String,
    /// Parameter count and types, as the client sent them.
    pub(super) param_types: Vec<u8>,
    /// The text the server prepared (the rewrite, or the client's own).
    pub(super) sent: String,
    /// The rules version and search_path it was planned under.
    pub(super) version: Planned,
    /// The plan it was prepared with, so a Bind needs no second plan lookup (for a SQL
    /// `PREPARE`: the plan of the PREPARE, which gives its EXECUTEs' rows their origins).
    pub(super) plan: Option<Arc<Plan>>,
    /// What running it may do to the settings Tandem follows.
    pub(super) touch: SettingsTouch,
    /// How the session read its text when it was prepared (the server keeps that reading:
    /// it does not read the text again when a setting changes).
    pub(super) text: TextSettings,
    /// Its query shape's hash, computed at the first Bind that counts it (shadow reads).
    pub(super) shape: std::sync::OnceLock<u64>,
}

/// What a plan depends on besides the statement: the rules version and the session's
/// search_path (counted each time the server reports a different one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Planned {
    /// `RuleSet::version`.
    pub(super) rules: u64,
    /// The session's search_path changes so far.
    pub(super) path: u64,
    /// `RuleSet::layout` of those rules.
    pub(super) layout: u64,
    /// `RuleSet::watermarks` of those rules.
    pub(super) watermarks: u64,
}

impl Planned {
    /// Planned under rules that differ from `now` only in backfill watermarks that were
    /// set or moved on (none taken away), with the same search_path: the text the server
    /// holds is still right (a union read without the split, or split at an older
    /// watermark, reads more of legacy, the same rows), so a statement that cannot be
    /// prepared again where it is run need not be refused.
    pub(super) fn holds_under(&self, now: &Planned) -> bool {
        self == now
            || (self.layout == now.layout
                && self.path == now.path
                && self.watermarks & !now.watermarks == 0)
    }
}

/// Client-to-server half: rewrites and records expectations.
pub struct ClientSide {
    /// Where newer rules come from.
    pub(super) watch: Arc<RulesWatch>,
    /// Rules this session plans with: adopted from `watch` only at transaction boundaries.
    pub(super) rules: Arc<ActiveRules>,
    /// Every prepared statement of the session, so one planned under older rules is planned
    /// again on its next use.
    pub(super) known: HashMap<String, Known>,
    /// SQL-level prepared statements (`PREPARE name AS ...`), by name, likewise.
    pub(super) sql_prepared: HashMap<String, Known>,
    /// The session's search_path for resolving bare table names.
    pub(super) search_path: Arc<[String]>,
    /// Prepared statements that are rewritten, by name.
    pub(super) statements: HashMap<String, Prepared>,
    /// Portals bound to such statements, by name.
    pub(super) portals: HashMap<String, Prepared>,
    /// Where `record`-policy refusals are written.
    pub(super) drift: Option<DriftSink>,
    /// Where sampled reads go for shadow comparison.
    pub(super) sampler: Option<Arc<Sampler>>,
    /// The configuration, for creating a missing partition (auto_partition).
    pub(super) config: Arc<crate::config::Config>,
    /// Whether the session is inside a transaction block (last ReadyForQuery not idle).
    pub(super) in_transaction: bool,
    /// Bind frames of portals running an auto_partition mirrored write, by portal.
    pub(super) retry_binds: HashMap<String, BytesMut>,
    /// Execute messages since the last Sync (a retry outside a transaction must be the
    /// first, or it would drop the work before it).
    pub(super) executes_since_sync: u32,
    /// Whether Tandem's savepoint statements are prepared in this session.
    pub(super) savepoints_prepared: bool,
    /// The settings that decide how the server reads the session's SQL, as it reported them.
    pub(super) settings: Arc<SessionSettings>,
    /// A message sent since the queue was last empty may change those settings, so the
    /// reports may be behind what the server will read the next statement with.
    pub(super) settings_in_flight: bool,
    /// A statement of the current transaction may have changed them (so its end may
    /// change them back).
    pub(super) settings_changed_in_transaction: bool,
    /// The search_path must be asked of the server before the next statement naming a
    /// ruled table is planned (see `probe`).
    pub(super) search_path_stale: bool,
    /// A statement may have changed a setting or the role since the server last said
    /// them: asked again before the next statement naming a ruled table while a rule
    /// samples reads (see `probe`).
    pub(super) settings_stale: bool,
    /// A statement of the current transaction may have changed a setting or the role.
    pub(super) view_changed_in_transaction: bool,
    /// The session's role and settings as the server last said them: shadow reads run
    /// with them.
    pub(super) session_view: Option<Arc<super::SessionView>>,
    /// Custom settings (`app.tenant`) the session was seen to set: the probe asks their
    /// values.
    pub(super) custom_names: Vec<String>,
    /// The search_path holds `"$user"`, so a change of role changes it.
    pub(super) path_has_user: bool,
    /// The role `"$user"` stands for, as the last probe said; `None` before the first.
    pub(super) probed_user: Option<String>,
    /// A statement may have changed the role since the last probe.
    pub(super) role_touched: bool,
    /// The search_path text the server last confirmed (probe or report).
    pub(super) confirmed_path: Option<Arc<str>>,

    /// A statement of the current transaction may have changed the search_path.
    pub(super) search_path_changed_in_transaction: bool,
    /// Extended-protocol messages were sent since the last Sync.
    pub(super) extended_open: bool,
    /// The last ReadyForQuery said the transaction failed.
    pub(super) transaction_failed: bool,
    /// The last scan stopped before a message that waits for the search_path.
    pub(super) waiting: bool,
    /// A message waits for the search_path: ask the server at the next quiet point.
    pub(super) path_wanted: bool,
    /// How many times the server reported a search_path other than the one before: a
    /// prepared statement planned under an older one is planned again.
    pub(super) path_epoch: u64,
    /// Records of named statements a Parse replaced before the server said whether it
    /// created the new one (see `settle_parses`).
    pub(super) displaced: HashMap<String, (Option<Known>, Option<Prepared>)>,
    /// A large statement planned off the worker thread, for the scan to take.
    pub(super) ahead: Option<super::ahead::Ahead>,
    /// The proxy's counters: a mirrored statement carries its rule's slot in them.
    pub(super) stats: Arc<crate::control::stats::Stats>,
}

impl ClientSide {
    /// A client side for a session on the rules' database.
    pub fn new(
        watch: Arc<RulesWatch>,
        search_path: Arc<[String]>,
        settings: Arc<SessionSettings>,
        drift: Option<DriftSink>,
        sampler: Option<Arc<Sampler>>,
        config: Arc<crate::config::Config>,
        stats: Arc<crate::control::stats::Stats>,
    ) -> Self {
        Self {
            rules: watch.current(),
            watch,
            known: HashMap::new(),
            sql_prepared: HashMap::new(),
            search_path,
            statements: HashMap::new(),
            portals: HashMap::new(),
            drift,
            sampler,
            config,
            in_transaction: false,
            retry_binds: HashMap::new(),
            executes_since_sync: 0,
            savepoints_prepared: false,
            settings,
            settings_in_flight: false,
            settings_changed_in_transaction: false,
            search_path_stale: true,
            settings_stale: true,
            view_changed_in_transaction: false,
            session_view: None,
            custom_names: Vec::new(),
            path_has_user: true,
            probed_user: None,
            role_touched: false,
            confirmed_path: None,

            search_path_changed_in_transaction: false,
            extended_open: false,
            transaction_failed: false,
            waiting: false,
            path_wanted: false,
            path_epoch: 0,
            displaced: HashMap::new(),
            ahead: None,
            stats,
        }
    }

    /// What a plan made now depends on.
    pub(super) fn planned(&self) -> Planned {
        Planned {
            rules: self.rules.set.version,
            path: self.path_epoch,
            layout: self.rules.layout,
            watermarks: self.rules.watermarks,
        }
    }

    /// The session's settings, for the upstream loop to record the server's reports in.
    pub fn settings(&self) -> Arc<SessionSettings> {
        Arc::clone(&self.settings)
    }

    /// Plans the client's statement bytes as the server will read them (see
    /// [`ActiveRules::plan_text`]), then notes whether the statement may change how later
    /// ones read. `queue` holds what the server still owes: empty, every report of earlier
    /// statements has arrived.
    pub(super) fn plan_text(&mut self, src: &[u8], queue: &VecDeque<Expect>) -> Option<Arc<Plan>> {
        self.note_answered(queue);
        let text = self.settings.now();
        let reading = text.reading(!self.settings_in_flight);
        // A large statement was planned off the worker thread (see `mirror::ahead`).
        let plan = match self.take_ahead(src, &reading) {
            Some(planned) => planned,
            None => self.rules.plan_text(src, reading, &self.search_path),
        };
        self.note_settings(src);
        plan
    }

    /// With nothing owed by the server (`queue` empty), every report of earlier statements
    /// has arrived: the settings are certain again.
    fn note_answered(&mut self, queue: &VecDeque<Expect>) {
        if queue.is_empty() {
            self.settings_in_flight = false;
            if !self.in_transaction {
                self.settings_changed_in_transaction = false;
                self.search_path_changed_in_transaction = false;
            }
        }
    }

    /// Plans a statement remembered from earlier (a prepared statement planned again under
    /// new rules or another search_path) as the session read its text when it was prepared.
    pub(super) fn plan_known(&self, known: &Known) -> Option<Arc<Plan>> {
        self.rules.plan_text(
            known.sql.as_bytes(),
            known.text.reading(true),
            &self.search_path,
        )
    }
    /// Marks the settings uncertain until the server has answered a statement that may
    /// change them (see `tandem_rules::settings_touch`).
    pub(super) fn note_settings(&mut self, src: &[u8]) {
        if self.rules.is_empty() {
            return;
        }
        let touch = tandem_rules::settings_touch(src);
        if touch.settings {
            self.note_custom_names(src);
        }
        self.note_touch(touch);
    }

    /// As [`note_settings`](Self::note_settings), for a statement whose effect is known.
    pub(super) fn note_touch(&mut self, touch: SettingsTouch) {
        self.note_search_path(touch);
        if touch.sets {
            self.settings_in_flight = true;
            self.settings_changed_in_transaction = true;
        } else if touch.ends_transaction && self.settings_changed_in_transaction {
            self.settings_in_flight = true;
        }
    }

    /// Whether a rule samples reads (then shadow reads need the session's role and
    /// settings).
    pub(super) fn sampling(&self) -> bool {
        self.sampler.is_some()
            && self
                .rules
                .set
                .rules
                .iter()
                .any(|r| r.rule.sample_rate > 0.0)
    }

    /// Records whether the session is inside a transaction block, before a batch of
    /// client messages is looked at.
    pub fn set_in_transaction(&mut self, in_transaction: bool) {
        self.in_transaction = in_transaction;
    }

    /// Records whether the last ReadyForQuery said the transaction failed.
    pub fn set_transaction_failed(&mut self, failed: bool) {
        self.transaction_failed = failed;
    }

    /// The rules version this session plans with.
    pub fn version(&self) -> u64 {
        self.rules.set.version
    }

    /// Takes the newest rules if they changed. Call only at a transaction boundary (no
    /// request in flight, ReadyForQuery said idle): a transaction never sees two versions.
    /// Returns the version in force afterwards.
    pub fn adopt_latest(&mut self) -> u64 {
        if self.watch.version() != self.rules.set.version {
            let newer = self.watch.current();
            if newer.set.version != self.rules.set.version {
                debug!(
                    from = self.rules.set.version,
                    to = newer.set.version,
                    "session adopts new rules"
                );
                self.rules = newer;
            }
        }
        self.rules.set.version
    }

    /// Tags whose whole body the client side needs.
    pub fn inspects(tag: u8) -> bool {
        matches!(tag, b'Q' | b'P' | b'B' | b'D' | b'E' | b'C')
    }

    /// Decides one client message's fate and records what its responses need.
    pub fn visit(&mut self, tag: u8, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        self.note_answered(queue);
        if self.waits_for_parse(tag, body) {
            self.waiting = true;
            return Action::Stop;
        }
        if matches!(tag, b'Q' | b'P' | b'B') {
            self.note_reported_change();
        }
        if self.search_path_stale || self.settings_stale {
            if let Some(action) = self.wait_before(tag, body, queue) {
                return action;
            }
        }
        let action = self.visit_message(tag, body, queue);
        match tag {
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => self.extended_open = true,
            b'S' => self.extended_open = false,
            _ => {}
        }
        action
    }

    /// A Bind or Describe, in a new batch, of a statement whose re-Parse the server has not
    /// settled yet (see `settle_parses`): it waits for the answer, which says which
    /// statement of that name the server holds. (In the same batch as the Parse it needs no
    /// wait: a refused Parse makes the server skip it.)
    fn waits_for_parse(&self, tag: u8, body: &[u8]) -> bool {
        if self.displaced.is_empty() || self.extended_open {
            return false;
        }
        let name = match tag {
            b'B' => frontend::bind_names(body)
                .ok()
                .map(|(_, statement)| statement),
            b'D' => match frontend::target(body, "Describe") {
                Ok((b'S', name)) => Some(name),
                _ => None,
            },
            _ => None,
        };
        name.is_some_and(|n| self.displaced.contains_key(n))
    }

    /// [`visit`](Self::visit) once the message may be planned.
    fn visit_message(&mut self, tag: u8, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        let msg = |kind, mode| Expect::Msg { kind, mode };
        match tag {
            b'Q' => self.query(body, queue),
            b'P' => self.parse(body, queue),
            b'B' => {
                let mut out = BytesMut::new();
                if frontend::bind_names(body).is_err() && frontend::bind_names_present(body) {
                    // Names that are not UTF-8: Tandem could not tell which statement runs.
                    raise_in_place(&undecodable_name(), queue, &mut out);
                    return Action::Replace(out);
                }
                let mut refreshed = false;
                if let Ok((_, statement)) = frontend::bind_names(body) {
                    if let Some(touch) = self.known.get(statement).map(|k| k.touch) {
                        self.note_touch(touch);
                    }
                    refreshed = self.refresh(statement, queue, &mut out);
                    if self.sampler.is_some() {
                        if let Some(known) = self.known.get(statement) {
                            self.maybe_sample(
                                &known.sql,
                                known.plan.as_deref(),
                                Some((body, &known.param_types)),
                                Some(&known.shape),
                            );
                        }
                    }
                }
                if let Ok((portal, statement)) = frontend::bind_names(body) {
                    match self.auto_partition_bind(statement, body) {
                        Some(frame) => {
                            self.retry_binds.insert(portal.to_string(), frame);
                        }
                        None => {
                            self.retry_binds.remove(portal);
                        }
                    }
                    match self.statements.get(statement) {
                        Some(m) => {
                            self.portals.insert(portal.to_string(), m.clone());
                        }
                        None => {
                            self.portals.remove(portal);
                        }
                    }
                }
                queue.push_back(msg(MsgKind::Bind, MsgMode::Pass));
                if refreshed {
                    append_frame(&mut out, b'B', body);
                    return Action::Replace(out);
                }
                Action::Forward
            }
            b'D' => {
                let mut out = BytesMut::new();
                let mut refreshed = false;
                if let Ok((b'S', name)) = frontend::target(body, "Describe") {
                    refreshed = self.refresh(name, queue, &mut out);
                }
                let (kind, fix) = match frontend::target(body, "Describe") {
                    Ok((b'S', name)) => (MsgKind::DescribeStatement, self.statements.get(name)),
                    Ok((_, name)) => (MsgKind::DescribePortal, self.portals.get(name)),
                    Err(_) => (MsgKind::DescribePortal, None),
                };
                let mode = match fix {
                    Some(Prepared::Mirror(m)) if !m.returning => MsgMode::NoData,
                    Some(Prepared::Read(origins)) => MsgMode::Read(Arc::clone(origins)),
                    _ => MsgMode::Pass,
                };
                queue.push_back(msg(kind, mode));
                if refreshed {
                    append_frame(&mut out, b'D', body);
                    return Action::Replace(out);
                }
                Action::Forward
            }
            b'E' => {
                let Ok((portal, max_rows)) = frontend::execute(body) else {
                    queue.push_back(msg(MsgKind::Execute, MsgMode::Pass));
                    return Action::Forward;
                };
                let first = self.executes_since_sync == 0;
                self.executes_since_sync += 1;
                if let (Some(Prepared::Mirror(m)), Some(bind)) =
                    (self.portals.get(portal), self.retry_binds.get(portal))
                {
                    if self.in_transaction || first {
                        let (m, bind) = (*m, bind.clone());
                        return self.arm_retry(portal, m, bind, queue);
                    }
                }
                match self.portals.get(portal) {
                    Some(Prepared::Mirror(m)) => {
                        queue.push_back(msg(MsgKind::Execute, MsgMode::Mirror(*m)));
                        // A write runs to completion on its first Execute; the rewritten
                        // SELECT would stop at the row limit and never send the write's tag.
                        if max_rows != 0 {
                            let mut out = BytesMut::new();
                            frontend::encode_execute(portal, 0, &mut out);
                            return Action::Replace(out);
                        }
                        Action::Forward
                    }
                    Some(Prepared::Read(_)) | None => {
                        queue.push_back(msg(MsgKind::Execute, MsgMode::Pass));
                        Action::Forward
                    }
                }
            }
            b'C' => {
                match frontend::target(body, "Close") {
                    Ok((b'S', name)) => {
                        self.statements.remove(name);
                        self.known.remove(name);
                    }
                    Ok((_, name)) => {
                        self.portals.remove(name);
                    }
                    Err(_) => {}
                }
                queue.push_back(msg(MsgKind::Close, MsgMode::Pass));
                Action::Forward
            }
            b'S' => {
                self.executes_since_sync = 0;
                queue.push_back(Expect::Sync);
                Action::Forward
            }
            b'F' => {
                queue.push_back(Expect::Query {
                    fixes: Arc::from([]),
                    next: 0,
                    held: None,
                    retry: None,
                    failed: None,
                });
                Action::Forward
            }
            _ => Action::Forward,
        }
    }

    fn query(&mut self, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        let Ok(src) = frontend::query_sql(body) else {
            queue.push_back(plain_query());
            return Action::Forward;
        };
        let text = String::from_utf8_lossy(src);
        let sql: &str = &text;
        // DEALLOCATE / DISCARD ALL are not tracked on purpose: forgetting a statement here
        // could let one planned under older rules run unplanned, while remembering one the
        // server dropped at worst re-creates it on a stale Bind.
        // EXECUTE of a statement PREPAREd under older rules: prepare it again first.
        let prefix = match self.refresh_sql_prepared(sql) {
            Ok(prefix) => prefix,
            Err(rejection) => {
                let mut out = BytesMut::new();
                queue.push_back(plain_query());
                frontend::encode_query_bytes(&raise_before(&rejection, src), &mut out);
                return Action::Replace(out);
            }
        };
        let path_has_user = self.path_has_user;
        let mut plan = self.plan_text(src, queue);
        if plan.is_some()
            && self.rules.search_path_changes_before_ruled(
                src,
                self.settings.now().lexing,
                path_has_user,
            )
        {
            let name = self.rules.ruled_name(src).unwrap_or_default();
            plan = Some(Arc::new(Plan::Reject(super::probe::search_path_changing(
                &name,
            ))));
        }
        self.maybe_sample(sql, plan.as_deref(), None, None);
        if !matches!(plan.as_deref(), Some(Plan::Reject(r)) if r.policy != MirrorErrorPolicy::Record)
        {
            for (name, piece) in tandem_rules::prepared_statements(sql) {
                // Read as the planner reads only when the whole text is (else no piece
                // names a ruled table as the session reads it).
                let piece_plan = match plan {
                    Some(_) => self.rules.plan(piece, &self.search_path),
                    None => None,
                };
                self.remember_sql_prepared(name, piece, piece_plan);
            }
        }
        let mut out = BytesMut::new();
        // `None` sends the client's own bytes.
        let (send, fixes): (Option<String>, Arc<[StmtFix]>) = match plan.as_deref() {
            None | Some(Plan::Passthrough) => (None, Arc::from([])),
            Some(Plan::Rewritten(statements)) => {
                debug!(statements = statements.len(), "query rewritten");
                (
                    Some(join_statements(statements)),
                    statements
                        .iter()
                        .map(|s| StmtFix::of(s, &self.stats.rules))
                        .collect(),
                )
            }
            Some(Plan::Reject(rejection)) if rejection.policy == MirrorErrorPolicy::Record => {
                self.record(rejection, sql);
                (None, Arc::from([]))
            }
            Some(plan @ Plan::CopyIn(copy)) => match self.copy_in(copy) {
                Some((sql, fixes)) => (Some(sql), fixes),
                None => {
                    queue.push_back(plain_query());
                    frontend::encode_query_bytes(&raise_before(&refusal_of(plan), src), &mut out);
                    return Action::Replace(out);
                }
            },
            Some(other) => {
                queue.push_back(plain_query());
                frontend::encode_query_bytes(&raise_before(&refusal_of(other), src), &mut out);
                return Action::Replace(out);
            }
        };
        // auto_partition: the write may be run again once its partition exists.
        let (send, fixes, retry) = match plan.as_deref() {
            Some(Plan::Rewritten(statements)) if prefix.is_empty() => {
                match self.with_retry(statements) {
                    Some((send, fixes, retry)) => (Some(send), fixes, Some(retry)),
                    None => (send, fixes, None),
                }
            }
            _ => (send, fixes, None),
        };
        let fixes = match retry {
            None => self.with_execute_origins(sql, fixes),
            Some(_) => fixes,
        };
        let untouched = prefix.is_empty()
            && fixes.is_empty()
            && send.as_deref().is_none_or(|s| s.as_bytes() == src);
        if untouched {
            queue.push_back(plain_query());
            return Action::Forward;
        }
        let fixes: Arc<[StmtFix]> = prefix
            .iter()
            .map(|_| StmtFix::Hide)
            .chain(fixes.iter().cloned())
            .collect();
        let mut text = prefix.join(";\n").into_bytes();
        if !text.is_empty() {
            text.extend_from_slice(b";\n");
        }
        text.extend_from_slice(send.as_deref().map_or(src, str::as_bytes));
        queue.push_back(Expect::Query {
            fixes,
            next: 0,
            held: None,
            retry,
            failed: None,
        });
        frontend::encode_query_bytes(&text, &mut out);
        Action::Replace(out)
    }

    /// Records a refusal the rule's `record` policy lets run (see [`refusal::record`]).
    pub(super) fn record(&self, rejection: &Rejection, sql: &str) {
        refusal::record(self.drift.as_ref(), &self.rules.set, rejection, sql);
    }

    /// `COPY legacy FROM STDIN` in a simple Query: the rows go to a session temp table with
    /// the COPY's own column list and options (so the client's tag is the real `COPY n`),
    /// then one mirrored INSERT moves them into legacy and target in the same transaction
    /// (trying a plain insert into the mirror first: [`tandem_rules::CopyIn::mirror_statement`]).
    /// Tandem's added statements are hidden from the client. Each column list has a temp
    /// table of its own, so a later COPY with other columns finds its columns. `FREEZE` is
    /// checked on the legacy table once the rows have arrived, as the server checks it.
    fn copy_in(&self, copy: &tandem_rules::CopyIn) -> Option<(String, Arc<[StmtFix]>)> {
        let cols = copy
            .columns
            .iter()
            .map(|c| tandem_rules::quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let staging = copy_table_name(&copy.table.to_string(), &cols);
        let temp = format!("pg_temp.{staging}");
        let insert = format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {temp}",
            copy.table
        );
        let mirror_sql = match tandem_rules::plan(&insert, &self.rules.set, &self.search_path) {
            Plan::Rewritten(statements) if statements.len() == 1 => statements[0].sql.clone(),
            _ => return None,
        };
        let create = format!(
            "DO $tandem$ BEGIN IF to_regclass('{temp}') IS NULL THEN \
             CREATE TEMP TABLE {staging} AS SELECT {cols} FROM {} WITH NO DATA; END IF; END $tandem$",
            copy.table
        );
        let mut statements = vec![
            (copy.columns_check(), StmtFix::Hide),
            (create, StmtFix::Hide),
            (format!("TRUNCATE {temp}"), StmtFix::Hide),
            (
                format!("COPY {temp} ({cols}) FROM STDIN {}", copy.options),
                StmtFix::Defer,
            ),
        ];
        statements.extend(copy.freeze_check().map(|check| (check, StmtFix::Hide)));
        statements.push((copy.mirror_statement(&mirror_sql), StmtFix::Hide));
        statements.push((format!("TRUNCATE {temp}"), StmtFix::Hide));
        let sql = statements
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(";\n");
        Some((sql, statements.iter().map(|(_, f)| f.clone()).collect()))
    }
}

/// The session temp table a COPY into `table` of columns `cols` lands in first.
fn copy_table_name(table: &str, cols: &str) -> String {
    let safe = tandem_rules::name_part(table);
    let hash = [table, "\0", cols]
        .iter()
        .flat_map(|s| s.bytes())
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    format!("tandem_copy_{safe}_{:08x}", hash as u32)
}
