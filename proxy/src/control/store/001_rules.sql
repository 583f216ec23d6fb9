-- Migration 1: the rule store. Rows are the source of truth for every proxy instance;
-- the config file's [[rule]] entries only insert rows that do not exist yet.
--
-- `@store@` is the store's schema (config `store.schema`, default `tandem`); the channel
-- is `<schema>_rules` (`tandem_rules`).
--
-- `table_name` and `set_columns` are the issue's `table` and `set`, renamed so hand-written
-- SQL needs no quoting. Every change (through the admin console, the CLI, or plain SQL)
-- goes through the trigger below: it bumps `version`, stamps `updated_at`, appends to
-- @store@.rules_history, and sends NOTIFY <schema>_rules, which every instance LISTENs to.

CREATE TABLE @store@.rules (
    table_name      text PRIMARY KEY,
    target          text NOT NULL,
    key             text[] NOT NULL DEFAULT '{}',
    mode            text NOT NULL DEFAULT 'off'
                    CHECK (mode IN ('off', 'dual_write', 'union_read', 'cutover', 'target_only')),
    sample_rate     double precision NOT NULL DEFAULT 0
                    CHECK (sample_rate >= 0 AND sample_rate <= 1),
    on_mirror_error text NOT NULL DEFAULT 'fail' CHECK (on_mirror_error IN ('fail', 'record')),
    set_columns     jsonb NOT NULL DEFAULT '[]',
    version         bigint NOT NULL DEFAULT 1,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL DEFAULT current_user
);

CREATE TABLE @store@.rules_history (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    table_name text NOT NULL,
    action     text NOT NULL,
    old_rule   jsonb,
    new_rule   jsonb,
    by         text NOT NULL
);

CREATE FUNCTION @store@.rules_changed() RETURNS trigger
LANGUAGE plpgsql AS $tandem$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
    ELSIF TG_OP = 'INSERT' THEN
        NEW.version := 1;
        NEW.updated_at := now();
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$tandem$;

CREATE FUNCTION @store@.rules_log() RETURNS trigger
LANGUAGE plpgsql AS $tandem$
BEGIN
    INSERT INTO @store@.rules_history (table_name, action, old_rule, new_rule, by)
    VALUES (
        CASE WHEN TG_OP = 'DELETE' THEN OLD.table_name ELSE NEW.table_name END,
        lower(TG_OP),
        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,
        CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END,
        CASE WHEN TG_OP = 'DELETE' THEN current_user ELSE NEW.updated_by END
    );
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_rules',
                      CASE WHEN TG_OP = 'DELETE' THEN OLD.table_name ELSE NEW.table_name END);
    RETURN NULL;
END
$tandem$;

CREATE TRIGGER rules_changed BEFORE INSERT OR UPDATE ON @store@.rules
    FOR EACH ROW EXECUTE FUNCTION @store@.rules_changed();
CREATE TRIGGER rules_log AFTER INSERT OR UPDATE OR DELETE ON @store@.rules
    FOR EACH ROW EXECUTE FUNCTION @store@.rules_log();
