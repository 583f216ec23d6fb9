//! The session's search_path (and role and settings), as the server has it.
//!
//! A bare table name means whatever the session's search_path finds first, and only the
//! server knows that path for sure: a role or database default (`ALTER ROLE ... SET`),
//! `SET`, `SET LOCAL` undone at the end of the transaction, `set_config()`, `RESET`, a
//! `SET ROLE` when the path holds `"$user"`. So Tandem does not model these: it marks the
//! path stale whenever a statement may have changed it (and at the start of a session), and
//! before it plans the next statement that names a ruled table it asks the server, with a
//! hidden query whose every response the client never sees (a session that never names a
//! ruled table never asks). The question is only asked at
//! a quiet point (nothing in flight, no extended-protocol batch open, the transaction not
//! failed); a statement that names a ruled table waits for that point, or, inside an open
//! extended-protocol batch where waiting is impossible, is refused.
//!
//! The same question returns the session's role and settings, which shadow reads run with
//! (see `control::shadow`). While a rule samples reads, a statement that may change a
//! setting or the role (`SET`, `set_config`, `SET ROLE`, `RESET`, `DISCARD`, the end of a
//! transaction that did) makes them stale too, and they are asked again before the next
//! statement naming a ruled table; such a statement is never refused for it (inside an
//! open batch its read is simply not sampled). A session that sets `app.tenant` in each
//! transaction pays one hidden round trip per transaction that names a ruled table, and
//! only while sampling is on.
//!
//! PostgreSQL 18 reports `search_path` in ParameterStatus whenever it changes, before the
//! ReadyForQuery of the statement that changed it. There, after the session's first probe
//! (which confirms the role `"$user"` stands for), a stale path is taken from the server's
//! last report at the quiet point instead of asking again: a session that sets its
//! search_path per request pays no hidden round trip for it. The probe is still sent when
//! the role may have changed since and the path holds `"$user"`, and for the settings
//! shadow reads run with.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tandem_rules::{Refusal, Rejection, TableName, Unreadable};
use tracing::{debug, warn};

use super::client::ClientSide;
use super::refusal::{raise_before, raise_in_place};
use super::{plain_query, Expect, ProbeAnswer};
use crate::session::framed::Action;
use crate::wire::protocol::frontend;

/// Most custom setting names a session remembers for shadow reads.
const CUSTOM_NAMES: usize = 64;

/// The hidden query: the session's search_path, the role `"$user"` stands for (and shadow
/// reads run as), and the settings shadow reads run with, as a JSON array of
/// `[name, value]`: each setting a user may change that is not at its default, and each
/// custom one (`app.tenant`: the server does not list those) the session was seen to set
/// or a row level security policy reads, that has a value. So a policy reading them sees
/// in the shadow read what it saw in the application's.
pub fn probe_sql(custom: &[String]) -> String {
    let names = custom
        .iter()
        .map(|n| format!("'{}'", n.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT pg_catalog.current_setting('search_path'), current_user::pg_catalog.text, \
         (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(x.n, x.v)) FROM ( \
            SELECT s.name AS n, pg_catalog.current_setting(s.name) AS v FROM pg_catalog.pg_settings s \
             WHERE s.context = 'user' AND s.source NOT IN ('default', 'override') \
               AND s.name NOT IN ('client_encoding', 'search_path', 'application_name', 'role', \
                                  'session_authorization', 'transaction_isolation', \
                                  'transaction_read_only', 'transaction_deferrable') \
            UNION \
            SELECT c.n, pg_catalog.current_setting(c.n, true) FROM ( \
               SELECT pg_catalog.unnest(ARRAY[{names}]::pg_catalog.text[]) \
               UNION SELECT m[1] FROM pg_catalog.pg_policy p, pg_catalog.regexp_matches( \
                 pg_catalog.concat(pg_catalog.pg_get_expr(p.polqual, p.polrelid), ' ', \
                                   pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)), \
                 'current_setting\\(''([^'']+)''', 'g') AS m) AS c(n) \
             WHERE pg_catalog.current_setting(c.n, true) IS NOT NULL) AS x)::pg_catalog.text"
    )
}

