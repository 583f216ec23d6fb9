-- Migration 11: the key ranges of a backfill run split for parallel workers
-- (`tandem backfill --jobs N`). The run's own row in backfill_state keeps its status and
-- totals; each part is a key range (lower, upper] with its own cursor, copied by one worker
-- at a time (claimed with an advisory lock, so several processes or machines can share a
-- run) and resumable on its own.
CREATE TABLE @store@.backfill_parts (
    table_name  text NOT NULL,
    predicate   text NOT NULL DEFAULT '',
    direction   text NOT NULL DEFAULT 'forward',
    part        int NOT NULL,
    lower       text[],            -- exclusive; NULL: from the first key
    upper       text[],            -- inclusive; NULL: to the last key
    cursor      text[],            -- the last key copied (starts at lower)
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
    rows_copied bigint NOT NULL DEFAULT 0,
    rows_read   bigint NOT NULL DEFAULT 0,
    batches     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, predicate, direction, part)
);
