//! `tandem parity`: a clean migration passes; every injected divergence is found and named.

use std::time::Duration;

use tandem::ops::backfill::{self, Options as BackfillOptions, Outcome};
use tandem::ops::parity::{self, Options, Report, TableReport};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};

fn options(min_samples: i64) -> Options {
    Options {
        tables: Vec::new(),
        min_overlap: 0.95,
        min_samples,
        sample_limit: 20,
        strict_indexes: false,
        ..Default::default()
    }
}

async fn report(config: &tandem::Config, pair: &Pair) -> (Report, TableReport) {
    let mut opts = options(0);
    opts.tables = vec![TableName::new(Some("public"), &pair.legacy)];
    let report = parity::run(config, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let table = report.tables[0].clone();
    (report, table)
}

/// `SET RULE <legacy> DROP_COLUMNS (columns)` through the store.
async fn drop_columns(config: &tandem::Config, pair: &Pair, columns: Vec<String>) {
    let mut admin = pg().direct().await;
    tandem::control::store::change::apply(
        &mut admin,
        &tandem::control::store::Store::new(&config.store.schema),
        tandem::control::store::change::RuleChange::SetDropColumns {
            table: TableName::new(Some("public"), &pair.legacy),
            columns,
        },
        "test",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
}

async fn backfill(config: &tandem::Config, pair: &Pair) {
    let outcome = backfill::run(
        config,
        &BackfillOptions {
            batch_size: 100,
            ..BackfillOptions::new(TableName::new(Some("public"), &pair.legacy))
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(matches!(outcome, Outcome::Finished(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_migration_is_ready_and_injected_divergence_is_named() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) \
             SELECT CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, g, 'n' FROM generate_series(1, 500) g",
        ))
        .await
        .unwrap();
    // No guard: the drift below is injected around the proxy on purpose, for the report to
    // find (the guard would mirror it; see guard.rs for that path).
    let config = config_with(&[pair.rule(Kind::List).guard("off")]);
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;

    // Before the backfill: every legacy row is missing, but none is divergence yet.
    let (_, t) = report(&config, &pair).await;
    assert_eq!((t.legacy_rows, t.target_rows, t.delta), (500, 0, 500));
    assert_eq!(t.missing.count, 500);
    assert_eq!(t.not_yet_backfilled, 500);
    assert_eq!(t.divergence, 0);
    assert!(!t.ready, "the backfill has not run");
    assert!(t.checks.iter().any(|c| c.name == "backfill" && !c.ok));

    backfill(&config, &pair).await;
    via.batch_execute(&pair.sql(
        "UPDATE {legacy} SET note = 'through tandem' WHERE id <= 10; DELETE FROM {legacy} WHERE id = 11; \
         INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 7)",
    ))
    .await
    .unwrap();
    let (report_clean, t) = report(&config, &pair).await;
    assert!(t.ready, "{:#?}", t.checks);
    assert!(report_clean.ready);
    assert_eq!(
        (t.missing.count, t.extra.count, t.different.count),
        (0, 0, 0)
    );
    assert_eq!(t.delta, 0);

    // Drift behind Tandem's back, each kind once, on both sides.
    check
        .batch_execute(&pair.sql(
            "UPDATE {target} SET note = 'target edited' WHERE id = 20;
             UPDATE {legacy} SET amount = 999 WHERE id = 21;
             DELETE FROM {target} WHERE id = 22;
             INSERT INTO {target} (id, tenant, amount, note, score, token, created_at)
               VALUES (100000, 'acme', 1, 'extra', 1, gen_random_uuid(), now());
             DELETE FROM {legacy} WHERE id = 23;",
        ))
        .await
        .unwrap();
    let (report_bad, t) = report(&config, &pair).await;
    assert!(!t.ready && !report_bad.ready);
    assert_eq!(t.missing.count, 1, "{:?}", t.missing);
    assert!(
        t.missing.sample_keys[0].starts_with("(22,"),
        "{:?}",
        t.missing
    );
    assert_eq!(t.extra.count, 2, "{:?}", t.extra);
    let extra = t.extra.sample_keys.join(" ");
    assert!(
        extra.contains("(23,") && extra.contains("(100000,"),
        "{extra}"
    );
    assert_eq!(t.different.count, 2, "{:?}", t.different);
    let different = t.different.sample_keys.join(" ");
    assert!(
        different.contains("(20,") && different.contains("(21,"),
        "{different}"
    );
    assert_eq!(t.divergence, 5);
    assert_eq!(
        t.not_yet_backfilled, 0,
        "the backfill finished: missing rows are divergence"
    );
    let failed: Vec<_> = t.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, vec!["divergence"]);

    // The files, and the overlap gate without samples.
    let dir = std::env::temp_dir().join(tandem_tests::unique("parity"));
    let written = parity::write(&report_bad, &dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(written.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["ready"], false);
    assert_eq!(json["tables"][0]["divergence"], 5);
    let html = std::fs::read_to_string(written.join("report.html")).unwrap();
    assert!(html.contains("not ready") && html.contains(&pair.legacy));
    let _ = std::fs::remove_dir_all(&dir);
    let mut gated = options(20);
    gated.tables = vec![TableName::new(Some("public"), &pair.legacy)];
    let r = parity::run(&config, &gated).await.unwrap();
    let overlap = r.tables[0]
        .checks
        .iter()
        .find(|c| c.name == "shadow_overlap")
        .unwrap();
    assert!(
        !overlap.ok && overlap.detail.contains("no shadow-read samples"),
        "{overlap:?}"
    );
}

/// Waits until `n` shadow samples of `pair`'s table are recorded.
async fn samples(check: &tokio_postgres::Client, schema: &str, pair: &Pair, n: i64) {
    let start = std::time::Instant::now();
    loop {
        let got: i64 = check
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".shadow_samples WHERE rule_table = $1"),
                &[&format!("public.{}", pair.legacy)],
            )
            .await
            .unwrap()
            .get(0);
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "only {got} samples recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_measure_overlap_and_gate_cutover() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) SELECT 'acme', g, 'n' || g FROM generate_series(1, 200) g;
             INSERT INTO {target} SELECT * FROM {legacy};",
        ))
        .await
        .unwrap();
    let config = config_with(&[pair.rule(Kind::Hash).sample(1.0)]);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config.clone()).await;
    backfill(&config, &pair).await;
    let via = through(&proxy).await;
    let top = pair.sql("SELECT id, note FROM {legacy} ORDER BY amount DESC LIMIT 20");
    for _ in 0..10 {
        // Simple protocol, and an extended-protocol read without parameters.
        via.simple_query(&top).await.unwrap();
        via.query(&pair.sql("SELECT count(*) FROM {legacy}"), &[])
            .await
            .unwrap();
    }
    // Prepared reads with bind parameters (binary, as tokio-postgres sends them).
    let by_amount = via
        .prepare(&pair.sql("SELECT id, note FROM {legacy} WHERE id > $1 ORDER BY id LIMIT $2"))
        .await
        .unwrap();
    for i in 0..10i64 {
        via.query(&by_amount, &[&(i * 10), &5i64]).await.unwrap();
    }
    samples(&check, &schema, &pair, 30).await;
    let with_params: i64 = check
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".shadow_samples WHERE statement LIKE '%$1%' AND NOT rows_differ"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(with_params, 10, "parameterised reads are sampled and equal");
    let mut opts = options(20);
    opts.tables = vec![TableName::new(Some("public"), &pair.legacy)];
    let r = parity::run(&config, &opts).await.unwrap();
    let t = &r.tables[0];
    assert!(t.ready, "{:#?}", t.checks);
    assert_eq!(t.shadow.mean_overlap, Some(1.0));
    assert!(t.shadow.series.len() >= 20);

    // The target loses its top rows (a truncated target): the top-20 read overlaps less.
    check
        .batch_execute(&pair.sql("DELETE FROM {target} WHERE amount > 190"))
        .await
        .unwrap();
    for _ in 0..30 {
        via.simple_query(&top).await.unwrap();
    }
    samples(&check, &schema, &pair, 60).await;
    let r = parity::run(&config, &opts).await.unwrap();
    let t = &r.tables[0];
    assert!(t.shadow.min_overlap.unwrap() < 0.95, "{:?}", t.shadow);
    assert!(t.shadow.below_threshold >= 30, "{:?}", t.shadow);
    let gate = t
        .checks
        .iter()
        .find(|c| c.name == "shadow_overlap")
        .unwrap();
    assert!(!gate.ok, "{gate:?}");
    // The console's cheap view of the same figures.
    let mut console_config = config.clone();
    console_config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("pw".into()),
        password_env: None,
    });
    let console = start_ruled_proxy(console_config).await;
    let out = tandem::ops::rules::run(
        &format!(
            "postgres://admin:pw@127.0.0.1:{}/tandem",
            console.addr.port()
        ),
        "SHOW PARITY; SHOW STATS",
    )
    .await
    .unwrap();
    assert!(
        out.contains(&pair.legacy) && out.contains("finished"),
        "{out}"
    );
    let example: String = check
        .query_one(
            &format!(
                "SELECT example FROM \"{schema}\".shadow_samples WHERE rows_differ ORDER BY id DESC LIMIT 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(example.starts_with("legacy only: "), "{example}");
}

/// The check named `name` of `t`.
fn find_check<'a>(t: &'a TableReport, name: &str) -> &'a parity::Check {
    t.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check: {:#?}", t.checks))
}

