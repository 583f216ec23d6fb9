//! The guard in the database (see `tandem_rules::guard`): changes to a ruled table made
//! around the proxy — functions, procedures, DO blocks, triggers, views, rules, direct
//! connections, COPY, TRUNCATE, MERGE — are mirrored, fail, or are recorded, as the rule's
//! `guard` says; writes through the proxy are applied exactly once; the guard follows the
//! rule's mode and the tables' column changes.

mod ddl;
mod install;
mod paths;
mod switching;
