//! Integration tests: a real Postgres, the proxy in-process on port 0, real clients.
//!
//! One binary, one shared server (see `tandem_tests`); every test makes its own tables.

mod access;
mod admin;
mod admin_views;
mod admin_wire;
mod auth;
mod auto_partition;
mod backfill;
mod bad_input;
mod cli_tls;
mod clients;
mod defaults;
mod dual_write;
mod fleet;
mod foreign_keys;
mod fuzz;
mod guard;
mod init;
mod lexer;
mod lifecycle;
mod metrics;
mod modes;
mod parity;
mod partitions;
mod purge;
mod relay;
mod resync;
mod rule_chains;
mod shapes;
mod topologies;
mod triggers;
mod walk;
mod widening;
