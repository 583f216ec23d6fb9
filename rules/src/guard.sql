-- Tandem's guard: statement triggers that catch, at the end of every statement, a change
-- to a guarded table that did not reach its mirror (see guard.rs for the design). Part of
-- SUPPORT_SQL, run idempotently at every start.

-- The drift table's guard columns. Checked first: ALTER TABLE would take an exclusive lock
-- on tandem.drift at every start, queueing every writer behind any open transaction.
DO $tandem_drift$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'tandem.drift'::pg_catalog.regclass AND attname = 'source') THEN
        ALTER TABLE tandem.drift ADD COLUMN IF NOT EXISTS rows bigint,
            ADD COLUMN IF NOT EXISTS role text,
            ADD COLUMN IF NOT EXISTS application_name text,
            ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'mirror';
    END IF;
END
$tandem_drift$;

-- One row per rule whose guard triggers are installed: what they check, for SHOW RULES, the
-- parity report and the DDL event trigger. Both tables of a rule carry the triggers from
-- the rule's first install on; a mode change only swaps the trigger functions' bodies
-- (the guarded side's check, a no-op on the other), which takes no lock on either table,
-- so switching modes never waits for a long transaction.
CREATE TABLE IF NOT EXISTS tandem.guards (
    rule_table   text PRIMARY KEY,
    legacy       oid NOT NULL,
    target       oid NOT NULL,
    guarded      oid,
    other        oid,
    direction    text NOT NULL CHECK (direction IN ('forward', 'reverse', 'none')),
    key          text[] NOT NULL,
    set_columns  text[] NOT NULL,
    set_exprs    text[] NOT NULL,
    policy       text NOT NULL CHECK (policy IN ('mirror', 'fail', 'record')),
    on_error     text NOT NULL CHECK (on_error IN ('fail', 'record')),
    store        text NOT NULL,
    columns      jsonb NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
-- The other table's columns at install: a column change of it is judged against them.
DO $tandem_guards$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'tandem.guards'::pg_catalog.regclass
                      AND attname = 'other_columns') THEN
        ALTER TABLE tandem.guards ADD COLUMN other_columns jsonb NOT NULL DEFAULT '[]';
    END IF;
END
$tandem_guards$;

-- Appends one guard drift row: a change the guard found unmirrored under `record`, or a
-- failure of its mirror under on_mirror_error = record. SECURITY DEFINER like
-- record_drift: the writer needs no privilege on tandem.drift.
CREATE OR REPLACE FUNCTION tandem.record_guard_drift(
    rule_table   text,
    target_table text,
    operation    text,
    rows         bigint,
    sqlstate     text,
    error        text
) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $tandem$
    INSERT INTO tandem.drift (rule_table, target_table, operation, sqlstate, error, statement,
                              rows, role, application_name, source)
    VALUES ($1, $2, $3, $5, $6, pg_catalog.current_query(), $4, session_user::text,
            pg_catalog.current_setting('application_name'), 'guard')
$tandem$;

-- The guarded table's columns as the DDL event trigger compares them later.
CREATE OR REPLACE FUNCTION tandem.guard_columns(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'attnum', a.attnum, 'name', a.attname::text,
               'type', format_type(a.atttypid, a.atttypmod),
               'notnull', a.attnotnull, 'generated', a.attgenerated <> '',
               'default', pg_get_expr(d.adbin, d.adrelid)) ORDER BY a.attnum), '[]')
      FROM pg_attribute a
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$tandem$;

-- The guarded table and every table under it (partitions, inheritance children): each
-- gets the statement triggers, since a statement naming a child fires only the child's.
CREATE OR REPLACE FUNCTION tandem.guard_tree(root oid) RETURNS SETOF oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
    WITH RECURSIVE tree(rel) AS (
        SELECT root
        UNION
        SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.rel
    )
    SELECT rel FROM tree
      JOIN pg_class c ON c.oid = tree.rel
     WHERE c.relkind IN ('r', 'p')
$tandem$;

-- `rel` and every table above it (its parents, theirs...).
CREATE OR REPLACE FUNCTION tandem.guard_ancestors(rel oid) RETURNS SETOF oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
    WITH RECURSIVE up(rel) AS (
        SELECT rel
        UNION
        SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.rel
    )
    SELECT rel FROM up
$tandem$;

