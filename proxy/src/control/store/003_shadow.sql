-- Migration 3: shadow-read samples. A sampled read is re-run on both tables in one
-- REPEATABLE READ snapshot; each row here is one comparison. Pruned to the newest
-- `shadow.retention` rows per table by the proxy.

CREATE TABLE @store@.shadow_samples (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    rule_table  text NOT NULL,
    fingerprint text NOT NULL,
    statement   text NOT NULL,
    k           integer,
    overlap     double precision NOT NULL,
    rows_differ boolean NOT NULL,
    example     text,
    legacy_rows integer NOT NULL,
    target_rows integer NOT NULL
);

CREATE INDEX shadow_samples_by_table ON @store@.shadow_samples (rule_table, at);
