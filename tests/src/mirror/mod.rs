//! Helpers for the dual-write tests: rules, twin tables, parity checks and wire transcripts.
//!
//! A dual-write test proves two things at once: the target holds exactly the legacy rows,
//! and the client saw exactly what Postgres would have answered without Tandem. For the
//! second, every test prepares *twins*: one legacy/target pair written through a proxy that
//! has a rule on it, and an identical pair written directly with no rule. The same
//! statements run against both, and the normalized wire transcripts (tags, RowDescription
//! down to table OID and attnum, rows, errors, transaction status) must be equal.
//!
//! Rules are built as TOML and read with
//! [`Config::parse`](tandem::config::Config::parse), the operator's own path, so the tests
//! need no dependency on the rules crate.

mod compare;
mod pair;
mod raw_session;
mod rules;
mod transcript;
mod twins;

pub use compare::{
    db_text, diff, diff_sql, rows_text, simple_counts, sqlstate, wire_rows, WireValue,
};
pub use pair::{Kind, Pair};
pub use raw_session::{direct_addr, RawSession};
pub use rules::{config_with, start_ruled_proxy, wait_for_mode, RuleToml};
pub use transcript::{transcript, without_positions};
pub use twins::Twins;

/// Columns every legacy table has, in table order: the mirrored columns.
pub const LEGACY_COLUMNS: &str = "id, tenant, amount, note, score, token, created_at";

/// Legacy columns whose values are the same in the twins when the same statements run in
/// the same order with the same `setseed` (`now()` and `gen_random_uuid()` are not).
pub const STABLE_COLUMNS: &str = "id, tenant, amount, note, score";

/// Column names whose values differ between twins by nature; transcripts show only whether
/// they are NULL.
pub const VOLATILE_COLUMNS: &[&str] = &["created_at", "token", "_migrated_at"];
