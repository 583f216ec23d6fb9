//! Legacy triggers and the move to the target: `tandem init` copies each onto the target,
//! and each fires once per application write in every mode (on the table applications
//! write), never also for the mirror's copy; a legacy trigger without a counterpart fails
//! the parity gate and refuses cutover until it is copied or declared not needed.

use tandem::control::store::change::{self, RuleChange};
use tandem::control::store::Store;
use tandem::ops::backfill::{self, Options as BackfillOptions};
use tandem::ops::parity::{self, Check, Options as ParityOptions};
use tandem_rules::{Mode, TableName};
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, wait_for_mode, Kind, Pair};
use tandem_tests::{pg, through, unique};

async fn triggers_check(config: &tandem::Config, table: &TableName) -> Check {
    let report = parity::run(
        config,
        &ParityOptions {
            tables: vec![table.clone()],
            min_overlap: 0.95,
            min_samples: 0,
            sample_limit: 5,
            strict_indexes: false,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    report.tables[0]
        .checks
        .iter()
        .find(|c| c.name == "triggers")
        .expect("a triggers check")
        .clone()
}

async fn backfill(config: &tandem::Config, table: &TableName) {
    backfill::run(
        config,
        &BackfillOptions {
            batch_size: 100,
            ..BackfillOptions::new(table.clone())
        },
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_triggers_fire_once_per_write_in_every_mode() {
    let check = pg().direct().await;
    let t = unique("trg");
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, tenant text NOT NULL, note text);
             CREATE TABLE {t}_audit (tbl text, op text, id bigint);
             CREATE FUNCTION {t}_audit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO {t}_audit VALUES (TG_TABLE_NAME, TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
                 RETURN NULL;
             END $$;
             CREATE FUNCTION {t}_bang() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW.note := NEW.note || '!'; RETURN NEW; END $$;
             CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON {t}
                 FOR EACH ROW EXECUTE FUNCTION {t}_audit();
             CREATE TRIGGER bang BEFORE UPDATE OF note ON {t}
                 FOR EACH ROW WHEN (old.note IS DISTINCT FROM new.note) EXECUTE FUNCTION {t}_bang();
             INSERT INTO {t} (tenant, note) VALUES ('acme', 'old');
             TRUNCATE {t}_audit;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    let legacy = TableName::new(Some("public"), &t);
    let target = TableName::new(Some("public"), &format!("{t}_v2"));
    let report = tandem::ops::init::run(
        &config,
        &tandem::ops::init::Options {
            table: legacy.clone(),
            target: None,
            layout: tandem::ops::init::Layout::parse("list(tenant)").unwrap(),
            no_default: false,
            dry_run: false,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.ddl.iter().any(|s| s.starts_with(&format!(
            "CREATE TRIGGER audit AFTER INSERT OR DELETE OR UPDATE ON {target} FOR EACH ROW WHEN (tandem.written_here("
        ))),
        "{:#?}",
        report.ddl
    );
    let pairs = tandem::control::triggers::pairs(&check, &legacy, &target, &[])
        .await
        .unwrap();
    assert_eq!(pairs.len(), 2, "{pairs:?}");
    assert!(
        pairs
            .iter()
            .all(|p| p.conditioned && p.counterpart_conditioned && !p.fires_twice()),
        "{pairs:?}"
    );
    let ok = triggers_check(&config, &legacy).await;
    assert!(ok.ok, "{ok:?}");

    let proxy = start_ruled_proxy(config.clone()).await;
    let store = Store::new(&config.store.schema);
    let mut admin = pg().direct().await;
    for (i, mode) in [
        Mode::Off,
        Mode::DualWrite,
        Mode::UnionRead,
        Mode::Cutover,
        Mode::TargetOnly,
    ]
    .into_iter()
    .enumerate()
    {
        if mode != Mode::Off {
            if mode == Mode::Cutover {
                backfill(&config, &legacy).await;
            }
            change::apply(
                &mut admin,
                &store,
                RuleChange::SetMode {
                    table: legacy.clone(),
                    mode,
                    force: false,
                },
                "test",
            )
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        }
        if mode != Mode::Off {
            wait_for_mode(&proxy, mode).await;
        }
        let via = through(&proxy).await;
        check
            .batch_execute(&format!("TRUNCATE {t}_audit"))
            .await
            .unwrap();
        let id = 100 + i as i64;
        via.batch_execute(&format!(
            "INSERT INTO {t} (id, tenant, note) VALUES ({id}, 'acme', 'new');
             UPDATE {t} SET note = 'changed' WHERE id = {id};"
        ))
        .await
        .unwrap_or_else(|e| panic!("{mode}: {}", db_text(&e)));
        let note: String = via
            .query_one(&format!("SELECT note FROM {t} WHERE id = {id}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(note, "changed!", "{mode}: the BEFORE trigger fired once");
        via.batch_execute(&format!("DELETE FROM {t} WHERE id = {id}"))
            .await
            .unwrap();
        // One audit row per write, from the table applications write in this mode.
        let written = if matches!(mode, Mode::Cutover | Mode::TargetOnly) {
            format!("{t}_v2_acme")
        } else {
            t.clone()
        };
        let audit: Vec<(String, String)> = check
            .query(&format!("SELECT tbl, op FROM {t}_audit ORDER BY op"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            audit,
            vec![
                (written.clone(), "DELETE".to_string()),
                (written.clone(), "INSERT".to_string()),
                (written, "UPDATE".to_string()),
            ],
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_trigger_without_a_counterpart_fails_the_gate_and_refuses_cutover() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    pair.copy_defaults(&check).await;
    check
        .batch_execute(&pair.sql(
            "CREATE TABLE {legacy}_audit (tbl text, op text);
             CREATE FUNCTION {legacy}_audit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO {legacy}_audit VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$;
             CREATE TRIGGER audit AFTER INSERT ON {legacy}
                 FOR EACH ROW EXECUTE FUNCTION {legacy}_audit();",
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let config = config_with(&[pair.rule(Kind::Hash)]);
    let legacy = TableName::new(Some("public"), &pair.legacy);
    let store = Store::new(&config.store.schema);
    let failed = triggers_check(&config, &legacy).await;
    assert!(
        !failed.ok
            && failed
                .detail
                .contains("trigger audit has no counterpart on the target: it stops firing at target_only")
            && failed.detail.contains(&format!(
                "CREATE TRIGGER audit AFTER INSERT ON public.{} FOR EACH ROW WHEN (tandem.written_here('public.{}'::regclass))",
                pair.target, pair.target
            )),
        "{failed:?}"
    );
    backfill(&config, &legacy).await;
    let mut admin = pg().direct().await;
    let cutover = RuleChange::SetMode {
        table: legacy.clone(),
        mode: Mode::Cutover,
        force: false,
    };
    let e = change::apply(&mut admin, &store, cutover.clone(), "test")
        .await
        .expect_err("cutover without the trigger on the target is refused");
    assert!(
        e.sqlstate == "55000" && e.message.contains("trigger audit has no counterpart"),
        "{e:?}"
    );

    // A copy made by hand without the condition fires on the mirror's writes too.
    check
        .batch_execute(&pair.sql(
            "CREATE TRIGGER audit AFTER INSERT ON {target} FOR EACH ROW EXECUTE FUNCTION {legacy}_audit();",
        ))
        .await
        .unwrap();
    let twice = triggers_check(&config, &legacy).await;
    assert!(
        !twice.ok
            && twice.detail.contains("fire twice per write")
            && twice.detail.contains("each lacks"),
        "{twice:?}"
    );
    // The fix the report prints conditions both; then the gate passes.
    let pairs = tandem::control::triggers::pairs(
        &check,
        &legacy,
        &TableName::new(Some("public"), &pair.target),
        &[],
    )
    .await
    .unwrap();
    check
        .batch_execute(&pair.sql(&format!(
            "DROP TRIGGER audit ON {{target}}; {}",
            tandem::control::triggers::fix_statements(
                &pairs
                    .iter()
                    .map(|p| tandem::control::triggers::TriggerPair {
                        counterpart: None,
                        ..p.clone()
                    })
                    .collect::<Vec<_>>(),
                &legacy,
                &TableName::new(Some("public"), &pair.target),
            )
            .unwrap()
            .join("; ")
        )))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let ok = triggers_check(&config, &legacy).await;
    assert!(ok.ok, "{ok:?}");

    // Declared not needed instead: listed, not failed, and cutover goes through.
    check
        .batch_execute(&pair.sql("DROP TRIGGER audit ON {target}"))
        .await
        .unwrap();
    change::apply(
        &mut admin,
        &store,
        RuleChange::SetDropTriggers {
            table: legacy.clone(),
            triggers: vec!["audit".into()],
        },
        "test",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let declared = triggers_check(&config, &legacy).await;
    assert!(
        declared.ok && declared.detail.contains("declared not needed"),
        "{declared:?}"
    );
    change::apply(&mut admin, &store, cutover, "test")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
}
