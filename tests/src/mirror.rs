//! Helpers for the dual-write tests: rules, twin tables, parity checks and wire transcripts.
//!
//! A dual-write test proves two things at once: the target holds exactly the legacy rows,
//! and the client saw exactly what Postgres would have answered without Tandem. For the
//! second, every test prepares *twins*: one legacy/target pair written through a proxy that
//! has a rule on it, and an identical pair written directly with no rule. The same
//! statements run against both, and the normalized wire transcripts (tags, RowDescription
//! down to table OID and attnum, rows, errors, transaction status) must be equal.
//!
//! Rules are built as TOML and read with [`Config::parse`], the operator's own path, so the
//! tests need no dependency on the rules crate.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tandem::config::Config;
use tandem::RunningProxy;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::{pg, proxy_config, raw, start_proxy_with, unique};

/// Columns every legacy table has, in table order: the mirrored columns.
pub const LEGACY_COLUMNS: &str = "id, tenant, amount, note, score, token, created_at";

/// Legacy columns whose values are the same in the twins when the same statements run in
/// the same order with the same `setseed` (`now()` and `gen_random_uuid()` are not).
pub const STABLE_COLUMNS: &str = "id, tenant, amount, note, score";

/// Column names whose values differ between twins by nature; transcripts show only whether
/// they are NULL.
pub const VOLATILE_COLUMNS: &[&str] = &["created_at", "token", "_migrated_at"];

/// One `[[rule]]`, written as TOML so it goes through the same parsing as a config file.
#[derive(Debug, Clone)]
pub struct RuleToml {
    /// Legacy table (`public.x`).
    pub table: String,
    /// Target table, when not the default `<table>_v2`.
    pub target: Option<String>,
    /// `off`, `dual_write`...
    pub mode: String,
    /// Key columns; empty means the legacy primary key plus the target's partition key.
    pub key: Vec<String>,
    /// `fail` or `record`.
    pub on_mirror_error: String,
    /// Target-only columns and their expressions.
    pub set: Vec<(String, String)>,
}

impl RuleToml {
    /// A `dual_write` rule on `public.<table>` with the default target, key and policy.
    pub fn dual_write(table: &str) -> Self {
        Self {
            table: format!("public.{table}"),
            target: None,
            mode: "dual_write".into(),
            key: Vec::new(),
            on_mirror_error: "fail".into(),
            set: Vec::new(),
        }
    }

    /// Sets the target table (schema-qualified).
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Sets the key columns.
    pub fn key(mut self, key: &[&str]) -> Self {
        self.key = key.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Sets the mode (`off`, `dual_write`, ...).
    pub fn mode(mut self, mode: &str) -> Self {
        self.mode = mode.to_string();
        self
    }

    /// Uses the `record` policy.
    pub fn record(mut self) -> Self {
        self.on_mirror_error = "record".into();
        self
    }

    /// Adds a target-only column filled by `expr`.
    pub fn set(mut self, column: &str, expr: &str) -> Self {
        self.set.push((column.to_string(), expr.to_string()));
        self
    }

    /// The `[[rule]]` table.
    pub fn to_toml(&self) -> String {
        let list = |items: Vec<String>| format!("[{}]", items.join(", "));
        let mut out = format!(
            "[[rule]]\ntable = {}\nmode = {}\non_mirror_error = {}\nkey = {}\n",
            toml_str(&self.table),
            toml_str(&self.mode),
            toml_str(&self.on_mirror_error),
            list(self.key.iter().map(|k| toml_str(k)).collect()),
        );
        if let Some(target) = &self.target {
            out.push_str(&format!("target = {}\n", toml_str(target)));
        }
        if !self.set.is_empty() {
            let pairs = self
                .set
                .iter()
                .map(|(c, e)| format!("[{}, {}]", toml_str(c), toml_str(e)))
                .collect();
            out.push_str(&format!("set = {}\n", list(pairs)));
        }
        out
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The test proxy config (upstream = the test database) with these rules, parsed and
/// validated as a config file would be.
pub fn config_with(rules: &[RuleToml]) -> Config {
    let text: String = rules.iter().map(|r| r.to_toml() + "\n").collect();
    let mut config = proxy_config();
    config.rules = Config::parse(&text, "dual-write test rules")
        .unwrap_or_else(|e| panic!("test rules do not parse: {e}\n{text}"))
        .rules;
    config
}

/// Serializes proxy starts in the dual-write tests. Proxies that install Tandem's support
/// objects (`tandem.drift`...) on one server at the same moment race in the catalog;
/// `proxies_with_rules_start_together` tests that on its own, so that every other test
/// fails only for what it is about.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a proxy with rules, one start at a time (see [`STARTING`]).
pub async fn start_ruled_proxy(config: Config) -> RunningProxy {
    let _one_at_a_time = STARTING.lock().await;
    start_proxy_with(config).await
}

/// What the target of a twin pair looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<legacy>_v2`, `PARTITION BY LIST (tenant)`: acme, globex and a DEFAULT partition;
    /// PK (id, tenant); rule key `["id", "tenant"]`.
    List,
    /// As `List` without the DEFAULT partition: a tenant other than acme/globex has nowhere
    /// to go in the target (23514).
    ListNoDefault,
    /// `<legacy>_v2`, `PARTITION BY HASH (id)`, 4 partitions; PK (id); rule key left empty
    /// (so the legacy primary key is used).
    Hash,
    /// `<legacy>_shadow` with `_sync_status` (set to `'synced'` by the rule) and
    /// `_migrated_at DEFAULT now()`; PK (id); rule key `["id"]`.
    Shadow,
}

/// One legacy table, its target, and a plain `src` table to join against.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Legacy table (in `public`).
    pub legacy: String,
    /// Target table (in `public`).
    pub target: String,
    /// A table without a rule: `(tenant text PRIMARY KEY, amount, note)` with three rows
    /// (acme, globex, umbrella).
    pub src: String,
}

impl Pair {
    /// Fresh names for `kind`.
    pub fn new(kind: Kind) -> Self {
        let legacy = unique("dw");
        let target = match kind {
            Kind::Shadow => format!("{legacy}_shadow"),
            _ => format!("{legacy}_v2"),
        };
        let src = format!("{legacy}_src");
        Self {
            legacy,
            target,
            src,
        }
    }

