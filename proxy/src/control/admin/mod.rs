//! The admin console: a virtual database `tandem` on the proxy's own listener.
//!
//! Operators change rules while traffic flows, from psql, like PgBouncer's console:
//! `psql postgres://admin:secret@tandem:6432/tandem`, then `SHOW RULES`, `SET RULE orders
//! MODE union_read`... Tandem authenticates the admin itself ([`scram`], against `[admin]`
//! in the config) — the console never touches the upstream login path — and answers with
//! ordinary result sets ([`console`]). Commands are parsed by [`command`]; rule changes go
//! through [`crate::control::store::change`] (validated, serialised, NOTIFYed to every instance) and
//! are applied on this instance at once.

pub mod command;
pub mod console;
pub mod scram;
mod views;

/// The database name that reaches the console.
pub const DATABASE: &str = "tandem";
