-- Migration 12: per-shape shadow reads. Each instance counts the reads of ruled tables per
-- query shape (the statement with literals and parameters masked, normalised, hashed: see
-- tandem_rules::fingerprint) and adds its counts here every few seconds; the sampler bumps
-- the comparison counters and, for a shape slower on the target, keeps both plans. Each
-- comparison records the two statements' times next to its overlap.

CREATE TABLE @store@.shadow_shapes (
    rule_table   text NOT NULL,
    fingerprint  text NOT NULL,
    shape        text NOT NULL,
    executions   bigint NOT NULL DEFAULT 0,
    comparisons  bigint NOT NULL DEFAULT 0,
    full_overlap bigint NOT NULL DEFAULT 0,
    differing    bigint NOT NULL DEFAULT 0,
    -- Comparisons at full overlap since the last one whose rows differed: a shape that
    -- differed while the target was not backfilled yet is covered again once it has
    -- min_comparisons clean ones in a row.
    clean_streak bigint NOT NULL DEFAULT 0,
    failures     bigint NOT NULL DEFAULT 0,
    last_error   text,
    legacy_plan  text,
    target_plan  text,
    plans_at     timestamptz,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_table, fingerprint)
);

ALTER TABLE @store@.shadow_samples
    ADD COLUMN legacy_ms double precision,
    ADD COLUMN target_ms double precision;

CREATE INDEX shadow_samples_by_shape ON @store@.shadow_samples (rule_table, fingerprint, id);