impl ClientSide {
    /// Whether a statement naming a ruled table waits for the server to say the
    /// search_path (asked only then: a session that never names a ruled table never pays
    /// the round trip).
    pub fn needs_probe(&self) -> bool {
        (self.search_path_stale || self.settings_stale)
            && self.path_wanted
            && !self.rules.is_empty()
    }

    /// The hidden probe query, its expectation pushed on `queue`.
    pub fn probe(&mut self, queue: &mut VecDeque<Expect>) -> BytesMut {
        crate::control::stats::Stats::add(&self.stats.search_path_probes, 1);
        queue.push_back(Expect::Probe {
            answer: ProbeAnswer::default(),
        });
        let mut out = BytesMut::new();
        frontend::encode_query(&probe_sql(&self.custom_names), &mut out);
        out
    }

    /// At a quiet point where a probe is due: takes the search_path from the server's own
    /// last report instead, when the server reports it (PostgreSQL 18 and later), the
    /// session's role is known from an earlier probe and has not changed since (or the path
    /// does not use `"$user"`), and the settings are not wanted. True when nothing is left
    /// to ask.
    pub fn follow_report(&mut self) -> bool {
        if !self.search_path_stale || (self.settings_stale && self.sampling()) {
            return false;
        }
        let (Some(raw), Some(user)) = (self.settings.reported_search_path(), &self.probed_user)
        else {
            return false;
        };
        if self.role_touched && raw.contains("$user") {
            return false;
        }
        let Some(path) = tandem_rules::parse_search_path(&raw, user) else {
            return false;
        };
        debug!(search_path = %raw, "session search_path followed from the server's report");
        self.confirmed_path = Some(Arc::clone(&raw));
        self.search_path_stale = false;
        self.path_wanted = false;
        self.path_has_user = raw.contains("$user");
        crate::control::stats::Stats::add(&self.stats.search_path_reports, 1);
        if *self.search_path != *path {
            self.search_path = Arc::from(path);
            self.path_epoch += 1;
        }
        true
    }

    /// Takes the server's answer: the search_path Tandem resolves bare names with from
    /// now on.
    pub fn learn(&mut self, answer: ProbeAnswer) {
        self.search_path_stale = false;
        self.settings_stale = false;
        self.path_wanted = false;
        self.role_touched = false;
        if let Some(Some(user)) = answer.values.get(1) {
            self.probed_user = Some(user.clone());
        }
        if let (Some(Some(user)), Some(settings)) = (answer.values.get(1), answer.values.get(2)) {
            let settings: Vec<(String, String)> = settings
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            self.session_view = Some(Arc::new(super::SessionView {
                role: user.clone(),
                settings,
            }));
        }
        let (Some(Some(raw)), Some(Some(user))) = (answer.values.first(), answer.values.get(1))
        else {
            warn!(
                failed = answer.failed,
                "the server did not say the session's search_path; keeping the last known one"
            );
            return;
        };
        match tandem_rules::parse_search_path(raw, user) {
            Some(path) => {
                debug!(search_path = %raw, "session search_path confirmed by the server");
                self.confirmed_path = Some(Arc::from(raw.as_str()));
                self.path_has_user = raw.contains("$user");
                if *self.search_path != *path {
                    self.search_path = Arc::from(path);
                    self.path_epoch += 1;
                }
            }
            None => {
                warn!(search_path = %raw, "cannot read the session's search_path; keeping the last known one")
            }
        }
    }

    /// Marks the search_path stale when the server reported one other than the path
    /// Tandem last confirmed (PostgreSQL 18): a change Tandem did not see coming, e.g. a
    /// function calling `set_config('search_path', ...)`.
    pub(super) fn note_reported_change(&mut self) {
        if self.search_path_stale {
            return;
        }
        if let (Some(known), Some(reported)) =
            (&self.confirmed_path, self.settings.reported_search_path())
        {
            if **known != *reported {
                self.search_path_stale = true;
            }
        }
    }

    /// Whether the last scan stopped before a statement that waits for the search_path.
    pub fn take_waiting(&mut self) -> bool {
        std::mem::take(&mut self.waiting)
    }