-- The source of the trigger function that guards `guarded`, mirroring into `other`.
-- Generated under search_path = pg_catalog, so every table and type name is qualified.
-- Built by concatenation with quote_ident/quote_literal (never format() over text that
-- holds a configured expression, which may contain `%`).
-- The sequence counting `rule_table`'s guard firings: statements whose change to the guarded
-- table had not reached the mirror (mirrored, failed or recorded by the policy). A sequence
-- because nextval is not transactional and takes no row lock: a failed statement still
-- counts, and concurrent writers never queue on a shared counter row. Only a firing pays
-- for it; a statement Tandem mirrored never reaches it.
CREATE OR REPLACE FUNCTION tandem.guard_counter(rule_table text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $tandem$
    SELECT 'tandem.' || pg_catalog.quote_ident('guard_fired_' || pg_catalog.left(pg_catalog.md5(rule_table), 16))
$tandem$;

-- How many times `rule_table`'s guard fired (0 before the first firing or without a guard).
CREATE OR REPLACE FUNCTION tandem.guard_firings(rule_table text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    seq regclass := to_regclass(tandem.guard_counter(rule_table));
    n   bigint;
BEGIN
    IF seq IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM %s', seq) INTO n;
    RETURN n;
END
$tandem$;

CREATE OR REPLACE FUNCTION tandem.guard_body(
    guarded     oid,
    other       oid,
    key         text[],
    set_columns text[],
    set_exprs   text[],
    policy      text,
    on_error    text,
    rule_table  text
) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    g        text := guarded::regclass::text;
    o        text := other::regclass::text;
    cols     text[];
    types    text[];
    stypes   text[];
    all_cols text[];
    key_list text;
    keys_new text;
    keys_old text;
    keys_upd text;
    g_row    text;
    t_row    text;
    n_row    text;
    fast_new  text;
    fast_gone text;
    diff     text;
    fix      text;
    upd_set  text;
    act      text;
    trunc    text;
    lost     text;
    -- Counting never fails the statement (a sequence another role created, then dropped).
    fired    text := 'BEGIN PERFORM pg_catalog.nextval(' || quote_literal(tandem.guard_counter(rule_table))
                    || '::pg_catalog.regclass); EXCEPTION WHEN OTHERS THEN NULL; END; ';
BEGIN
    IF key IS NULL OR cardinality(key) = 0 THEN
        RAISE EXCEPTION 'tandem: the guard of % needs key columns', rule_table;
    END IF;
    SELECT array_agg(a.attname::text ORDER BY a.attnum),
           array_agg(format_type(b.atttypid, b.atttypmod) ORDER BY a.attnum)
      INTO cols, types
      FROM pg_attribute a
      JOIN pg_attribute b ON b.attrelid = other AND b.attname = a.attname
                         AND b.attnum > 0 AND NOT b.attisdropped AND b.attgenerated = ''
     WHERE a.attrelid = guarded AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname::text <> ALL (set_columns);
    IF cols IS NULL THEN
        RAISE EXCEPTION 'tandem: % and % have no column in common', g, o;
    END IF;
    IF NOT key <@ cols THEN
        RAISE EXCEPTION 'tandem: key (%) of % is not a column of both % and %',
            array_to_string(key, ', '), rule_table, g, o;
    END IF;
    SELECT coalesce(array_agg(format_type(b.atttypid, b.atttypmod) ORDER BY s.n), '{}')
      INTO stypes
      FROM unnest(set_columns) WITH ORDINALITY AS s(c, n)
      JOIN pg_attribute b ON b.attrelid = other AND b.attname = s.c AND NOT b.attisdropped;
    IF cardinality(stypes) <> cardinality(set_columns) THEN
        RAISE EXCEPTION 'tandem: a set column of % is missing from %', rule_table, o;
    END IF;
    all_cols := cols || set_columns;

    key_list := (SELECT string_agg('tandem_x.' || quote_ident(k), ', ') FROM unnest(key) k);
    keys_new := 'SELECT DISTINCT ' || key_list || ' FROM tandem_new AS tandem_x';
    keys_old := 'SELECT DISTINCT ' || key_list || ' FROM tandem_old AS tandem_x';
    keys_upd := 'SELECT ' || key_list || ' FROM tandem_new AS tandem_x UNION SELECT '
                || key_list || ' FROM tandem_old AS tandem_x';
    -- The guarded row cast to the other table's types (set columns computed as the
    -- rewrite computes them), and the other table's row: compared by binary image, so
    -- json, float and numeric scale compare exactly and NULL equals NULL.
    g_row := (SELECT string_agg(v, ', ' ORDER BY n) FROM (
                 SELECT 'CAST(tandem_g.' || quote_ident(c) || ' AS ' || t || ')', n
                   FROM unnest(cols, types) WITH ORDINALITY AS u(c, t, n)
                 UNION ALL
                 SELECT 'CAST((' || e || ') AS ' || t || ')', cardinality(cols) + n
                   FROM unnest(set_exprs, stypes) WITH ORDINALITY AS u(e, t, n)) AS x(v, n));
    t_row := (SELECT string_agg('tandem_t.' || quote_ident(c), ', ' ORDER BY n)
                FROM unnest(all_cols) WITH ORDINALITY AS u(c, n));
    -- `@keys@`: the touched keys' query. Counts the keys whose rows differ.
    diff := 'SELECT count(*) FROM (@keys@) AS tandem_k '
         || 'LEFT JOIN LATERAL (SELECT true AS found, ROW(' || g_row || ') AS r FROM ' || g
         || ' AS tandem_g WHERE ' || tandem.guard_match(key, 'tandem_g', 'tandem_k')
         || ') AS tandem_gr ON true '
         || 'LEFT JOIN LATERAL (SELECT true AS found, ROW(' || t_row || ') AS r FROM ' || o
         || ' AS tandem_t WHERE ' || tandem.guard_match(key, 'tandem_t', 'tandem_k')
         || ') AS tandem_tr ON true '
         || 'WHERE (tandem_gr.found IS NULL) <> (tandem_tr.found IS NULL) '
         || 'OR (tandem_gr.found AND tandem_tr.found '
         || 'AND NOT (tandem_gr.r OPERATOR(pg_catalog.*=) tandem_tr.r))';
    upd_set := (SELECT string_agg(quote_ident(c) || ' = EXCLUDED.' || quote_ident(c), ', ')
                  FROM unnest(all_cols) c WHERE c <> ALL (key));
    -- The fix for touched keys: rows the guarded table no longer has are deleted, the
    -- rows it has are upserted (set columns computed).
    fix := 'DELETE FROM ' || o || ' AS tandem_t USING (@keys@) AS tandem_k WHERE '
        || tandem.guard_match(key, 'tandem_t', 'tandem_k')
        || ' AND NOT EXISTS (SELECT 1 FROM ' || g || ' AS tandem_g WHERE '
        || tandem.guard_match(key, 'tandem_g', 'tandem_k') || '); '
        || 'INSERT INTO ' || o || ' AS tandem_t ('
        || (SELECT string_agg(quote_ident(c), ', ' ORDER BY n)
              FROM unnest(all_cols) WITH ORDINALITY AS u(c, n))
        || ') SELECT '
        || (SELECT string_agg(v, ', ' ORDER BY n) FROM (
               SELECT 'tandem_g.' || quote_ident(c), n FROM unnest(cols) WITH ORDINALITY AS u(c, n)
               UNION ALL
               SELECT '(' || e || ')', cardinality(cols) + n
                 FROM unnest(set_exprs) WITH ORDINALITY AS u(e, n)) AS x(v, n))
        || ' FROM (SELECT tandem_g.* FROM ' || g || ' AS tandem_g JOIN (@keys@) AS tandem_k ON '
        || tandem.guard_match(key, 'tandem_g', 'tandem_k') || ') AS tandem_g '
        || 'ON CONFLICT (' || (SELECT string_agg(quote_ident(k), ', ') FROM unnest(key) k) || ') '
        || coalesce('DO UPDATE SET ' || upd_set, 'DO NOTHING') || ';';
    -- After TRUNCATE: everything when the guarded table is now empty, else (a partition
    -- was truncated) the other table's rows whose key the guarded table no longer has.
    lost := 'FROM ' || o || ' AS tandem_t WHERE NOT EXISTS (SELECT 1 FROM ' || g
         || ' AS tandem_g WHERE ' || tandem.guard_match(key, 'tandem_g', 'tandem_t') || ')';
    trunc := 'IF NOT EXISTS (SELECT 1 FROM ' || g || ') THEN TRUNCATE ' || o
          || '; ELSE DELETE ' || lost || '; END IF;';

    -- What the policy does with `n` differing keys of operation `op`.
    IF policy = 'mirror' THEN
        act := fix;
    ELSIF policy = 'record' THEN
        act := 'PERFORM tandem.record_guard_drift(' || quote_literal(rule_table) || ', '
            || quote_literal(o) || ', op, n, NULL, format(''%s changed %s row(s) of %s that '
            || 'were not mirrored to %s'', upper(op), n, ' || quote_literal(g) || ', '
            || quote_literal(o) || '));';
    ELSE
        act := 'RAISE EXCEPTION USING ERRCODE = ''object_not_in_prerequisite_state'', '
            || 'MESSAGE = format(''tandem: %s changed %s row(s) of %s without mirroring them to %s'', '
            || 'upper(op), n, ' || quote_literal(g) || ', ' || quote_literal(o) || '), '
            || 'DETAIL = ' || quote_literal('The rule for ' || rule_table || ' has guard = fail: '
            || 'every change to ' || g || ' must go through the Tandem proxy, which mirrors it in '
            || 'the same statement. This one came from a function, trigger, rule, view or a '
            || 'connection that does not use the proxy.') || ', '
            || 'HINT = ' || quote_literal('Send the statement through the Tandem proxy, or set '
            || 'the rule''s guard to mirror (SET RULE ' || rule_table || ' GUARD mirror) so the '
            || 'database mirrors such changes itself.') || ';';
    END IF;
    -- Drift the rewrite's own mirror recorded for this statement is not recorded twice.
    IF policy = 'record' THEN
        act := 'IF current_setting(''tandem.drift_recorded'', true) IS DISTINCT FROM '
            || quote_literal(other::text || ' ') || ' || statement_timestamp() THEN ' || act || ' END IF;';
    END IF;
    IF policy = 'mirror' AND on_error = 'record' THEN
        act := 'BEGIN ' || act || ' EXCEPTION WHEN OTHERS THEN '
            || 'GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL; '
            || 'IF current_setting(''tandem.drift_recorded'', true) IS DISTINCT FROM '
            || quote_literal(other::text || ' ') || ' || statement_timestamp() THEN '
            || 'PERFORM tandem.record_guard_drift(' || quote_literal(rule_table) || ', '
            || quote_literal(o) || ', op, n, SQLSTATE, '
            || 'SQLERRM || coalesce(E''\n'' || nullif(detail, ''''), '''')); END IF; END;';
        trunc := 'BEGIN ' || trunc || ' EXCEPTION WHEN OTHERS THEN '
              || 'PERFORM tandem.record_guard_drift(' || quote_literal(rule_table) || ', '
              || quote_literal(o) || ', op, n, SQLSTATE, SQLERRM); END;';
    END IF;
    IF policy <> 'mirror' THEN
        trunc := act;
    END IF;

    -- The fast check, for the common case of a statement whose rows reached the mirror
    -- (every statement Tandem rewrote): each new row equals the mirror's row of its key
    -- (cast to the mirror's types, set columns computed), and each old key the statement
    -- removed is gone from the mirror. One index probe per row, no sort. When it finds a
    -- difference, the state check (`diff`, the guarded table's current rows) decides, so a
    -- row changed again later in the same statement is judged by its final value.
    n_row := (SELECT string_agg(v, ', ' ORDER BY n) FROM (
                 SELECT 'CAST(tandem_n.' || quote_ident(c) || ' AS ' || t || ')', n
                   FROM unnest(cols, types) WITH ORDINALITY AS u(c, t, n)
                 UNION ALL
                 SELECT 'CAST((' || e || ') AS ' || t || ')', cardinality(cols) + n
                   FROM unnest(set_exprs, stypes) WITH ORDINALITY AS u(e, t, n)) AS x(v, n));
    fast_new := '(SELECT count(*) FROM tandem_new AS tandem_n WHERE ((SELECT ROW(' || t_row
             || ') FROM ' || o || ' AS tandem_t WHERE '
             || tandem.guard_match(key, 'tandem_t', 'tandem_n')
             || ') OPERATOR(pg_catalog.*=) ROW(' || n_row || ')) IS NOT TRUE)';
    fast_gone := '(SELECT count(*) FROM tandem_old AS tandem_o WHERE @unless@ EXISTS (SELECT 1 FROM '
              || o || ' AS tandem_t WHERE ' || tandem.guard_match(key, 'tandem_t', 'tandem_o') || '))';
    RETURN E'\nDECLARE\n    n      bigint;\n    op     text := lower(TG_OP);\n    detail text;\nBEGIN\n'
        || '    -- Tandem guard for rule ' || replace(rule_table, E'\n', ' ') || ': '
        || replace(g, E'\n', ' ') || ' -> ' || replace(o, E'\n', ' ') || ', policy ' || policy
        || E'. Generated by tandem.guard_body(); do not edit.\n'
        || E'    IF TG_OP = ''INSERT'' THEN\n'
        || '        SELECT ' || fast_new || E' INTO n;\n'
        || E'        IF n > 0 THEN\n            '
        || replace(diff, '@keys@', keys_new) || E' INTO n;\n'
        || '            IF n > 0 THEN ' || fired || replace(act, '@keys@', keys_new) || E' END IF;\n'
        || E'        END IF;\n'
        || E'    ELSIF TG_OP = ''UPDATE'' THEN\n'
        || '        SELECT ' || fast_new || ' + ' || replace(fast_gone, '@unless@',
               'NOT EXISTS (SELECT 1 FROM tandem_new AS tandem_n WHERE '
               || tandem.guard_match(key, 'tandem_n', 'tandem_o') || ') AND') || E' INTO n;\n'
        || E'        IF n > 0 THEN\n            '
        || replace(diff, '@keys@', keys_upd) || E' INTO n;\n'
        || '            IF n > 0 THEN ' || fired || replace(act, '@keys@', keys_upd) || E' END IF;\n'
        || E'        END IF;\n'
        || E'    ELSIF TG_OP = ''DELETE'' THEN\n'
        || '        SELECT ' || replace(fast_gone, '@unless@', '') || E' INTO n;\n'
        || E'        IF n > 0 THEN\n            '
        || replace(diff, '@keys@', keys_old) || E' INTO n;\n'
        || '            IF n > 0 THEN ' || fired || replace(act, '@keys@', keys_old) || E' END IF;\n'
        || E'        END IF;\n'
        || E'    ELSE\n'
        || '        SELECT count(*) INTO n ' || lost || E';\n'
        || '        IF n > 0 THEN ' || fired || trunc || E' END IF;\n'
        || E'    END IF;\n    RETURN NULL;\nEND\n';
END
$tandem$;

-- `a.k1 = b.k1 AND ...` over `key`.
CREATE OR REPLACE FUNCTION tandem.guard_match(key text[], a text, b text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $tandem$
    SELECT string_agg(a || '.' || pg_catalog.quote_ident(k) || ' = ' || b || '.'
                      || pg_catalog.quote_ident(k), ' AND ')
      FROM pg_catalog.unnest(key) AS k
$tandem$;

-- The body of the trigger function on the side that is not guarded now.
CREATE OR REPLACE FUNCTION tandem.guard_idle_body(rule_table text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $tandem$
    SELECT E'\nBEGIN\n    -- Tandem guard for rule ' || replace(rule_table, E'\n', ' ')
        || E': not this table in the rule''s mode. Generated; do not edit.\n    RETURN NULL;\nEND\n'
$tandem$;

-- The body `side`'s trigger function should have: the check when it is the guarded table,
-- the no-op otherwise. What guard_install writes and guard_report compares with.
CREATE OR REPLACE FUNCTION tandem.guard_side_body(
    side        oid,
    guarded     oid,
    other       oid,
    key         text[],
    set_columns text[],
    set_exprs   text[],
    policy      text,
    on_error    text,
    rule_table  text
) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
    SELECT CASE WHEN side = guarded
                THEN tandem.guard_body(guarded, other, key, set_columns, set_exprs, policy,
                                       on_error, rule_table)
                ELSE tandem.guard_idle_body(rule_table) END
$tandem$;

-- Part `part` (0: columns, 1: expressions) of a rule's `set` when the legacy table is the
-- guarded one; the reverse mirror computes no set columns.
CREATE OR REPLACE FUNCTION tandem.guard_set(set_columns jsonb, guarded oid, legacy oid, part int)
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $tandem$
    SELECT CASE WHEN guarded = legacy
                THEN ARRAY(SELECT e ->> part FROM pg_catalog.jsonb_array_elements(set_columns) e)
                ELSE '{}' END
$tandem$;

-- Installs (or refreshes) the guard of `rule_table`: a trigger function per table
-- (tandem."guard <oid>": the check on `guarded`, a no-op on the other) and four statement
-- triggers on both tables and every table under them. `guarded` NULL: both no-ops.
-- Idempotent; only missing triggers take a lock (ShareRowExclusiveLock, bounded by the
-- caller's lock_timeout). Returns 'installed', 'switched' (bodies only) or 'unchanged'.
CREATE OR REPLACE FUNCTION tandem.guard_install(
    rule_table  text,
    legacy      oid,
    target      oid,
    guarded     oid,
    key         text[],
    set_columns text[],
    set_exprs   text[],
    policy      text,
    on_error    text,
    store       text
) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    other    oid := CASE guarded WHEN legacy THEN target WHEN target THEN legacy END;
    side     oid;
    fn       text;
    body     text;
    current  text;
    rel      oid;
    ev       text;
    switched boolean := false;
    created  boolean := false;
    attrs    text;
    wanted   text;
BEGIN
    PERFORM set_config('tandem.guard_installing', 'on', true);
    -- Checked first: CREATE SEQUENCE IF NOT EXISTS would send the client a NOTICE when this
    -- runs inside its statement (a column change followed by the DDL event trigger).
    IF to_regclass(tandem.guard_counter(rule_table)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE SEQUENCE %s', tandem.guard_counter(rule_table));
        EXCEPTION WHEN duplicate_table THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM tandem.guards g WHERE g.rule_table = guard_install.rule_table
                 AND (g.legacy, g.target) IS DISTINCT FROM (guard_install.legacy, guard_install.target)) THEN
        PERFORM tandem.guard_remove(rule_table);
    END IF;
    FOREACH side IN ARRAY ARRAY[legacy, target] LOOP
        fn := format('tandem.%I', 'guard ' || side);
        body := tandem.guard_side_body(side, guarded, other, key, set_columns, set_exprs,
                                       policy, on_error, rule_table);
        -- The check runs as the role that installed it, under a fixed search_path (each
        -- further SET on the function costs every call a GUC save and restore, measured at
        -- several percent of a one-row statement: the checks are written as per-row index
        -- probes instead of tuning the planner). The idle side needs none of that.
        attrs := CASE WHEN side = guarded
                      THEN 'SECURITY DEFINER SET search_path = pg_catalog, pg_temp'
                      ELSE 'SECURITY INVOKER' END;
        SELECT p.prosrc || coalesce(p.proconfig::text, '') || p.prosecdef::text INTO current
          FROM pg_proc p
         WHERE p.proname = 'guard ' || side AND p.pronamespace = 'tandem'::regnamespace;
        wanted := body || CASE WHEN side = guarded
               THEN '{"search_path=pg_catalog, pg_temp"}true'
               ELSE 'false' END;
        IF current IS DISTINCT FROM wanted THEN
            EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql %s AS %L',
                           fn, attrs, body);
            switched := true;
        END IF;
        -- A table detached from the tree since: its triggers would compare it with the tree.
        FOR rel IN SELECT DISTINCT t.tgrelid FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                    WHERE p.proname = 'guard ' || side AND p.pronamespace = 'tandem'::regnamespace
                      AND t.tgrelid NOT IN (SELECT tandem.guard_tree(side)) LOOP
            FOREACH ev IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'tandem_guard_' || ev, rel::regclass);
            END LOOP;
            created := true;
        END LOOP;
        FOR rel IN SELECT tandem.guard_tree(side) LOOP
            FOREACH ev IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
                IF NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel
                                 AND t.tgname = 'tandem_guard_' || ev) THEN
                    EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                        'tandem_guard_' || ev, upper(ev), rel::regclass,
                        CASE ev WHEN 'insert' THEN 'REFERENCING NEW TABLE AS tandem_new'
                                WHEN 'update' THEN 'REFERENCING NEW TABLE AS tandem_new OLD TABLE AS tandem_old'
                                WHEN 'delete' THEN 'REFERENCING OLD TABLE AS tandem_old'
                                ELSE '' END,
                        fn);
                    -- ALWAYS: also under session_replication_role = replica (a logical
                    -- replication subscription writing the table is a path too).
                    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', rel::regclass,
                                   'tandem_guard_' || ev);
                    created := true;
                ELSIF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel
                                AND t.tgname = 'tandem_guard_' || ev AND t.tgenabled <> 'A') THEN
                    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', rel::regclass,
                                   'tandem_guard_' || ev);
                    created := true;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    INSERT INTO tandem.guards AS g (rule_table, legacy, target, guarded, other, direction, key,
                                    set_columns, set_exprs, policy, on_error, store, columns,
                                    other_columns)
    VALUES (rule_table, legacy, target, guarded, other,
            CASE guarded WHEN legacy THEN 'forward' WHEN target THEN 'reverse' ELSE 'none' END,
            key, set_columns, set_exprs, policy, on_error, store,
            CASE WHEN guarded IS NULL THEN '[]' ELSE tandem.guard_columns(guarded) END,
            CASE WHEN other IS NULL THEN '[]' ELSE tandem.guard_columns(other) END)
    ON CONFLICT ON CONSTRAINT guards_pkey DO UPDATE SET
        legacy = EXCLUDED.legacy, target = EXCLUDED.target, guarded = EXCLUDED.guarded,
        other = EXCLUDED.other, direction = EXCLUDED.direction, key = EXCLUDED.key,
        set_columns = EXCLUDED.set_columns, set_exprs = EXCLUDED.set_exprs,
        policy = EXCLUDED.policy, on_error = EXCLUDED.on_error, store = EXCLUDED.store,
        columns = EXCLUDED.columns, other_columns = EXCLUDED.other_columns,
        installed_at = now()
    WHERE (g.legacy, g.target, g.guarded, g.other, g.key, g.set_columns, g.set_exprs, g.policy,
           g.on_error, g.store, g.columns, g.other_columns)
          IS DISTINCT FROM
          (EXCLUDED.legacy, EXCLUDED.target, EXCLUDED.guarded, EXCLUDED.other, EXCLUDED.key,
           EXCLUDED.set_columns, EXCLUDED.set_exprs, EXCLUDED.policy, EXCLUDED.on_error,
           EXCLUDED.store, EXCLUDED.columns, EXCLUDED.other_columns);
    PERFORM set_config('tandem.guard_installing', 'off', true);
    RETURN CASE WHEN created THEN 'installed' WHEN switched THEN 'switched' ELSE 'unchanged' END;
