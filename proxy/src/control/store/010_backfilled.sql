-- Migration 10: a whole-table backfill finished since the rule last left off (set by tandem
-- backfill, cleared when it starts over or the rule goes to off): union reads then need the
-- target alone.
ALTER TABLE @store@.rules ADD COLUMN backfilled boolean NOT NULL DEFAULT false;
