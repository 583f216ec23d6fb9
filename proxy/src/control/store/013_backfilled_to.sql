-- Migration 13: the backfill watermark (set by a running tandem backfill every few seconds,
-- cleared with backfilled): every legacy row whose key is at or below it is in the target,
-- so a union read takes those keys from the target and the others from legacy.
ALTER TABLE @store@.rules ADD COLUMN backfilled_to text[];