END
$tandem$;

-- The guard of a registry row installed again (after a column change, a new partition).
CREATE OR REPLACE FUNCTION tandem.guard_reinstall(gd tandem.guards) RETURNS text
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
    SELECT tandem.guard_install(gd.rule_table, gd.legacy, gd.target, gd.guarded, gd.key,
                                gd.set_columns, gd.set_exprs, gd.policy, gd.on_error, gd.store)
$tandem$;

-- Removes the guard of `rule_table`: its triggers on both tables and their functions.
-- Returns whether anything was removed.
CREATE OR REPLACE FUNCTION tandem.guard_remove(rule_table text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    old      tandem.guards;
    side     oid;
    trig     record;
    wait     text := coalesce(nullif(current_setting('tandem.guard_lock_timeout', true), ''), '2s');
    previous text := current_setting('lock_timeout');
BEGIN
    -- The rule is gone (or guard_sync records its mode again after this).
    PERFORM tandem.written_sides_sync(guard_remove.rule_table, NULL, NULL);
    SELECT * INTO old FROM tandem.guards g WHERE g.rule_table = guard_remove.rule_table;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- DROP TRIGGER takes ACCESS EXCLUSIVE: wait for it no longer than guard_sync does (this
    -- runs alone for DROP RULE and a renamed rule), so writers never queue behind it.
    IF previous = '0' OR previous::interval > wait::interval THEN
        PERFORM set_config('lock_timeout', wait, true);
    END IF;
    PERFORM set_config('tandem.guard_installing', 'on', true);
    FOREACH side IN ARRAY ARRAY[old.legacy, old.target] LOOP
        FOR trig IN
            SELECT t.tgname, t.tgrelid FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE p.proname = 'guard ' || side AND p.pronamespace = 'tandem'::regnamespace
        LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', trig.tgname, trig.tgrelid::regclass);
        END LOOP;
        EXECUTE format('DROP FUNCTION IF EXISTS tandem.%I()', 'guard ' || side);
    END LOOP;
    DELETE FROM tandem.guards g WHERE g.rule_table = guard_remove.rule_table;
    PERFORM set_config('tandem.guard_installing', 'off', true);
    PERFORM set_config('lock_timeout', previous, true);
    RETURN true;
END
$tandem$;

-- What a rule row asks for, by mode: dual_write and union_read guard the legacy table,
-- cutover the target, other modes neither (`guarded` NULL); `wanted` false for guard = off
-- or when a table does not exist.
CREATE OR REPLACE FUNCTION tandem.guard_plan(
    table_name text,
    target     text,
    key        text[],
    mode       text,
    guard      text,
    OUT wanted boolean,
    OUT legacy_oid oid,
    OUT target_oid oid,
    OUT guarded oid,
    OUT guard_key text[]
) RETURNS record
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    pk text[];
    k  text[] := key;
BEGIN
    legacy_oid := to_regclass(table_name);
    target_oid := to_regclass(target);
    wanted := guard <> 'off' AND legacy_oid IS NOT NULL AND target_oid IS NOT NULL;
    IF NOT wanted THEN
        RETURN;
    END IF;
    SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
      INTO pk
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = legacy_oid AND i.indisprimary;
    IF k IS NULL OR cardinality(k) = 0 THEN
        -- The legacy primary key plus the target's partition key, as the proxy resolves it.
        k := pk || coalesce(ARRAY(
            SELECT a.attname::text FROM pg_partitioned_table p
              JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY (p.partattrs::int2[])
             WHERE p.partrelid = target_oid AND a.attname::text <> ALL (coalesce(pk, '{}'))
             ORDER BY array_position(p.partattrs::int2[], a.attnum)), '{}');
    END IF;
    IF mode IN ('dual_write', 'union_read') THEN
        guarded := legacy_oid;
    ELSIF mode = 'cutover' THEN
        guarded := target_oid;
        -- As the reverse rewrite: the legacy primary key when the rule's key extends it.
        IF pk IS NOT NULL AND pk <@ k THEN
            k := pk;
        END IF;
    END IF;
    guard_key := coalesce(k, '{}');
END
$tandem$;

-- guard_sync's work once the plan `p` (a tandem.guard_plan row) is known.
CREATE OR REPLACE FUNCTION tandem.guard_apply(
    table_name      text,
    p               record,
    set_columns     jsonb,
    guard           text,
    on_mirror_error text,
    store           text
) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
BEGIN
    IF NOT p.wanted THEN
        RETURN CASE WHEN tandem.guard_remove(table_name) THEN 'removed' ELSE 'off' END;
    END IF;
    RETURN tandem.guard_install(
        table_name, p.legacy_oid, p.target_oid, p.guarded, p.guard_key,
        tandem.guard_set(set_columns, p.guarded, p.legacy_oid, 0),
        tandem.guard_set(set_columns, p.guarded, p.legacy_oid, 1),
        guard, on_mirror_error, store);
END
$tandem$;

-- Makes the database match a rule row. Called by the rule store's trigger, so every change
-- of a rule (console, CLI, config seeding, plain SQL) moves the guard in the same
-- transaction. Installing the triggers (first time only) waits at most
-- tandem.guard_lock_timeout (default 2s) for the tables' lock; a timeout fails the change
-- with 55P03 and the caller retries. Mode changes take no lock.
CREATE OR REPLACE FUNCTION tandem.guard_sync(
    table_name      text,
    target          text,
    key             text[],
    mode            text,
    guard           text,
    on_mirror_error text,
    set_columns     jsonb,
    store           text
) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    p        record;
    wait     text := coalesce(nullif(current_setting('tandem.guard_lock_timeout', true), ''), '2s');
    previous text := current_setting('lock_timeout');
    result   text;
BEGIN
    SELECT * INTO p FROM tandem.guard_plan(table_name, target, key, mode, guard);
    IF previous = '0' OR previous::interval > wait::interval THEN
        PERFORM set_config('lock_timeout', wait, true);
    END IF;
    -- tandem.guard_defer = on (the proxy's start, seeding the store from its config): a lock
    -- not granted in time leaves the guard for later (SHOW RULES says 'missing') instead of
    -- failing the start; the proxy tries again at its next reload.
    IF current_setting('tandem.guard_defer', true) = 'on' THEN
        BEGIN
            result := tandem.guard_apply(table_name, p, set_columns, guard, on_mirror_error, store);
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'tandem: the guard of % was not installed: %', table_name, SQLERRM
                USING HINT = 'A long transaction holds the table; the proxy tries again at its next reload.';
            result := 'deferred';
        END;
    ELSE
        result := tandem.guard_apply(table_name, p, set_columns, guard, on_mirror_error, store);
    END IF;
    PERFORM set_config('lock_timeout', previous, true);
    -- Which table applications write now: the copied triggers' condition (triggers.sql).
    PERFORM tandem.written_sides_sync(table_name, target, mode);
    RETURN result;
END
$tandem$;

-- A rule's guard now: 'in place' (the check on the table its mode guards), 'idle' (its
-- mode guards neither table; the triggers wait as no-ops), 'off' (guard = off, none
-- installed), 'missing' (wanted, not installed) or 'stale' (installed for another mode,
-- policy or column set, or a trigger missing on a table under one of the two).
CREATE OR REPLACE FUNCTION tandem.guard_report(
    table_name      text,
    target          text,
    key             text[],
    mode            text,
    guard           text,
    on_mirror_error text,
    set_columns     jsonb
) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    p    record;
    old  tandem.guards;
    side oid;
    want text;
    src  text;
BEGIN
    SELECT * INTO p FROM tandem.guard_plan(table_name, target, key, mode, guard);
    SELECT * INTO old FROM tandem.guards g WHERE g.rule_table = table_name;
    IF NOT p.wanted THEN
        RETURN CASE WHEN FOUND THEN 'stale' ELSE 'off' END;
    END IF;
    IF NOT FOUND THEN
        RETURN 'missing';
    END IF;
    FOREACH side IN ARRAY ARRAY[p.legacy_oid, p.target_oid] LOOP
        want := tandem.guard_side_body(
                    side, p.guarded,
                    CASE WHEN p.guarded = p.legacy_oid THEN p.target_oid ELSE p.legacy_oid END,
                    p.guard_key,
                    tandem.guard_set(set_columns, p.guarded, p.legacy_oid, 0),
                    tandem.guard_set(set_columns, p.guarded, p.legacy_oid, 1),
                    guard, on_mirror_error, table_name);
        SELECT p2.prosrc INTO src FROM pg_proc p2
         WHERE p2.proname = 'guard ' || side AND p2.pronamespace = 'tandem'::regnamespace;
        IF src IS DISTINCT FROM want THEN
            RETURN 'stale';
        END IF;
        IF EXISTS (SELECT 1 FROM tandem.guard_tree(side) AS rel,
                          unnest(ARRAY['insert', 'update', 'delete', 'truncate']) AS ev
                    WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel
                                        AND t.tgname = 'tandem_guard_' || ev AND t.tgenabled = 'A'))
        THEN
            RETURN 'stale';
        END IF;
    END LOOP;
    RETURN CASE WHEN p.guarded IS NULL THEN 'idle' ELSE 'in place' END;