    /// `template` with `{legacy}`, `{target}` and `{src}` replaced by this pair's names.
    pub fn sql(&self, template: &str) -> String {
        template
            .replace("{legacy}", &self.legacy)
            .replace("{target}", &self.target)
            .replace("{src}", &self.src)
    }

    /// The DDL creating the pair.
    pub fn ddl(&self, kind: Kind) -> String {
        let cols = "id bigint NOT NULL, tenant text NOT NULL, amount numeric(10,2) NOT NULL, \
                    note text, score float8 NOT NULL, token uuid NOT NULL, \
                    created_at timestamptz NOT NULL";
        let target = match kind {
            Kind::List | Kind::ListNoDefault => {
                let mut s = format!(
                    "CREATE TABLE {{target}} ({cols}, PRIMARY KEY (id, tenant)) PARTITION BY LIST (tenant);
                     CREATE TABLE {{target}}_acme PARTITION OF {{target}} FOR VALUES IN ('acme');
                     CREATE TABLE {{target}}_globex PARTITION OF {{target}} FOR VALUES IN ('globex');"
                );
                if kind == Kind::List {
                    s.push_str("CREATE TABLE {target}_other PARTITION OF {target} DEFAULT;");
                }
                s
            }
            Kind::Hash => {
                let mut s = format!(
                    "CREATE TABLE {{target}} ({cols}, PRIMARY KEY (id)) PARTITION BY HASH (id);"
                );
                for r in 0..4 {
                    s.push_str(&format!(
                        "CREATE TABLE {{target}}_h{r} PARTITION OF {{target}} \
                         FOR VALUES WITH (MODULUS 4, REMAINDER {r});"
                    ));
                }
                s
            }
            Kind::Shadow => format!(
                "CREATE TABLE {{target}} ({cols}, _sync_status text NOT NULL DEFAULT 'pending', \
                 _migrated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id));"
            ),
        };
        self.sql(&format!(
            "CREATE TABLE {{legacy}} (
                 id bigserial PRIMARY KEY,
                 tenant text NOT NULL DEFAULT 'acme',
                 amount numeric(10,2) NOT NULL DEFAULT 0,
                 note text,
                 score float8 NOT NULL DEFAULT random(),
                 token uuid NOT NULL DEFAULT gen_random_uuid(),
                 created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {{src}} (tenant text PRIMARY KEY, amount numeric(10,2), note text);
             INSERT INTO {{src}} VALUES ('acme', 11, 'src acme'), ('globex', 12, 'src globex'),
                 ('umbrella', 13, 'src umbrella');
             {target}"
        ))
    }

