-- Migration 6: legacy columns a rule deliberately leaves behind (the parity report lists
-- them as dropped instead of failing its columns check).
ALTER TABLE @store@.rules ADD COLUMN drop_columns text[] NOT NULL DEFAULT '{}';