END
$tandem$;

-- Column changes of a guarded table, from any session or tool, mirrored to the other table
-- in the same transaction (ddl_command_end of ALTER TABLE): ADD, DROP, RENAME COLUMN, ALTER
-- TYPE, SET/DROP DEFAULT, SET/DROP NOT NULL. A change the mirror cannot follow fails the
-- DDL with a hint. A column change of the other table that would break the mirror (drop or
-- rename a mirrored column, change its type) is refused. Afterwards the guard is installed
-- again for the new columns, and the rule store is told (a rules_history row and NOTIFY),
-- so every proxy resolves the rule again before its next transaction.
CREATE OR REPLACE FUNCTION tandem.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    cmd     record;
    gd      tandem.guards;
    before  jsonb;
    now_col record;
    old_col jsonb;
    o_type  text;
    o_has   boolean;
    o       text;
    volatile_default boolean;
    copy_set     text;
    copy_differs text;
    touched text[] := '{}';
BEGIN
    IF current_setting('tandem.in_guard_ddl', true) = 'on'
       OR current_setting('tandem.guard_installing', true) = 'on' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() c
                WHERE c.classid = 'pg_class'::regclass AND c.command_tag = 'ALTER TABLE' LOOP
        -- ALTER TABLE ... DISABLE TRIGGER (ALL, USER or by name) would switch the guard off
        -- behind the rule's back: the proxy leaves writes it cannot rewrite to the guard.
        IF current_setting('tandem.guard_installing', true) IS DISTINCT FROM 'on'
           AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = cmd.objid
                         AND t.tgname LIKE 'tandem\_guard\_%' AND t.tgenabled IN ('D', 'R')) THEN
            RAISE EXCEPTION 'tandem: the guard''s triggers on % cannot be disabled while its rule is active',
                    cmd.objid::regclass
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Set the rule''s guard to off (SET RULE ... GUARD off), which removes them.';
        END IF;
        -- A change of the other table: refuse what breaks the mirror.
        FOR gd IN SELECT * FROM tandem.guards g WHERE g.other = cmd.objid AND g.guarded IS NOT NULL LOOP
            -- A mirrored column (on both tables when the guard was installed) gone from
            -- the other table by name: dropped or renamed there.
            IF EXISTS (SELECT 1 FROM jsonb_array_elements(gd.columns) c
                        WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(gd.other_columns) oc
                                       WHERE oc ->> 'name' = c ->> 'name')
                          AND NOT EXISTS (SELECT 1 FROM pg_attribute b
                                           WHERE b.attrelid = gd.other AND b.attnum > 0
                                             AND NOT b.attisdropped AND b.attname = c ->> 'name')
                          AND EXISTS (SELECT 1 FROM pg_attribute a
                                       WHERE a.attrelid = gd.guarded AND a.attname = c ->> 'name'
                                         AND NOT a.attisdropped)) THEN
                RAISE EXCEPTION 'tandem: % is the mirror of ruled table % (rule for %); dropping or renaming a column the mirror writes would break it',
                        gd.other::regclass, gd.guarded::regclass, gd.rule_table
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = format('Change the column of %s instead: Tandem applies the same change to %s in the same transaction.',
                                        gd.guarded::regclass, gd.other::regclass);
            END IF;
            -- In cutover the target is the table of record, and the applications' name for
            -- it is the legacy one: a column added to the legacy table (through Tandem or
            -- not) would never reach the table the applications use. Added in this
            -- transaction: its pg_attribute row is this transaction's.
            IF gd.direction = 'reverse' AND EXISTS (
                   SELECT 1 FROM pg_attribute b
                    WHERE b.attrelid = gd.other AND b.attnum > 0 AND NOT b.attisdropped
                      AND b.xmin::text = (pg_current_xact_id()::text::int8 % 4294967296)::text
                      AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                       WHERE a.attrelid = gd.guarded AND a.attname = b.attname
                                         AND NOT a.attisdropped)) THEN
                RAISE EXCEPTION 'tandem: % is in cutover: its target % is the table of record, a column added to % alone would not reach it',
                        gd.rule_table, gd.guarded::regclass, gd.other::regclass
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = format('Add the column to %s: Tandem adds it to %s in the same transaction.',
                                        gd.guarded::regclass, gd.other::regclass);
            END IF;
            touched := touched || gd.rule_table;
        END LOOP;
        -- A change of the guarded table (or a table under it): follow it on the other.
        FOR gd IN SELECT * FROM tandem.guards g
                   WHERE g.legacy IN (SELECT tandem.guard_ancestors(cmd.objid))
                      OR g.target IN (SELECT tandem.guard_ancestors(cmd.objid)) LOOP
            touched := touched || gd.rule_table;
            IF gd.guarded IS DISTINCT FROM cmd.objid THEN
                CONTINUE; -- a partition, or a table not guarded now: installed again below
            END IF;
            before := gd.columns;
            o := gd.other::regclass::text;
            PERFORM set_config('tandem.in_guard_ddl', 'on', true);
            -- Dropped and renamed columns, by attnum.
            FOR old_col IN SELECT * FROM jsonb_array_elements(before) LOOP
                SELECT a.attname::text AS name, a.attisdropped AS dropped INTO now_col
                  FROM pg_attribute a
                 WHERE a.attrelid = gd.guarded AND a.attnum = (old_col ->> 'attnum')::int;
                o_has := EXISTS (SELECT 1 FROM pg_attribute b WHERE b.attrelid = gd.other
                                   AND b.attname = old_col ->> 'name' AND NOT b.attisdropped
                                   AND b.attnum > 0);
                IF now_col.dropped AND o_has THEN
                    IF (old_col ->> 'name') = ANY (gd.key) THEN
                        RAISE EXCEPTION 'tandem: column % is part of the key of the rule for %; it cannot be dropped while the rule is active',
                                old_col ->> 'name', gd.rule_table
                            USING ERRCODE = 'object_not_in_prerequisite_state',
                                  HINT = 'Finish or drop the rule first.';
                    END IF;
                    EXECUTE format('ALTER TABLE %s DROP COLUMN %I', o, old_col ->> 'name');
                ELSIF NOT now_col.dropped AND now_col.name <> (old_col ->> 'name') AND o_has THEN
                    IF (old_col ->> 'name') = ANY (gd.key) THEN
                        RAISE EXCEPTION 'tandem: column % is part of the key of the rule for %; it cannot be renamed while the rule is active',
                                old_col ->> 'name', gd.rule_table
                            USING ERRCODE = 'object_not_in_prerequisite_state',
                                  HINT = 'Finish or drop the rule first.';
                    END IF;
                    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', o, old_col ->> 'name', now_col.name);
                END IF;
            END LOOP;
            -- Added columns and changed types, defaults and NOT NULL.
            FOR now_col IN
                SELECT a.attnum, a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type,
                       a.attnotnull AS notnull, a.attgenerated AS generated, a.attidentity AS identity,
                       pg_get_expr(d.adbin, d.adrelid) AS def, d.oid AS def_oid,
                       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                            THEN (SELECT format('%I.%I', n.nspname, c.collname) FROM pg_collation c
                                    JOIN pg_namespace n ON n.oid = c.collnamespace
                                   WHERE c.oid = a.attcollation) END AS collation
                  FROM pg_attribute a
                  JOIN pg_type t ON t.oid = a.atttypid
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = gd.guarded AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum
            LOOP
                SELECT c INTO old_col FROM jsonb_array_elements(before) c
                 WHERE (c ->> 'attnum')::int = now_col.attnum;
                SELECT format_type(b.atttypid, b.atttypmod) INTO o_type FROM pg_attribute b
                 WHERE b.attrelid = gd.other AND b.attname = now_col.name AND NOT b.attisdropped
                   AND b.attnum > 0;
                IF old_col IS NULL AND o_type IS NULL THEN
                    -- A new column: the other table gets it, with the same values.
                    IF now_col.generated = 's' THEN
                        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s %s GENERATED ALWAYS AS (%s) STORED',
                            o, now_col.name, now_col.type,
                            coalesce('COLLATE ' || now_col.collation, ''), now_col.def);
                        CONTINUE;
                    END IF;
                    -- Volatile: any function the default calls is (read from the expression
                    -- tree: pg_depend records no dependency on built-in functions, so
                    -- random(), nextval() and a serial's default would pass as constant
                    -- and the other table would compute its own values).
                    volatile_default := now_col.identity <> '' OR EXISTS (
                        SELECT 1 FROM pg_attrdef d
                         CROSS JOIN LATERAL regexp_matches(d.adbin::text, ':(?:op)?funcid (\d+)', 'g') AS m(f)
                          JOIN pg_proc p ON p.oid = m.f[1]::oid
                         WHERE d.oid = now_col.def_oid AND p.provolatile = 'v');
                    IF now_col.def IS NOT NULL AND NOT volatile_default THEN
                        -- Every existing row got the same value: so do the other's.
                        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s %s DEFAULT %s',
                            o, now_col.name, now_col.type,
                            coalesce('COLLATE ' || now_col.collation, ''), now_col.def);
                    ELSE
                        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s %s',
                            o, now_col.name, now_col.type, coalesce('COLLATE ' || now_col.collation, ''));
                        IF volatile_default THEN
                            -- Values computed per row (a sequence, random(), identity): copied.
                            EXECUTE format('UPDATE %s AS tandem_t SET %I = tandem_g.%I FROM %s AS tandem_g WHERE %s',
                                o, now_col.name, now_col.name, gd.guarded::regclass,
                                tandem.guard_match(gd.key, 'tandem_t', 'tandem_g'));
                            IF now_col.def IS NOT NULL AND now_col.identity = '' THEN
                                EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s',
                                    o, now_col.name, now_col.def);
                            END IF;
                        END IF;
                    END IF;
                    IF now_col.notnull THEN
                        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', o, now_col.name);
                    END IF;
                    CONTINUE;
                END IF;
                IF old_col IS NULL OR o_type IS NULL THEN
                    CONTINUE; -- a legacy column the other never had (left out of the mirror)
                END IF;
                IF (old_col ->> 'type') <> now_col.type AND o_type <> now_col.type THEN
                    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING %I::%s',
                        o, now_col.name, now_col.type, now_col.name, now_col.type);
                END IF;
                IF (old_col ->> 'default') IS DISTINCT FROM now_col.def THEN
                    IF now_col.def IS NULL THEN
                        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', o, now_col.name);
                    ELSIF now_col.generated = '' THEN
                        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', o, now_col.name, now_col.def);
                    END IF;
                END IF;
                IF (old_col ->> 'notnull')::boolean <> now_col.notnull THEN
                    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I %s NOT NULL', o, now_col.name,
                                   CASE WHEN now_col.notnull THEN 'SET' ELSE 'DROP' END);
                END IF;
            END LOOP;
            -- The guarded table's columns were rewritten (ALTER TYPE, whose USING expression
            -- may change the values, to a new type or the same one: amount * 100): the
            -- other table takes the values the guarded table now holds where they differ.
            -- Key columns are left out: the rows are matched on them.
            IF EXISTS (SELECT 1 FROM unnest(string_to_array(
                              coalesce(current_setting('tandem.guard_rewritten', true), ''), ' ')) AS r(rel)
                        WHERE r.rel <> '' AND r.rel::oid IN (SELECT tandem.guard_tree(gd.guarded))) THEN
                SELECT string_agg(format('%I = tandem_g.%I', a.attname, a.attname), ', ' ORDER BY a.attnum),
                       string_agg(format('tandem_t.%I::text IS DISTINCT FROM tandem_g.%I::text',
                                         a.attname, a.attname), ' OR ' ORDER BY a.attnum)
                  INTO copy_set, copy_differs
                  FROM pg_attribute a
                  JOIN pg_attribute b ON b.attrelid = gd.other AND b.attname = a.attname AND b.attnum > 0
                                     AND NOT b.attisdropped AND b.attgenerated = ''
                 WHERE a.attrelid = gd.guarded AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = '' AND a.attname::text <> ALL (gd.key)
                   AND a.attname::text <> ALL (gd.set_columns);
                IF copy_set IS NOT NULL THEN
                    EXECUTE format('UPDATE %s AS tandem_t SET %s FROM %s AS tandem_g WHERE %s AND (%s)',
                        o, copy_set, gd.guarded::regclass,
                        tandem.guard_match(gd.key, 'tandem_t', 'tandem_g'), copy_differs);
                END IF;
            END IF;
            PERFORM set_config('tandem.in_guard_ddl', 'off', true);
        END LOOP;
    END LOOP;
    PERFORM set_config('tandem.guard_rewritten', '', true);
    -- Each touched rule: its guard installed again for the new columns, its store told.
    FOR gd IN SELECT * FROM tandem.guards g WHERE g.rule_table = ANY (touched) LOOP
        PERFORM tandem.guard_reinstall(gd);
        EXECUTE format('INSERT INTO %I.rules_history (table_name, action, by) VALUES ($1, $2, current_user)',
                       gd.store)
          USING gd.rule_table, 'ddl';
        PERFORM pg_notify(gd.store || '_rules', gd.rule_table);
    END LOOP;
