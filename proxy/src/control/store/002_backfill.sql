-- Migration 2: backfill progress, one row per (legacy table, predicate). The cursor is the
-- last copied key (as text, one element per key column); it is committed in the same
-- transaction as the batch it ends, so a killed run resumes exactly after its last batch.

CREATE TABLE @store@.backfill_state (
    table_name   text NOT NULL,
    predicate    text NOT NULL DEFAULT '',
    target       text NOT NULL,
    key          text[] NOT NULL,
    cursor       text[],
    rows_copied  bigint NOT NULL DEFAULT 0,
    rows_skipped bigint NOT NULL DEFAULT 0,
    batches      bigint NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'finished', 'failed')),
    last_error   text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (table_name, predicate)
);
