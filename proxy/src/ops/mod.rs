//! The operator commands: one-shot jobs an operator runs against the database.
//!
//! Each module is the library half of one `tandem` subcommand (the binary's `cli` module
//! only parses arguments and prints): [`init`] builds the target from the legacy table,
//! [`backfill`] copies old rows, [`parity`] diffs legacy and target and gates cutover,
//! [`partitions`] and [`purge`] keep the target's partitions, [`rules`] talks to a
//! running proxy's admin console, and [`demo`] sets up `tandem demo`'s sample migration
//! with them.

pub mod backfill;
pub mod constraints;
pub mod demo;
pub mod init;
pub mod parity;
pub mod partitions;
pub mod purge;
pub mod rules;
pub mod widening;