END
$tandem$;

-- A guarded table (or a table under it) whose columns ALTER TABLE rewrites, noted for
-- tandem.guard_ddl at the end of the command: a rewrite is the only sign of a USING
-- expression that changed the values (the catalog shows the same type).
CREATE OR REPLACE FUNCTION tandem.guard_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    rel oid := pg_event_trigger_table_rewrite_oid();
BEGIN
    -- 4: AT_REWRITE_COLUMN_REWRITE (a column's values computed again).
    IF pg_event_trigger_table_rewrite_reason() & 4 <> 0
       AND EXISTS (SELECT 1 FROM tandem.guards g
                    WHERE g.guarded IS NOT NULL AND rel IN (SELECT tandem.guard_tree(g.guarded))) THEN
        PERFORM set_config('tandem.guard_rewritten',
                           coalesce(current_setting('tandem.guard_rewritten', true), '') || rel || ' ',
                           true);
    END IF;
END
$tandem$;

-- Partitions created under a guarded table get the guard's triggers too.
CREATE OR REPLACE FUNCTION tandem.guard_ddl_create() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    gd tandem.guards;
BEGIN
    FOR gd IN SELECT DISTINCT ON (g.rule_table) g.*
                FROM pg_event_trigger_ddl_commands() c,
                     LATERAL tandem.guard_ancestors(c.objid) AS up(rel)
                JOIN tandem.guards g ON up.rel IN (g.legacy, g.target)
               WHERE c.classid = 'pg_class'::regclass AND c.objid NOT IN (g.legacy, g.target) LOOP
        PERFORM tandem.guard_reinstall(gd);
    END LOOP;
END
$tandem$;

-- The guard's triggers and functions are dropped only by Tandem (guard_remove, when the
-- rule's guard is set off or the rule dropped, or with the table itself): a hand-made DROP
-- would leave the proxy leaving writes to a guard that is gone.
CREATE OR REPLACE FUNCTION tandem.guard_protect() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $tandem$
DECLARE
    gone record;
BEGIN
    IF current_setting('tandem.guard_installing', true) = 'on' THEN
        RETURN;
    END IF;
    SELECT d.object_identity INTO gone FROM pg_event_trigger_dropped_objects() d
     WHERE d.original
       AND ((d.object_type = 'trigger' AND d.object_identity LIKE 'tandem\_guard\_% on %')
            OR (d.object_type = 'function' AND d.schema_name = 'tandem'
                AND d.object_identity LIKE 'tandem."guard %"()'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tandem: % is part of a rule''s guard and is not dropped by hand', gone.object_identity
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set the rule''s guard to off (SET RULE ... GUARD off) or drop the rule: Tandem removes its guard then.';
    END IF;
END
$tandem$;

-- Event triggers need a superuser: without one the column-change follow-up is not
-- installed (SHOW RULES says so), and column changes must be made on both tables by hand.
DO $tandem_ddl$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'tandem_guard_ddl') THEN
            CREATE EVENT TRIGGER tandem_guard_ddl ON ddl_command_end
                WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION tandem.guard_ddl();
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'tandem_guard_protect') THEN
            CREATE EVENT TRIGGER tandem_guard_protect ON sql_drop
                WHEN TAG IN ('DROP TRIGGER', 'DROP FUNCTION') EXECUTE FUNCTION tandem.guard_protect();
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'tandem_guard_ddl_create') THEN
            CREATE EVENT TRIGGER tandem_guard_ddl_create ON ddl_command_end
                WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION tandem.guard_ddl_create();
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'tandem_guard_rewrite') THEN
            CREATE EVENT TRIGGER tandem_guard_rewrite ON table_rewrite
                WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION tandem.guard_rewrite();
        END IF;
        -- Also under session_replication_role = replica, like the guard's triggers.
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger
                    WHERE evtname LIKE 'tandem\_guard\_%' AND evtenabled <> 'A') THEN
            ALTER EVENT TRIGGER tandem_guard_ddl ENABLE ALWAYS;
            ALTER EVENT TRIGGER tandem_guard_protect ENABLE ALWAYS;
            ALTER EVENT TRIGGER tandem_guard_ddl_create ENABLE ALWAYS;
            ALTER EVENT TRIGGER tandem_guard_rewrite ENABLE ALWAYS;
        END IF;
    END IF;
END
$tandem_ddl$;
