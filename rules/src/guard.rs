//! The guard: a check inside the database that no change to a ruled table goes unmirrored,
//! whatever path made it.
//!
//! Tandem mirrors the writes it sees. A function, procedure, `DO` block, trigger, rule or
//! updatable view that writes the legacy table, a cron job, a migration script or a second
//! application connected straight to the database writes around it. So for every active
//! rule (except `guard = "off"`) Tandem installs statement-level `AFTER INSERT / UPDATE /
//! DELETE / TRUNCATE` triggers on the *guarded* table (the legacy table in `dual_write` and
//! `union_read`, the target in `cutover`, none in `off` and `target_only`) and on every
//! table under it (partitions, inheritance children: a statement naming a child fires only
//! the child's statement triggers). They are created and removed by a trigger on the rule
//! store itself ([`SUPPORT_SQL`](crate::SUPPORT_SQL), `tandem.guard_sync`), so every rule
//! change — admin console, CLI, config seeding or a hand-written `UPDATE tandem.rules` —
//! moves the guard in the same transaction, under a bounded `lock_timeout`.
//!
//! ## What the triggers check: state, not marks
//!
//! At the end of each statement the trigger takes the keys the statement touched (from the
//! transition tables: new rows for INSERT, old and new for UPDATE, old for DELETE) and
//! compares, per key, the guarded table's row now (cast to the mirror's column types, the
//! rule's `set` columns computed as the rewrite computes them) with the mirror table's row,
//! by binary image (`*=`, so json, floats and numeric scale compare exactly and NULL equals
//! NULL). One set-based query, with the plan cached per session. Only keys whose rows
//! differ are acted on.
//!
//! A statement Tandem rewrote has already written the same rows to the mirror in the same
//! statement, so the check finds nothing and the statement passes after one read-only
//! query: this comparison *is* the mark the issue asked for, and it cannot leak. A marker
//! (a setting the rewrite sets and the trigger consumes) would pass whichever write fired
//! the trigger first while the marker is set: a function called in the statement's
//! RETURNING list or in an unreferenced data-modifying CTE, or a user trigger on the legacy
//! table, writes the same table in the same statement and fires its own statement trigger
//! before the rewrite's does. A comparison of current rows has no such window, and it also
//! makes the order of firings irrelevant (a nested write that changes a row again is
//! compared by its final value, twice, never applied out of order).
//!
//! ## What each policy does with a difference
//!
//! - `mirror` (the default): the mirror table is made to match, set-based: rows of touched
//!   keys the guarded table no longer has are deleted, the others upserted on the rule's
//!   key. After `TRUNCATE` of the guarded table the mirror is truncated (or, when only a
//!   partition was truncated, its rows missing from the guarded table are deleted). With
//!   `on_mirror_error = "record"` a failure of that write is recorded as drift instead.
//! - `fail`: the statement fails (SQLSTATE 55000) naming both tables and the fix.
//! - `record`: the change stands and a `tandem.drift` row (`source = 'guard'`) records the
//!   operation, the number of rows, `current_query()`, the session's role and
//!   `application_name`; `tandem parity` counts it like any other drift.
//!
//! The guard and the rewrite never both apply one change: the rewrite writes first, inside
//! the statement, and the guard then finds nothing to do. There is no ping-pong in
//! `cutover`: exactly one of the two tables is guarded at any time, and the guard's own
//! writes land on the unguarded one.
//!
//! The trigger functions are `SECURITY DEFINER` (owned by the role Tandem's admin
//! connection uses) with `search_path = pg_catalog, pg_temp`: a writer that may write the
//! legacy table but not the target still gets its change mirrored, and cannot redirect the
//! guard's names. The rule's `set` expressions run under that search_path too: qualify
//! user functions in them.
//!
//! ## Writes Tandem cannot rewrite
//!
//! A statement Tandem would refuse because it cannot rewrite it (MERGE on PostgreSQL 15, a
//! data-modifying CTE, `WHERE CURRENT OF`, a key change it cannot follow, `COPY FROM` a server
//! file, text its parser cannot read) is left to the guard instead when every ruled table it
//! names is guarded with policy `mirror` on its legacy table (`dual_write`, `union_read`;
//! `TableShape::guard_ready`, read when the rule is resolved): it runs as the client sent it,
//! so the client gets exactly Postgres's answer, and the guard mirrors what it changed. DDL,
//! statements whose reading depends on settings Tandem is unsure of, and anything naming a
//! table of a rule in `cutover` are still refused.
//!
//! ## Keeping it on
//!
//! The guard's triggers are `ENABLE ALWAYS` (they fire under `session_replication_role =
//! replica` too, which some copy and sync tools set; logical replication's apply worker
//! fires no statement triggers at all, so rows it applies are not caught), and an event
//! trigger refuses `DROP TRIGGER`, `DROP FUNCTION` and `ALTER TABLE ...
//! DISABLE TRIGGER` on them unless Tandem itself removes them (guard set to `off`, rule
//! dropped, or the table dropped): the proxy leaves writes to a guard it believes is there.
//!
//! ## Column changes
//!
//! An event trigger (`tandem_guard_ddl`, `ddl_command_end` of `ALTER TABLE`) follows a
//! column change of a guarded table on the mirror in the same transaction — ADD (with the
//! same values: a constant default as a default, per-row values copied: a default is
//! per-row when any function it calls is volatile), DROP, RENAME, ALTER TYPE (when the
//! guarded table's columns were rewritten, which a second event trigger,
//! `tandem_guard_rewrite` on `table_rewrite`, notes, the mirror then takes the guarded
//! table's values: a `USING` expression may have changed them, even to the same type),
//! SET/DROP DEFAULT, SET/DROP NOT NULL — refuses one it cannot follow (a key
//! column dropped or renamed) and refuses a change of the mirror table that would break the
//! mirror; then it installs the guard again for the new columns and bumps the rule store
//! (a `rules_history` row and `NOTIFY`), so every proxy resolves the rule again before its
//! next transaction. Event triggers need a superuser; without one they are not installed
//! and SHOW RULES says so.
