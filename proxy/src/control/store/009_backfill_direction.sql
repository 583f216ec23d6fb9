-- Migration 9: backfills run in two directions. `forward` copies legacy rows into the
-- target (tandem backfill); `reverse` re-syncs the legacy table from the target after a
-- FORCEd exit from target_only (tandem backfill --reverse). Each direction has its own
-- state and pending re-checks, so the two never share a cursor. `required` is the state a
-- FORCEd exit from target_only writes, in the same transaction as the mode change: the
-- legacy table missed writes, and leaving cutover is refused until the re-sync finished.
-- `rows_removed` counts the legacy rows a re-sync deleted (their key was gone from the target).
-- `seen_at` is when a pending batch was first seen committed: its re-check also waits
-- for transactions that started before then and wrote (backend_xid), since a write made
-- with a snapshot older than the batch may have ended its statement (and released its
-- snapshot) without committing.
ALTER TABLE @store@.backfill_state
    ADD COLUMN direction text NOT NULL DEFAULT 'forward' CHECK (direction IN ('forward', 'reverse'));
ALTER TABLE @store@.backfill_state DROP CONSTRAINT backfill_state_pkey;
ALTER TABLE @store@.backfill_state ADD PRIMARY KEY (table_name, predicate, direction);
ALTER TABLE @store@.backfill_state DROP CONSTRAINT backfill_state_status_check;
ALTER TABLE @store@.backfill_state
    ADD CONSTRAINT backfill_state_status_check CHECK (status IN ('required', 'running', 'finished', 'failed'));
ALTER TABLE @store@.backfill_state ADD COLUMN rows_removed bigint NOT NULL DEFAULT 0;
ALTER TABLE @store@.backfill_pending
    ADD COLUMN direction text NOT NULL DEFAULT 'forward' CHECK (direction IN ('forward', 'reverse'));
ALTER TABLE @store@.backfill_pending ADD COLUMN seen_at timestamptz;