    /// The rule `kind` calls for on this pair, with the `fail` policy.
    pub fn rule(&self, kind: Kind) -> RuleToml {
        let rule = RuleToml::dual_write(&self.legacy);
        match kind {
            Kind::List | Kind::ListNoDefault => rule.key(&["id", "tenant"]),
            Kind::Hash => rule,
            Kind::Shadow => rule
                .target(&format!("public.{}", self.target))
                .key(&["id"])
                .set("_sync_status", "'synced'"),
        }
    }

    /// Creates the pair's tables, directly.
    pub async fn create(&self, kind: Kind, client: &Client) {
        client
            .batch_execute(&self.ddl(kind))
            .await
            .unwrap_or_else(|e| panic!("cannot create {}: {}", self.legacy, db_text(&e)));
    }

    /// Rows that differ between legacy and target on the mirrored columns, plus target rows
    /// whose target-only columns were not filled as the rule says. Empty when in parity.
    pub async fn drift(&self, kind: Kind, check: &Client) -> Vec<String> {
        let mut out = diff(check, &self.legacy, &self.target, LEGACY_COLUMNS).await;
        if kind == Kind::Shadow {
            let bad = rows_text(
                check,
                &self.sql(
                    "SELECT 'target-only columns not filled: ' || t::text FROM {target} t \
                     WHERE _sync_status IS DISTINCT FROM 'synced' OR _migrated_at IS NULL",
                ),
            )
            .await;
            out.extend(bad);
        }
        out
    }

    /// Every legacy row as text, in id order: a snapshot to prove a statement changed nothing.
    pub async fn legacy_rows(&self, check: &Client) -> Vec<String> {
        rows_text(
            check,
            &self.sql("SELECT l::text FROM {legacy} l ORDER BY id"),
        )
        .await
    }

    /// Every target row as text, in id order.
    pub async fn target_rows(&self, check: &Client) -> Vec<String> {
        rows_text(
            check,
            &self.sql("SELECT t::text FROM {target} t ORDER BY id"),
        )
        .await
    }