/// A Hash pair with `n` legacy rows written directly, before any rule exists.
async fn hash_pair(check: &tokio_postgres::Client, n: i64) -> Pair {
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, check).await;
    check
        .batch_execute(&pair.sql(&format!(
            "INSERT INTO {{legacy}} (tenant, amount, note) SELECT 'acme', g, 'n' || g FROM generate_series(1, {n}) g"
        )))
        .await
        .unwrap();
    pair
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_check_passes_in_place_and_fails_when_a_trigger_is_gone() {
    let check = pg().direct().await;
    let pair = hash_pair(&check, 50).await;
    let mut config = config_with(&[pair.rule(Kind::Hash)]);
    config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("pw".into()),
        password_env: None,
    });
    let proxy = start_ruled_proxy(config.clone()).await;
    let admin = format!("postgres://admin:pw@127.0.0.1:{}/tandem", proxy.addr.port());
    backfill(&config, &pair).await;

    // In place: the check passes and says so.
    let (r, t) = report(&config, &pair).await;
    assert_eq!(
        (t.guard.policy.as_str(), t.guard.state.as_str()),
        ("mirror", "in place")
    );
    let guard = find_check(&t, "guard");
    assert!(guard.ok && guard.detail.contains("in place"), "{guard:?}");
    assert!(t.ready && r.ready, "{:#?}", t.checks);

    // A trigger gone (dropped by a session that bypassed the guard's protection, as one
    // without the event triggers could): the guard is stale, the gate fails, names the fix.
    check
        .batch_execute(&pair.sql(
            "SET tandem.guard_installing = on; DROP TRIGGER tandem_guard_insert ON {legacy}; \
             RESET tandem.guard_installing",
        ))
        .await
        .unwrap();
    let (r, t) = report(&config, &pair).await;
    assert_eq!(t.guard.state, "stale");
    let guard = find_check(&t, "guard");
    assert!(!guard.ok, "{guard:?}");
    assert!(
        guard.detail.contains("stale")
            && guard
                .detail
                .contains(&format!("SET RULE public.{} GUARD mirror", pair.legacy)),
        "{guard:?}"
    );
    assert!(!t.ready && !r.ready);
    let failed: Vec<_> = t.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, vec!["guard"]);
    let text = parity::text(&r);
    assert!(
        text.contains("[FAIL] guard: guard mirror is stale"),
        "{text}"
    );
    let dir = std::env::temp_dir().join(tandem_tests::unique("parity"));
    let written = parity::write(&r, &dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(written.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["tables"][0]["guard"]["state"], "stale");
    assert_eq!(json["tables"][0]["guard"]["policy"], "mirror");
    assert!(json["tables"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "guard" && c["ok"] == false));
    let html = std::fs::read_to_string(written.join("report.html")).unwrap();
    assert!(html.contains("guard: mirror (stale)"), "{html}");
    let _ = std::fs::remove_dir_all(&dir);

    // The fix the detail names puts it back.
    tandem::ops::rules::run(
        &admin,
        &format!("SET RULE public.{} GUARD mirror", pair.legacy),
    )
    .await
    .unwrap();
    let (_, t) = report(&config, &pair).await;
    assert_eq!(t.guard.state, "in place");
    assert!(find_check(&t, "guard").ok && t.ready, "{:#?}", t.checks);

    // Disabling a trigger by hand is refused: the guard stays in place.
    let e = check
        .batch_execute(&pair.sql("ALTER TABLE {legacy} DISABLE TRIGGER tandem_guard_update"))
        .await
        .expect_err("disabling the guard is refused");
    assert_eq!(tandem_tests::mirror::sqlstate(&e), "55000");
    let (_, t) = report(&config, &pair).await;
    assert_eq!(t.guard.state, "in place");
    assert!(find_check(&t, "guard").ok, "{:#?}", t.checks);

    // Off by choice passes, and says what it leaves uncaught.
    tandem::ops::rules::run(
        &admin,
        &format!("SET RULE public.{} GUARD off", pair.legacy),
    )
    .await
    .unwrap();
    let (_, t) = report(&config, &pair).await;
    assert_eq!(
        (t.guard.policy.as_str(), t.guard.state.as_str()),
        ("off", "off")
    );
    let guard = find_check(&t, "guard");
    assert!(guard.ok && guard.detail.contains("not caught"), "{guard:?}");
    assert!(t.ready, "{:#?}", t.checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_write_under_guard_record_is_reported_as_guard_drift() {
    let check = pg().direct().await;
    let pair = hash_pair(&check, 20).await;
    let config = config_with(&[pair.rule(Kind::Hash).guard("record")]);
    let proxy = start_ruled_proxy(config.clone()).await;
    backfill(&config, &pair).await;

    // Through Tandem: mirrored by the rewrite, nothing for the guard to record.
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql("UPDATE {legacy} SET note = 'via tandem' WHERE id <= 5"))
        .await
        .unwrap();
    let (_, t) = report(&config, &pair).await;
    assert_eq!((t.unresolved_drift, t.guard_drift.unresolved), (0, 0));
    assert!(t.ready, "{:#?}", t.checks);

    // Around it: recorded, with who did it.
    let role: String = check
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    check
        .batch_execute(&pair.sql(
            "SET application_name = 'parity-guard-test'; \
             UPDATE {legacy} SET note = 'around tandem' WHERE id BETWEEN 6 AND 8; \
             RESET application_name",
        ))
        .await
        .unwrap();
    let (r, t) = report(&config, &pair).await;
    assert_eq!((t.unresolved_drift, t.guard_drift.unresolved), (1, 1));
    let d = &t.guard_drift.latest[0];
    assert_eq!(d.operation, "update");
    assert_eq!(d.rows, Some(3));
    assert_eq!(d.role.as_deref(), Some(role.as_str()));
    assert_eq!(d.application_name.as_deref(), Some("parity-guard-test"));
    assert!(
        d.statement
            .as_deref()
            .is_some_and(|s| s.contains("around tandem")),
        "{d:?}"
    );
    let drift = find_check(&t, "drift");
    assert!(
        !drift.ok && drift.detail.contains("1 recorded by the guard"),
        "{drift:?}"
    );
    assert_eq!(
        t.different.count, 3,
        "record lets the change stand unmirrored"
    );
    let text = parity::text(&r);
    assert!(
        text.contains("guard drift: 1 unresolved")
            && text.contains(&format!("update 3 row(s) by {role} (parity-guard-test)")),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["tables"][0]["guard_drift"]["latest"][0]["application_name"],
        "parity-guard-test"
    );
    let html = parity::html(&r);
    assert!(html.contains("parity-guard-test"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_differences_between_legacy_and_target_are_listed() {
    let check = pg().direct().await;
    let pair = hash_pair(&check, 10).await;
    // Before the rule exists, so the guard's DDL follow-up has nothing to follow.
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE {legacy} ADD COLUMN legacy_only text; \
             UPDATE {legacy} SET legacy_only = 'only here' WHERE id <= 7; \
             ALTER TABLE {target} ALTER COLUMN note TYPE varchar(50)",
        ))
        .await
        .unwrap();
    let config = config_with(&[pair.rule(Kind::Hash)]);
    let (r, t) = report(&config, &pair).await;
    assert_eq!(t.columns.missing_in_target, vec!["legacy_only".to_string()]);
    assert_eq!(t.columns.type_differs.len(), 1, "{:?}", t.columns);
    let d = &t.columns.type_differs[0];
    assert_eq!(
        (
            d.column.as_str(),
            d.legacy_type.as_str(),
            d.target_type.as_str()
        ),
        ("note", "text", "character varying(50)")
    );
    // Gated: a legacy column missing from the target, and text narrowed to varchar(50),
    // fail the columns check, named, with the values the missing one would lose (and the
    // backfill never ran).
    let failed: Vec<_> = t.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, vec!["columns", "backfill"]);
    let columns = find_check(&t, "columns");
    assert!(
        columns
            .detail
            .contains("legacy column legacy_only is not on the target (7 non-null values")
            && columns.detail.contains(
                "column note is character varying(50) on the target, which does not hold every text value"
            ),
        "{columns:?}"
    );
    assert_eq!(t.columns.narrowed, vec!["note".to_string()]);
    let text = parity::text(&r);
    assert!(
        text.contains("columns missing from the target (not mirrored): legacy_only")
            && text.contains(
                "column types differ (legacy -> target): note text -> character varying(50)"
            ),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["tables"][0]["columns"]["missing_in_target"][0],
        "legacy_only"
    );
    assert_eq!(
        json["tables"][0]["columns"]["type_differs"][0]["target_type"],
        "character varying(50)"
    );
    assert!(parity::html(&r).contains("legacy_only"));
    // The schema section says the same, in the report, summary.json, the page and the
    // console.
    assert!(!t.schema.holds);
    assert_eq!(t.schema.failed, vec!["columns"]);
    assert_eq!(json["tables"][0]["schema"]["holds"], false);
    let page = parity::html(&r);
    assert!(
        page.contains("schema: <span class=\"fail\">differs (columns)</span>")
            && page.contains("missing, 7 non-null values would be lost")
            && page.contains("narrowed from text"),
        "{page}"
    );
    assert!(text.contains("  schema: differs (columns)"), "{text}");
    let console = |config: &tandem::Config| {
        let mut config = config.clone();
        config.admin = Some(tandem::config::AdminConfig {
            user: "admin".into(),
            password: Some("pw".into()),
            password_env: None,
        });
        config
    };
    let proxy = start_ruled_proxy(console(&config)).await;
    let show_parity = || async {
        tandem::ops::rules::run(
            &format!("postgres://admin:pw@127.0.0.1:{}/tandem", proxy.addr.port()),
            "SHOW PARITY",
        )
        .await
        .unwrap()
    };
    let out = show_parity().await;
    assert!(out.contains("differs: columns"), "{out}");

    // The column left behind on purpose, and the narrowed one widened: the check passes and
    // names the dropped column.
    drop_columns(&config, &pair, vec!["legacy_only".into()]).await;
    check
        .batch_execute(&pair.sql("ALTER TABLE {target} ALTER COLUMN note TYPE text"))
        .await
        .unwrap();
    let (_, t) = report(&config, &pair).await;
    let columns = find_check(&t, "columns");
    assert!(
        columns.ok && columns.detail.contains("drop_columns: legacy_only"),
        "{columns:?}"
    );
    assert_eq!(t.columns.dropped, vec!["legacy_only".to_string()]);
    assert!(t.schema.holds, "{:?}", t.schema);
    let out = show_parity().await;
    assert!(out.contains("holds"), "{out}");

    // Tables that agree list nothing.
    let same = hash_pair(&check, 1).await;
    let config = config_with(&[same.rule(Kind::Hash)]);
    let (r, t) = report(&config, &same).await;
    assert!(t.columns.is_empty(), "{:?}", t.columns);
    assert!(!parity::text(&r).contains("columns missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_rules_the_target_lacks_fail_the_gate_and_a_missing_index_warns() {
    let check = pg().direct().await;
    let pair = hash_pair(&check, 5).await;
    // Rules on legacy only (before the rule exists: the guard does not follow constraints).
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE {legacy} ADD CONSTRAINT {legacy}_token_key UNIQUE (token); \
             ALTER TABLE {legacy} ADD CONSTRAINT amount_not_negative CHECK (amount >= 0); \
             UPDATE {legacy} SET note = coalesce(note, '-'); \
             ALTER TABLE {legacy} ALTER COLUMN note SET NOT NULL; \
             CREATE INDEX ON {legacy} (tenant, created_at)",
        ))
        .await
        .unwrap();
    let config = config_with(&[pair.rule(Kind::Hash).guard("off")]);
    let (_, t) = report(&config, &pair).await;
    let c = find_check(&t, "constraints");
    assert!(!c.ok, "{c:?}");
    assert!(
        c.detail.contains("NOT NULL missing on the target for note")
            && c.detail
                .contains("CHECK amount_not_negative CHECK ((amount >= (0)::numeric))")
            && c.detail.contains("(token)")
            && c.detail
                .contains("warning: no counterpart on the target for index"),
        "{c:?}"
    );
    assert_eq!(
        (
            t.constraints.not_null.len(),
            t.constraints.checks.len(),
            t.constraints.unique.len(),
            t.constraints.indexes.len()
        ),
        (1, 1, 1, 1),
        "{:?}",
        t.constraints
    );
    // Making the target the table of record is refused for the same reasons.
    let mut admin = pg().direct().await;
    let e = tandem::control::store::change::apply(
        &mut admin,
        &tandem::control::store::Store::new(&config.store.schema),
        tandem::control::store::change::RuleChange::SetMode {
            table: TableName::new(Some("public"), &pair.legacy),
            mode: tandem_rules::Mode::Cutover,
            force: false,
        },
        "test",
    )
    .await
    .expect_err("cutover without the legacy table's data rules is refused");
    assert_eq!(e.sqlstate, "55000");
    assert!(
        e.message
            .contains("NOT NULL missing on the target for note")
            && e.message.contains("amount_not_negative"),
        "{}",
        e.message
    );
    // The data rules on the target (the unique one with the target's partition key, id):
    // only the warning about the index is left, and the check passes.
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE {target} ADD CONSTRAINT {target}_token_key UNIQUE (token, id); \
             ALTER TABLE {target} ADD CONSTRAINT amount_not_negative CHECK (amount >= 0); \
             UPDATE {target} SET note = coalesce(note, '-'); \
             ALTER TABLE {target} ALTER COLUMN note SET NOT NULL",
        ))
        .await
        .unwrap();
    let (_, t) = report(&config, &pair).await;
    let c = find_check(&t, "constraints");
    assert!(
        c.ok && c.detail.starts_with("warning: no counterpart"),
        "{c:?}"
    );
    // Each legacy rule is listed with the target's rule that keeps it.
    let kept = |kind: &str, legacy: &str, target: &str| {
        t.constraints
            .kept
            .iter()
            .any(|k| k.kind == kind && k.legacy.contains(legacy) && k.target.contains(target))
    };
    assert!(
        kept("NOT NULL", "note", "note NOT NULL")
            && kept("CHECK", "amount_not_negative", "amount_not_negative")
            && kept("unique", "(token)", "(token, id)")
            && kept("unique", "(id)", "(id)"),
        "{:?}",
        t.constraints.kept
    );
    assert!(
        t.schema.holds && t.schema.warnings.len() == 1,
        "{:?}",
        t.schema
    );
    check
        .batch_execute(&pair.sql("CREATE INDEX ON {target} (tenant, created_at)"))
        .await
        .unwrap();
    let (_, t) = report(&config, &pair).await;
    let c = find_check(&t, "constraints");
    assert!(
        c.ok && c.detail.starts_with("the target keeps every"),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legacy_column_with_a_counterpart_is_compared_row_by_row() {
    let check = pg().direct().await;
    let pair = hash_pair(&check, 10).await;
    // Before the rule: `note` is renamed on the target (the rule's set carries it),
    // `doubled` is computed by the target (generated, so the mirror does not copy it) with
    // a formula that is wrong for two rows, and `stamped` is set by a volatile expression.
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE {legacy} ADD COLUMN doubled numeric; \
             UPDATE {legacy} SET doubled = amount * 2; \
             ALTER TABLE {target} RENAME COLUMN note TO remark; \
             ALTER TABLE {target} ADD COLUMN doubled numeric \
               GENERATED ALWAYS AS (CASE WHEN amount > 8 THEN amount * 3 ELSE amount * 2 END) STORED; \
             ALTER TABLE {target} ADD COLUMN stamped timestamptz",
        ))
        .await
        .unwrap();
    let config = config_with(&[pair
        .rule(Kind::Hash)
        .set("remark", "note")
        .set("stamped", "now()")]);
    backfill(&config, &pair).await;
    let (_, t) = report(&config, &pair).await;
    let columns = find_check(&t, "columns");
    assert!(
        columns.ok
            && columns
                .detail
                .contains("carried by the rule's set: note -> remark")
            && columns
                .detail
                .contains("set column stamped = now() is not compared row by row (not immutable"),
        "{columns:?}"
    );
    assert!(
        t.columns.compared.contains(&"doubled".to_string())
            && t.columns.compared.contains(&"remark = note".to_string())
            && !t.columns.compared.iter().any(|c| c.starts_with("stamped")),
        "{:?}",
        t.columns.compared
    );
    // The generated counterpart is compared: the two rows it computes wrongly differ.
    assert_eq!(t.different.count, 2, "{t:?}");
    assert!(!t.ready);

    // A change of the renamed column made on the target alone is found too.
    check
        .batch_execute(&pair.sql("UPDATE {target} SET remark = 'changed' WHERE id = 1"))
        .await
        .unwrap();
    let (_, t) = report(&config, &pair).await;
    assert_eq!(t.different.count, 3, "{:?}", t.different);
    assert!(
        t.different.sample_keys.contains(&"(1)".to_string()),
        "{:?}",
        t.different
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_to_legacy_after_the_rule_fails_the_gate_until_the_target_has_it() {
    let check = pg().direct().await;
    let pair = hash_pair(&check, 10).await;
    // The guard off: nothing follows the new column onto the target by itself (as with a
    // guard installed without a superuser).
    let config = config_with(&[pair.rule(Kind::Hash).guard("off")]);
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    // Through Tandem, and directly.
    via.batch_execute(&pair.sql(
        "ALTER TABLE {legacy} ADD COLUMN color2 text; UPDATE {legacy} SET color2 = 'z' WHERE id <= 6",
    ))
    .await
    .unwrap();
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE {legacy} ADD COLUMN size2 int; UPDATE {legacy} SET size2 = 1 WHERE id <= 3",
        ))
        .await
        .unwrap();
    backfill(&config, &pair).await;
    let (_, t) = report(&config, &pair).await;
    assert!(!t.ready && !t.schema.holds);
    let columns = find_check(&t, "columns");
    assert!(
        !columns.ok
            && columns.detail.contains(
                "legacy column color2 is not on the target (6 non-null values would be lost)"
            )
            && columns.detail.contains(
                "legacy column size2 is not on the target (3 non-null values would be lost)"
            ),
        "{columns:?}"
    );
    // color2 added to the target, with its values; size2 declared left behind: ready.
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE {target} ADD COLUMN color2 text; \
             UPDATE {target} t SET color2 = l.color2 FROM {legacy} l WHERE l.id = t.id",
        ))
        .await
        .unwrap();
    drop_columns(&config, &pair, vec!["size2".into()]).await;
    let (_, t) = report(&config, &pair).await;
    assert!(t.ready && t.schema.holds, "{:?}", t.checks);
    assert!(t.columns.compared.contains(&"color2".to_string()));
}
