
-- Triggers and the mirror (see triggers.rs). A trigger copied from the legacy table onto
-- the target must fire for the writes applications make, once: not for the mirror's copy
-- of them. `tandem init` gives each legacy trigger and its target copy the condition
-- WHEN (tandem.written_here('<its table>'::regclass)), true on the table applications
-- write in the rule's mode (legacy in off, dual_write and union_read; the target in
-- cutover and target_only) and for tables no rule names. guard_sync keeps
-- tandem.written_sides current in the same transaction as every rule change, so a mode
-- switch moves the triggers' firing with no lock on either table.
CREATE TABLE IF NOT EXISTS tandem.written_sides (
    rel        oid PRIMARY KEY,
    written    boolean NOT NULL,
    rule_table text NOT NULL
);
GRANT SELECT ON tandem.written_sides TO PUBLIC;

CREATE OR REPLACE FUNCTION tandem.written_here(rel regclass) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $tandem$
    SELECT coalesce((SELECT w.written FROM tandem.written_sides w WHERE w.rel = $1::oid), true)
$tandem$;

-- Records which of the rule's tables applications write in `mode` (NULL: the rule is gone).
CREATE OR REPLACE FUNCTION tandem.written_sides_sync(table_name text, target text, mode text)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    legacy_oid oid := to_regclass(table_name);
    target_oid oid := to_regclass(target);
    on_target  boolean := mode IN ('cutover', 'target_only');
BEGIN
    DELETE FROM tandem.written_sides WHERE rule_table = table_name;
    IF mode IS NULL THEN
        RETURN;
    END IF;
    IF legacy_oid IS NOT NULL THEN
        INSERT INTO tandem.written_sides VALUES (legacy_oid, NOT on_target, table_name)
        ON CONFLICT (rel) DO UPDATE SET written = EXCLUDED.written, rule_table = EXCLUDED.rule_table;
    END IF;
    IF target_oid IS NOT NULL AND target_oid IS DISTINCT FROM legacy_oid THEN
        INSERT INTO tandem.written_sides VALUES (target_oid, on_target, table_name)
        ON CONFLICT (rel) DO UPDATE SET written = EXCLUDED.written, rule_table = EXCLUDED.rule_table;
    END IF;
END
$tandem$;
