-- Migration 8: legacy triggers a rule declares the target does not need (the parity
-- report lists them instead of failing its triggers check; cutover is not refused).
ALTER TABLE @store@.rules ADD COLUMN drop_triggers text[] NOT NULL DEFAULT '{}';
