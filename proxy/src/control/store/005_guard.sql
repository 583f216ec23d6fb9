-- Migration 5: the guard (see tandem_rules::guard). Each rule says what the guard in the
-- database does with changes made around the proxy; a trigger on this table installs or
-- removes the guard in the same transaction as every rule change, whatever made it.
ALTER TABLE @store@.rules ADD COLUMN guard text NOT NULL DEFAULT 'mirror'
    CHECK (guard IN ('mirror', 'fail', 'record', 'off'));

CREATE FUNCTION @store@.rules_guard() RETURNS trigger
LANGUAGE plpgsql AS $tandem$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM tandem.guard_remove(OLD.table_name);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.table_name <> NEW.table_name THEN
        PERFORM tandem.guard_remove(OLD.table_name);
    END IF;
    PERFORM tandem.guard_sync(NEW.table_name, NEW.target, NEW.key, NEW.mode, NEW.guard,
                              NEW.on_mirror_error, NEW.set_columns, TG_TABLE_SCHEMA);
    RETURN NULL;
END
$tandem$;

CREATE TRIGGER rules_guard AFTER INSERT OR UPDATE OR DELETE ON @store@.rules
    FOR EACH ROW EXECUTE FUNCTION @store@.rules_guard();
