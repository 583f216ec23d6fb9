//! The control plane: what decides how sessions treat ruled tables, and what operators see.
//!
//! [`access`] compares the access rules (RLS, policies, privileges) of a rule's two tables;
//! [`foreign_keys`] finds the foreign keys the move to the target would break.
//!
//! Rules live in the upstream database ([`store`], with validated transitions in
//! [`store::change`]), are resolved against the catalog ([`catalog`]) and watched for
//! changes by every instance ([`watch`], which publishes [`active_rules`], with its
//! [`plan_cache`]). Operators steer
//! it through the [`admin`] console; [`sessions`] and [`stats`] are what they look at;
//! [`guard`] is the proxy's view of the guard in the database;
//! [`drift`] and [`shadow`] are the side jobs that record refusals and re-run sampled reads
//! off the hot path; [`shapes`] counts reads per query shape so each hot or regular shape
//! gets its comparisons.

pub mod access;
pub mod active_rules;
pub mod admin;
pub mod catalog;
pub mod defaults;
pub mod drift;
pub mod foreign_keys;
pub mod guard;
pub mod latency;
pub mod metrics;
pub mod plan_cache;
pub mod sessions;
pub mod shadow;
pub mod shapes;
pub mod stats;
pub mod store;
pub mod triggers;
pub mod watch;