    /// Number of legacy and target rows.
    pub async fn counts(&self, check: &Client) -> (i64, i64) {
        let row = check
            .query_one(
                &self
                    .sql("SELECT (SELECT count(*) FROM {legacy}), (SELECT count(*) FROM {target})"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("count rows: {}", db_text(&e)));
        (row.get(0), row.get(1))
    }

    /// Placeholder spellings of this pair's names, longest first so that `x_v2` is not
    /// rewritten as `{legacy}_v2`.
    fn names(&self) -> Vec<(String, &'static str)> {
        let mut names = vec![
            (self.target.clone(), "{target}"),
            (self.src.clone(), "{src}"),
            (self.legacy.clone(), "{legacy}"),
        ];
        names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        names
    }

    async fn oids(&self, check: &Client) -> Vec<(u32, &'static str)> {
        let mut out = Vec::new();
        for (name, placeholder) in self.names() {
            let oid: u32 = check
                .query_one("SELECT $1::text::regclass::oid", &[&name])
                .await
                .unwrap_or_else(|e| panic!("oid of {name}: {}", db_text(&e)))
                .get(0);
            out.push((oid, placeholder));
        }
        out
    }
}

/// Rows in `left` but not `right` and the other way round (`EXCEPT ALL` both ways), as
/// text, each prefixed with the table it is only in. Empty when the tables hold the same rows.
pub async fn diff(check: &Client, left: &str, right: &str, columns: &str) -> Vec<String> {
    rows_text(
        check,
        &format!(
            "SELECT 'only in {left}: ' || r::text FROM (SELECT {columns} FROM {left} \
             EXCEPT ALL SELECT {columns} FROM {right}) r \
             UNION ALL \
             SELECT 'only in {right}: ' || r::text FROM (SELECT {columns} FROM {right} \
             EXCEPT ALL SELECT {columns} FROM {left}) r"
        ),
    )
    .await
}

/// The first column of every row of `sql`, as text (NULL as `NULL`).
pub async fn rows_text(client: &Client, sql: &str) -> Vec<String> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

/// The CommandComplete row counts of a simple query, in order.
pub fn simple_counts(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE of a failed call, or `"-"` when the error did not come from the server.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// `CODE: message` of a server error, or the error's text, for assertion messages.
pub fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Any value in its wire form (binary for tokio-postgres results), to compare results
/// without knowing their types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireValue(pub Option<Vec<u8>>);

impl<'a> FromSql<'a> for WireValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(WireValue(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(WireValue(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The twins: a ruled pair written through a proxy, a baseline pair written directly.
pub struct Twins {
    /// The target's shape.
    pub kind: Kind,
    /// Written through the proxy; has the rule.
    pub ruled: Pair,
    /// Written directly; no rule.
    pub baseline: Pair,
    /// The proxy with the rule on `ruled`.
    pub proxy: RunningProxy,
    /// A direct connection for assertions.
    pub check: Client,
    /// OIDs of both pairs' tables, with their placeholders.
    oids: Vec<(u32, &'static str)>,
}

impl Twins {
    /// Both pairs created, and a proxy with `kind`'s rule (policy `fail`) on the ruled one.
    pub async fn new(kind: Kind) -> Self {
        Self::with_rule(kind, |rule| rule).await
    }

    /// As [`Twins::new`], with the rule adjusted by `adjust`.
    pub async fn with_rule(kind: Kind, adjust: impl FnOnce(RuleToml) -> RuleToml) -> Self {
        let check = pg().direct().await;
        let ruled = Pair::new(kind);
        let baseline = Pair::new(kind);
        ruled.create(kind, &check).await;
        baseline.create(kind, &check).await;
        let proxy = start_ruled_proxy(config_with(&[adjust(ruled.rule(kind))])).await;
        let mut oids = ruled.oids(&check).await;
        oids.extend(baseline.oids(&check).await);
        Self {
            kind,
            ruled,
            baseline,
            proxy,
            check,
            oids,
        }
    }

    /// A raw session through the proxy and one straight to Postgres, both seeded alike so
    /// `random()` defaults agree.
    pub async fn raw_sessions(&self) -> (RawSession, RawSession) {
        let mut via = RawSession::connect(self.proxy.addr).await;
        let mut direct = RawSession::connect(direct_addr()).await;
        for s in [&mut via, &mut direct] {
            let frames = s.simple("SELECT setseed(0.42)").await;
            assert!(raw::first_error(&frames).is_none(), "setseed: {frames:?}");
        }
        (via, direct)
    }

    /// A tokio-postgres client through the proxy and one straight to Postgres, both seeded
    /// alike so `random()` defaults agree.
    pub async fn clients(&self) -> (Client, Client) {
        let via = crate::through(&self.proxy).await;
        let direct = pg().direct().await;
        for c in [&via, &direct] {
            c.batch_execute("SELECT setseed(0.42)")
                .await
                .unwrap_or_else(|e| panic!("setseed: {}", db_text(&e)));
        }
        (via, direct)
    }

    /// A statement's result columns as `name type table attnum`, tables as placeholders.
    pub fn columns(&self, stmt: &tokio_postgres::Statement) -> Vec<String> {
        stmt.columns()
            .iter()
            .map(|c| {
                format!(
                    "{} {} table={} attnum={:?}",
                    c.name(),
                    c.type_(),
                    self.oid_name(c.table_oid().unwrap_or(0)),
                    c.column_id()
                )
            })
            .collect()
    }

    /// Runs `template` as a simple Query on both twins and asserts the transcripts are equal
    /// and the ruled pair is in parity; returns the transcript.
    pub async fn same_simple(
        &self,
        via: &mut RawSession,
        direct: &mut RawSession,
        template: &str,
    ) -> Vec<String> {
        let got = self.transcript(&via.simple(&self.ruled.sql(template)).await);
        let want = self.transcript(&direct.simple(&self.baseline.sql(template)).await);
        assert_eq!(
            got, want,
            "simple Query {template}: through Tandem (left) differs from direct (right)"
        );
        self.assert_parity(template).await;
        got
    }

    /// Runs `template` as Parse, Describe statement, Bind, Describe portal, Execute, Sync on
    /// both twins and asserts the transcripts are equal and the ruled pair is in parity.
    pub async fn same_extended(
        &self,
        via: &mut RawSession,
        direct: &mut RawSession,
        template: &str,
    ) -> Vec<String> {
        let got = self.transcript(&via.extended(&self.ruled.sql(template)).await);
        let want = self.transcript(&direct.extended(&self.baseline.sql(template)).await);
        assert_eq!(
            got, want,
            "extended protocol {template}: through Tandem (left) differs from direct (right)"
        );
        self.assert_parity(template).await;
        got
    }

    /// The ruled pair's target holds exactly its legacy rows.
    pub async fn assert_mirrored(&self, after: &str) {
        let drift = self.ruled.drift(self.kind, &self.check).await;
        assert!(
            drift.is_empty(),
            "after {after}: legacy and target differ:\n{}",
            drift.join("\n")
        );
    }

    /// [`Twins::assert_mirrored`], and the ruled legacy table equals the baseline's on the
    /// columns that do not vary by nature.
    pub async fn assert_parity(&self, after: &str) {
        self.assert_mirrored(after).await;
        let unlike = diff(
            &self.check,
            &self.ruled.legacy,
            &self.baseline.legacy,
            STABLE_COLUMNS,
        )
        .await;
        assert!(
            unlike.is_empty(),
            "after {after}: the legacy table written through Tandem differs from the one \
             written directly:\n{}",
            unlike.join("\n")
        );
    }

    /// Frames normalized for comparison across the twins (see [`transcript`]).
    pub fn transcript(&self, frames: &[(u8, Vec<u8>)]) -> Vec<String> {
        let names: Vec<(String, &'static str)> = self
            .ruled
            .names()
            .into_iter()
            .chain(self.baseline.names())
            .collect();
        transcript(frames, &names, &self.oids)
    }

    /// The placeholder of a table OID from either pair (`{legacy}`...), or the number.
    pub fn oid_name(&self, oid: u32) -> String {
        oid_name(oid, &self.oids)
    }
}

/// The test server's address.
pub fn direct_addr() -> SocketAddr {
    (pg().host.as_str(), pg().port)
        .to_socket_addrs()
        .expect("resolve the test server")
        .next()
        .expect("the test server has an address")
}

/// A byte-level client: sees every message, exactly as sent, with its full command tag.
pub struct RawSession {
    stream: TcpStream,
}

/// How long a raw session waits for ReadyForQuery.
const RAW_WAIT: Duration = Duration::from_secs(30);

impl RawSession {
    /// Logs in as the superuser to the test database (trust authentication).
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = raw::login(addr, &pg().superuser, &pg().database, "tandem-dual-write").await;
        Self { stream }
    }

    /// Sends a simple Query; returns every frame up to ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<(u8, Vec<u8>)> {
        self.send(&raw::query(sql)).await
    }

    /// Parse (unnamed), Describe statement, Bind (no parameters, text results), Describe
    /// portal, Execute (no row limit), Sync; returns every frame up to ReadyForQuery.
    pub async fn extended(&mut self, sql: &str) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut parse = vec![0u8];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        out.extend(raw::message(b'P', &parse));
        out.extend(raw::message(b'D', b"S\0"));
        out.extend(raw::message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
        out.extend(raw::message(b'D', b"P\0"));
        out.extend(raw::message(b'E', &[0, 0, 0, 0, 0]));
        out.extend(raw::message(b'S', &[]));
        self.send(&out).await
    }

    async fn send(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.stream.write_all(bytes).await.expect("send to server");
        let frames = raw::read_until_ready(&mut self.stream, RAW_WAIT).await;
        assert!(
            frames.iter().any(|(t, _)| *t == b'Z'),
            "no ReadyForQuery within {RAW_WAIT:?}: {frames:?}"
        );
        frames
    }
}

fn oid_name(oid: u32, oids: &[(u32, &'static str)]) -> String {
    if oid == 0 {
        return "0".into();
    }
    oids.iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("oid {oid}"))
}

/// One line per frame, comparable across the twins: table names and table OIDs become
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
                        let name = r.cstr();
                        volatile.push(VOLATILE_COLUMNS.contains(&name.as_str()));
                        let table = oid_name(r.u32(), oids);
                        let attnum = r.i16();
                        let (ty, len, modifier, format) = (r.u32(), r.i16(), r.i32(), r.i16());
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
                            String::from_utf8_lossy(r.take(len as usize)).into_owned()
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

/// tokio-postgres rows as wire values, sorted, with [`VOLATILE_COLUMNS`] reduced to whether
/// they are NULL: comparable across the twins.
pub fn wire_rows(rows: &[tokio_postgres::Row]) -> Vec<Vec<WireValue>> {
    let mut out: Vec<Vec<WireValue>> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let value: WireValue = row.get(i);
                    if VOLATILE_COLUMNS.contains(&row.columns()[i].name()) {
                        WireValue(value.0.map(|_| b"<set>".to_vec()))
                    } else {
                        value
                    }
                })
                .collect()
        })
        .collect();
    out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    out
}