    /// While the search_path is stale, before a message that runs a statement naming a
    /// ruled table (a Query or Parse of one, a Bind of a prepared one, an `EXECUTE` of a
    /// prepared one): stop the scan there (the relay asks the server, then visits the
    /// message again), or inside an open extended-protocol batch refuse it. `None` lets
    /// the message through.
    pub(super) fn wait_before(
        &mut self,
        tag: u8,
        body: &[u8],
        queue: &mut VecDeque<Expect>,
    ) -> Option<Action> {
        let path = self.search_path_stale;
        // The settings shadow reads run with matter only while a rule samples reads.
        let settings = self.settings_stale && self.sampling();
        if !(path || settings) || self.rules.is_empty() || self.transaction_failed {
            // A failed transaction runs nothing but its end; what follows is planned again.
            return None;
        }
        let name = match tag {
            b'Q' => {
                let src = frontend::query_sql(body).ok()?;
                self.rules.ruled_name(src).or_else(|| {
                    let text = String::from_utf8_lossy(src);
                    tandem_rules::executed_names(&text)
                        .iter()
                        .find_map(|name| self.prepared_ruled_name(name))
                })
            }
            b'P' => self.rules.ruled_name(frontend::parse_parse(body).ok()?.sql),
            b'B' => {
                let (_, statement) = frontend::bind_names(body).ok()?;
                self.prepared_ruled_name(statement)
            }
            _ => None,
        }?;
        if !self.extended_open {
            self.waiting = true;
            self.path_wanted = true;
            return Some(Action::Stop);
        }
        if !path {
            // Only the settings are unconfirmed: never refused for that; a read of this
            // batch is not sampled (see `maybe_sample`).
            return None;
        }
        let rejection = search_path_changing(&name);
        let mut out = BytesMut::new();
        if tag == b'Q' {
            queue.push_back(plain_query());
            let src = frontend::query_sql(body).unwrap_or_default();
            frontend::encode_query_bytes(&raise_before(&rejection, src), &mut out);
        } else {
            raise_in_place(&rejection, queue, &mut out);
        }
        Some(Action::Replace(out))
    }

    /// The ruled table name a prepared statement (protocol or SQL level) names, if any.
    fn prepared_ruled_name(&self, name: &str) -> Option<Vec<u8>> {
        let known = self
            .known
            .get(name)
            .or_else(|| self.sql_prepared.get(name))?;
        self.rules.ruled_name(known.sql.as_bytes())
    }

    /// Remembers the custom settings `src` may set (see [`probe_sql`]).
    pub(super) fn note_custom_names(&mut self, src: &[u8]) {
        for name in tandem_rules::custom_setting_names(src) {
            if !self.custom_names.contains(&name) && self.custom_names.len() < CUSTOM_NAMES {
                self.custom_names.push(name);
            }
        }
    }

    /// After a statement that `touch` describes was sent: marks the search_path (and the
    /// settings shadow reads run with) stale when it may change them, or end the
    /// transaction that changed them.
    pub(super) fn note_search_path(&mut self, touch: tandem_rules::SettingsTouch) {
        self.role_touched |= touch.role;
        if touch.settings {
            self.settings_stale = true;
            self.view_changed_in_transaction = true;
        } else if touch.ends_transaction && self.view_changed_in_transaction {
            self.settings_stale = true;
        }
        if touch.ends_transaction {
            self.view_changed_in_transaction = false;
        }
        if touch.search_path || (touch.role && self.path_has_user) {
            self.search_path_stale = true;
            self.search_path_changed_in_transaction = true;
        } else if touch.ends_transaction && self.search_path_changed_in_transaction {
            self.search_path_stale = true;
        }
    }
}

/// The refusal of a statement naming ruled table `name` (bare) while a search_path change
/// earlier in its query string or open batch cannot be confirmed first.
pub(super) fn search_path_changing(name: &[u8]) -> Rejection {
    Rejection::new(
        Refusal::Unreadable {
            table: TableName::new(None, &String::from_utf8_lossy(name)),
            why: Unreadable::SearchPathChanging,
        },
        tandem_rules::MirrorErrorPolicy::Fail,
    )
}
