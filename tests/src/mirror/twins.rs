//! The twins: a ruled pair written through a proxy and a baseline pair written directly,
//! with the assertions that their wire transcripts match and the ruled pair is in parity.

use tandem::RunningProxy;
use tokio_postgres::Client;

use super::transcript::oid_name;
use super::{
    config_with, db_text, diff, direct_addr, start_ruled_proxy, transcript, Kind, Pair, RawSession,
    RuleToml, STABLE_COLUMNS,
};
use crate::{pg, raw};

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

    /// [`Twins::assert_mirrored`] as seen by `via`, a session through the proxy: inside its
    /// open transaction, its own uncommitted writes count.
    pub async fn assert_mirrored_in(&self, via: &mut RawSession, after: &str) {
        let frames = via.simple(&self.ruled.drift_sql(self.kind)).await;
        let drift: Vec<String> = self
            .transcript(&frames)
            .into_iter()
            .filter(|l| l.starts_with("DataRow") || l.starts_with("Error"))
            .collect();
        assert!(
            drift.is_empty(),
            "after {after}: legacy and target differ inside the session:\n{}",
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
