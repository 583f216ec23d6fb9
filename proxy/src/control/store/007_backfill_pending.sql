-- Migration 7: a backfill batch's copies still to be re-checked. A copy can outlive its
-- legacy row when a DELETE whose snapshot predates the batch reaches the row after the
-- batch released it; so each batch's copied keys are re-checked once no snapshot older
-- than the batch is left. The row is written in the batch's own transaction and deleted
-- after its re-check, so a killed or --max-wait-stopped run leaves them for the next run.
CREATE TABLE @store@.backfill_pending (
    id         bigserial PRIMARY KEY,
    table_name text NOT NULL,
    predicate  text NOT NULL DEFAULT '',
    xid        bigint NOT NULL,   -- the batch transaction's xid (32 bits)
    keys       jsonb NOT NULL,    -- the copied keys: one array of text per key column
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON @store@.backfill_pending (table_name, predicate, id);
