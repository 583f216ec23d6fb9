-- Tandem's support objects, created idempotently by the proxy at start (`SUPPORT_SQL`).
-- See record.rs for why the `record` policy needs a function, keymove.rs for check_moved.

CREATE SCHEMA IF NOT EXISTS tandem;

CREATE TABLE IF NOT EXISTS tandem.drift (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    rule_table   text NOT NULL,
    target_table text NOT NULL,
    operation    text NOT NULL,
    sqlstate     text,
    error        text,
    statement    text,
    resolved     boolean NOT NULL DEFAULT false
);

-- Appends one drift row. SECURITY DEFINER so that a client role needs no privilege on
-- tandem.drift: without one, the first mirror failure would fail the client's statement
-- after all, exactly when `record` matters. Anyone allowed to use schema tandem can add
-- (not read) drift rows; a spurious row is a false alarm, never a hidden divergence.
CREATE OR REPLACE FUNCTION tandem.record_drift(
    rule_table   text,
    target_table text,
    operation    text,
    sqlstate     text,
    error        text,
    statement    text
) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $tandem$
    INSERT INTO tandem.drift (rule_table, target_table, operation, sqlstate, error, statement)
    VALUES ($1, $2, $3, $4, $5, $6)
$tandem$;

-- Mirror `rows` (the written legacy rows, as an array of the legacy table's row type) into
-- `target_table`; if that fails for any reason, record the failure in tandem.drift instead
-- of raising. Returns the number of target rows written, 0 when there was nothing to
-- mirror, -1 when the failure was recorded.
--
-- operation:    'insert' or 'update' (both upsert into the target) or 'delete' (by key).
-- rule_table:   the legacy table, SQL spelling; only recorded.
-- target_table: the target table, SQL spelling (`app."Line Items_v2"`).
-- columns:      mirrored columns, catalog spelling.
-- key_columns:  the upsert conflict target / delete match, catalog spelling.
-- set_columns, set_exprs: extra target columns and the trusted configured expressions
--               over the legacy columns that fill them.
-- statement:    the client's statement, only recorded.
--
-- Not SECURITY DEFINER (the target write runs with the client's rights, as in the `fail`
-- form) and no `SET search_path`: set expressions are evaluated in the client's
-- search_path, as in the `fail` form; like any SQL, the body's own built-in names resolve
-- in pg_catalog first.
CREATE OR REPLACE FUNCTION tandem.mirror(
    operation    text,
    rule_table   text,
    target_table text,
    columns      text[],
    key_columns  text[],
    set_columns  text[],
    set_exprs    text[],
    rows         anyarray,
    statement    text
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $tandem$
DECLARE
    all_columns text[] := columns || set_columns;
    target      text;
    command     text;
    affected    integer;
    detail      text;
BEGIN
    IF rows IS NULL OR cardinality(rows) = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        IF cardinality(set_columns) <> cardinality(set_exprs) THEN
            RAISE EXCEPTION 'tandem.mirror: % set columns but % set expressions',
                cardinality(set_columns), cardinality(set_exprs);
        END IF;
        -- regclass output quotes and schema-qualifies exactly as needed.
        target := target_table::regclass::text;
        IF operation = 'delete' THEN
            command := format(
                'DELETE FROM %s AS tandem_t USING pg_catalog.unnest($1) AS tandem_w WHERE %s',
                target,
                (SELECT string_agg(format('tandem_t.%1$I = tandem_w.%1$I', k), ' AND ' ORDER BY n)
                   FROM unnest(key_columns) WITH ORDINALITY AS u(k, n)));
        ELSIF operation = ANY (ARRAY['insert', 'update']) THEN
            command := format(
                'INSERT INTO %s (%s) SELECT %s FROM pg_catalog.unnest($1) AS tandem_w '
                'ON CONFLICT (%s) %s',
                target,
                (SELECT string_agg(format('%I', c), ', ' ORDER BY n)
                   FROM unnest(all_columns) WITH ORDINALITY AS u(c, n)),
                (SELECT string_agg(v, ', ' ORDER BY n) FROM (
                    SELECT format('tandem_w.%I', c), n
                      FROM unnest(columns) WITH ORDINALITY AS u(c, n)
                    UNION ALL
                    SELECT '(' || e || ')', cardinality(columns) + n
                      FROM unnest(set_exprs) WITH ORDINALITY AS u(e, n)
                 ) AS vals(v, n)),
                (SELECT string_agg(format('%I', k), ', ' ORDER BY n)
                   FROM unnest(key_columns) WITH ORDINALITY AS u(k, n)),
                COALESCE(
                    'DO UPDATE SET ' || (
                        SELECT string_agg(format('%1$I = EXCLUDED.%1$I', c), ', ' ORDER BY n)
                          FROM unnest(all_columns) WITH ORDINALITY AS u(c, n)
                         WHERE c <> ALL (key_columns)),
                    'DO NOTHING'));
        ELSE
            RAISE EXCEPTION 'tandem.mirror: unknown operation %', operation;
        END IF;
        EXECUTE command USING rows;
        GET DIAGNOSTICS affected = ROW_COUNT;
        RETURN affected;
    EXCEPTION WHEN OTHERS THEN
        -- Runs after the block's subtransaction rolled back: the target is untouched, the
        -- legacy write (outside the block) stands. query_canceled is not caught by OTHERS.
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        -- Told to the guard, which finds the same rows unmirrored at the statement's end
        -- and must not record them a second time.
        PERFORM pg_catalog.set_config('tandem.drift_recorded',
            pg_catalog.to_regclass(target_table)::oid::text || ' ' || pg_catalog.statement_timestamp(), true);
        PERFORM tandem.record_drift(rule_table, target_table, operation, SQLSTATE,
                                    SQLERRM || COALESCE(E'\n' || NULLIF(detail, ''), ''),
                                    statement);
        RETURN -1;
    END;
END
$tandem$;

-- The key-move form of UPDATE (keymove.rs) locks the rows to update in `tandem_o` and
-- updates them by ctid. When another transaction changed one of them after the statement's
-- snapshot, the UPDATE skips it, though a plain UPDATE would have updated its newest
-- version: fail the statement (retryably) instead of mirroring a wrong move. Returns true.
CREATE OR REPLACE FUNCTION tandem.check_moved(
    rule_table text,
    locked     bigint,
    updated    bigint
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
BEGIN
    IF locked IS DISTINCT FROM updated THEN
        RAISE EXCEPTION 'tandem: could not serialize access due to concurrent update of ruled table %',
                rule_table
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The UPDATE changes the rule''s key; %s of the %s rows it '
                                  'locked were changed by another transaction after the '
                                  'statement started.', locked - updated, locked),
                  HINT = 'Retry the statement.';
    END IF;
    RETURN true;
END
$tandem$;

-- Checks, inside a rewritten statement, that the bare table name the client wrote means
-- the ruled table Tandem planned it as (by OID), with the session's own search_path and
-- temporary tables: a temp table of the same name, or a search_path Tandem did not see
-- change, fails the statement before it writes anything. No SET search_path on purpose:
-- the name must be resolved as the caller's statement resolves it. Returns true.
CREATE OR REPLACE FUNCTION tandem.resolves_to(
    name       text,
    expected   oid,
    rule_table text
) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $tandem$
DECLARE
    found oid := pg_catalog.to_regclass(name);
    shown text;
BEGIN
    IF found IS DISTINCT FROM expected THEN
        SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO shown
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = found;
        RAISE EXCEPTION 'tandem: % means % in this session, not ruled table %; the statement was not run',
                name, coalesce(shown, 'no table'), rule_table
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Qualify the table name with its schema, or rename the temporary table that shadows it.';
    END IF;
    RETURN true;
END
$tandem$;

-- Client roles call tandem.mirror() from their own statements. EXECUTE on functions is
-- PUBLIC by default; the schema's USAGE is not.
GRANT USAGE ON SCHEMA tandem TO PUBLIC;
