-- Migration 4: per-rule auto-partitioning of the target on a mirrored write's 23514.
ALTER TABLE @store@.rules ADD COLUMN auto_partition boolean NOT NULL DEFAULT false;
