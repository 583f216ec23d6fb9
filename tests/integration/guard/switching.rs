//! Moving the guard: a rule change installs, switches or removes it in the same transaction
//! as the store's row, so an interrupted change leaves the old state whole; installing it
//! waits a bounded time for a long transaction on the tables and leaves nothing behind when
//! it gives up; switching modes takes no table lock; and modes switched back and forth under
//! a write load through Tandem and straight to the table of record leave both tables equal.

use super::reloaded;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::control::store::change::{self, RuleChange};
use tandem::control::store::Store;
use tandem::RunningProxy;
use tandem_rules::{Mode, Rule, TableName};
use tandem_tests::mirror::{config_with, db_text, diff, rows_text, sqlstate, start_ruled_proxy};
use tandem_tests::mirror::{Kind, Pair};
use tandem_tests::{pg, through};
use tokio_postgres::Client;

/// A fresh List pair (no rows) and a proxy whose own rule store has no rule yet.
async fn unruled() -> (Pair, Client, RunningProxy, Store) {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    pair.copy_defaults(&check).await;
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    let proxy = start_ruled_proxy(config).await;
    let store = proxy
        .watch
        .as_ref()
        .expect("the proxy watches its store")
        .store()
        .clone();
    (pair, check, proxy, store)
}

/// The rule the console's `ADD RULE <legacy> KEY (id, tenant) MODE <mode>` makes.
fn rule(pair: &Pair, mode: Mode) -> Rule {
    Rule::new(
        TableName::new(Some("public"), &pair.legacy),
        mode,
        vec!["id".into(), "tenant".into()],
    )
}

/// A direct connection for rule changes, whose guard lock waits are short.
async fn admin() -> Client {
    let client = pg().direct().await;
    client
        .batch_execute("SET tandem.guard_lock_timeout = '200ms'")
        .await
        .unwrap();
    client
}

/// Applies `change` as the admin console does.
async fn apply(
    admin: &mut Client,
    store: &Store,
    change: RuleChange,
) -> Result<change::Applied, change::ChangeError> {
    tokio::time::timeout(
        Duration::from_secs(120),
        change::apply(admin, store, change, "guard test"),
    )
    .await
    .expect("a rule change must end within a bounded time")
}

async fn pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Ends backend `pid` and waits until it is gone.
async fn terminate(check: &Client, pid: i32) {
    let done: bool = check
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(done, "pg_terminate_backend({pid})");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: bool = check
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if !alive {
            return;
        }
        assert!(Instant::now() < deadline, "backend {pid} did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every table of the pair: the legacy table, the target and its partitions.
fn tables(pair: &Pair) -> Vec<String> {
    let mut all = vec![pair.legacy.clone(), pair.target.clone()];
    for part in ["acme", "globex", "other"] {
        all.push(format!("{}_{part}", pair.target));
    }
    all
}

/// What the catalog holds of the pair's guard: the `tandem.guards` row (direction), the
/// guard triggers (table, name, function) and the guard functions.
#[derive(Debug, PartialEq, Eq)]
struct Installed {
    guards: Vec<String>,
    triggers: Vec<String>,
    functions: Vec<String>,
}

async fn installed(check: &Client, pair: &Pair) -> Installed {
    let names: Vec<String> = tables(pair).iter().map(|t| format!("'{t}'")).collect();
    let list = names.join(", ");
    let guards = rows_text(
        check,
        &format!(
            "SELECT g.direction || ' ' || coalesce(g.guarded::regclass::text, '-') \
             FROM tandem.guards g WHERE g.rule_table = 'public.{}'",
            pair.legacy
        ),
    )
    .await;
    let triggers = rows_text(
        check,
        &format!(
            "SELECT t.tgrelid::regclass::text || ' ' || t.tgname || ' ' || p.proname \
             FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
             WHERE t.tgrelid IN (SELECT unnest(ARRAY[{list}])::regclass) \
               AND t.tgname LIKE 'tandem\\_guard\\_%' ORDER BY 1"
        ),
    )
    .await;
    let functions = rows_text(
        check,
        &format!(
            "SELECT p.proname || ': ' || md5(p.prosrc) FROM pg_proc p \
             WHERE p.pronamespace = 'tandem'::regnamespace \
               AND p.proname IN ('guard ' || '{l}'::regclass::oid, 'guard ' || '{t}'::regclass::oid) \
             ORDER BY 1",
            l = pair.legacy,
            t = pair.target
        ),
    )
    .await;
    Installed {
        guards,
        triggers,
        functions,
    }
}

/// Asserts the pair has no guard at all: no row, no trigger, no function.
async fn nothing_installed(check: &Client, pair: &Pair, step: &str) {
    let now = installed(check, pair).await;
    assert_eq!(
        now,
        Installed {
            guards: vec![],
            triggers: vec![],
            functions: vec![],
        },
        "{step}: the guard must not be installed, not even in part"
    );
}

/// Asserts the guard is whole: the `tandem.guards` row guards `guarded` in `direction`,
/// every table of both trees has its four triggers calling its root's function, both
/// functions exist, and `tandem.guard_report` for the store's row says `in place`.
async fn whole(check: &Client, pair: &Pair, store: &Store, direction: &str, guarded: &str) {
    let now = installed(check, pair).await;
    assert_eq!(now.guards, [format!("{direction} {guarded}")], "{now:#?}");
    assert_eq!(now.functions.len(), 2, "{now:#?}");
    assert_eq!(now.triggers.len(), 4 * tables(pair).len(), "{now:#?}");
    let oid = |t: &str| format!("SELECT '{t}'::regclass::oid::text");
    let legacy_oid = rows_text(check, &oid(&pair.legacy)).await.remove(0);
    let target_oid = rows_text(check, &oid(&pair.target)).await.remove(0);
    for trigger in &now.triggers {
        let root = if trigger.starts_with(&format!("{} ", pair.legacy)) {
            &legacy_oid
        } else {
            &target_oid
        };
        assert!(
            trigger.ends_with(&format!(" guard {root}")),
            "{trigger} does not call its root's function"
        );
    }
    let report = rows_text(
        check,
        &format!(
            "SELECT tandem.guard_report(r.table_name, r.target, r.key, r.mode, r.guard, \
               r.on_mirror_error, r.set_columns) FROM \"{}\".rules r WHERE r.table_name = 'public.{}'",
            store.schema, pair.legacy
        ),
    )
    .await;
    assert_eq!(report, ["in place"]);
}

/// The store's row for the pair (its mode), if any.
async fn stored_mode(check: &Client, store: &Store, pair: &Pair) -> Vec<String> {
    rows_text(
        check,
        &format!(
            "SELECT mode FROM \"{}\".rules WHERE table_name = 'public.{}'",
            store.schema, pair.legacy
        ),
    )
    .await
}

/// Legacy and target hold the same rows, every column compared.
async fn equal(check: &Client, pair: &Pair, step: &str) {
    let differ = diff(check, &pair.legacy, &pair.target, "*").await;
    assert!(
        differ.is_empty(),
        "{step}: {} rows differ: {differ:#?}",
        differ.len()
    );
}

/// A row for the pair with every column given (a direct write names them all).
fn row_insert(table: &str, id: i64, tenant: &str, note: &str) -> String {
    format!(
        "INSERT INTO {table} (id, tenant, amount, note, score, token, created_at) \
         VALUES ({id}, '{tenant}', {amount}, '{note}', 0.25, gen_random_uuid(), now())",
        amount = id % 1000
    )
}

/// ADD RULE's store write killed while its guard is half made (the legacy table's triggers
/// created, the target's waiting for a lock): nothing of it remains. Then it is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_add_killed_midway_leaves_nothing_installed() {
    let (pair, check, _proxy, store) = unruled().await;
    let blocker = pg().direct().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker
        .batch_execute(&row_insert(&pair.target, 1, "acme", "blocker"))
        .await
        .unwrap();

    let victim = pg().direct().await;
    let victim_pid = pid(&victim).await;
    victim
        .batch_execute("SET tandem.guard_lock_timeout = '10min'; BEGIN")
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO \"{}\".rules (table_name, target, key, mode, updated_by) \
         VALUES ('public.{}', 'public.{}', '{{id,tenant}}', 'dual_write', 'test')",
        store.schema, pair.legacy, pair.target
    );
    let adding = tokio::spawn(async move { victim.batch_execute(&insert).await });

    // Midway: it holds the legacy table's trigger lock and waits for the target's.
    let midway = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND granted \
                          AND relation = '{}'::regclass AND mode = 'ShareRowExclusiveLock') \
            AND EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted \
                          AND relation = '{}'::regclass)",
        pair.legacy, pair.target
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check
        .query_one(&midway, &[&victim_pid])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            Instant::now() < deadline,
            "the rule's insert never reached the target's lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    terminate(&check, victim_pid).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), adding)
        .await
        .expect("the killed session's call ends")
        .unwrap();
    assert!(ended.is_err(), "the killed insert cannot have succeeded");

    nothing_installed(&check, &pair, "after the kill").await;
    assert!(stored_mode(&check, &store, &pair).await.is_empty());
    // The blocker's write is untouched by any guard.
    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pair.counts(&check).await, (0, 1));
    check
        .batch_execute(&pair.sql("DELETE FROM {target}"))
        .await
        .unwrap();

    let mut admin = admin().await;
    let applied = apply(
        &mut admin,
        &store,
        RuleChange::Add(rule(&pair, Mode::DualWrite)),
    )
    .await
    .unwrap_or_else(|e| panic!("ADD RULE: {e} ({:?})", e.hint));
    assert!(
        applied.notes.contains(&"guard: in place".to_string()),
        "{:?}",
        applied.notes
    );
    whole(&check, &pair, &store, "forward", &pair.legacy).await;
    check
        .batch_execute(&row_insert(&pair.legacy, 2, "globex", "direct"))
        .await
        .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
    equal(&check, &pair, "a direct write after the add").await;
}

/// A mode switch written to the store and killed before COMMIT: the guard is exactly as
/// before (same row, same function bodies, every trigger), and acts as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_switch_killed_before_commit_keeps_the_old_guard() {
    let (pair, check, _proxy, store) = unruled().await;
    let mut admin = admin().await;
    apply(
        &mut admin,
        &store,
        RuleChange::Add(rule(&pair, Mode::DualWrite)),
    )
    .await
    .unwrap_or_else(|e| panic!("ADD RULE: {e}"));
    whole(&check, &pair, &store, "forward", &pair.legacy).await;
    let before = installed(&check, &pair).await;

    let victim = pg().direct().await;
    let victim_pid = pid(&victim).await;
    victim
        .batch_execute(&format!(
            "BEGIN; UPDATE \"{}\".rules SET mode = 'cutover', updated_by = 'test' \
             WHERE table_name = 'public.{}'",
            store.schema, pair.legacy
        ))
        .await
        .unwrap();
    // Inside its transaction the guard has moved to the target.
    let inside = rows_text(
        &victim,
        &format!(
            "SELECT direction FROM tandem.guards WHERE rule_table = 'public.{}'",
            pair.legacy
        ),
    )
    .await;
    assert_eq!(inside, ["reverse"]);
    assert_ne!(installed(&victim, &pair).await, before);

    terminate(&check, victim_pid).await;
    let e = victim
        .batch_execute("COMMIT")
        .await
        .expect_err("the killed session cannot commit");
    eprintln!("the killed session: {}", db_text(&e));

    assert_eq!(installed(&check, &pair).await, before);
    assert_eq!(stored_mode(&check, &store, &pair).await, ["dual_write"]);
    whole(&check, &pair, &store, "forward", &pair.legacy).await;
    // It still guards the legacy table, and only it.
    check
        .batch_execute(&row_insert(&pair.legacy, 1, "acme", "direct to legacy"))
        .await
        .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
    check
        .batch_execute(&row_insert(&pair.target, 2, "acme", "direct to target"))
        .await
        .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 2));
}

/// ADD RULE while a transaction holds a write lock on the legacy table: the guard cannot
/// create its triggers; the change fails within a bounded time with 55P03, names the
/// blocking session's pid and leaves nothing installed; once that transaction ends it
/// succeeds. Mode changes of the rule then take no table lock: they succeed while such a
/// transaction is open, and its write ends up mirrored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_delays_an_add_but_not_a_mode_change() {
    let (pair, check, _proxy, store) = unruled().await;
    let long = pg().direct().await;
    let long_pid = pid(&long).await;
    long.batch_execute(&format!(
        "BEGIN; {}",
        row_insert(&pair.legacy, 1, "acme", "long")
    ))
    .await
    .unwrap();

    let mut admin = admin().await;
    let e = match apply(
        &mut admin,
        &store,
        RuleChange::Add(rule(&pair, Mode::DualWrite)),
    )
    .await
    {
        Ok(applied) => panic!("ADD RULE succeeded past a lock held: {:?}", applied.notes),
        Err(e) => e,
    };
    assert_eq!(e.sqlstate, "55P03", "{e}");
    assert!(
        e.message.contains(&format!("pid {long_pid}")),
        "the message must name the blocking session: {}",
        e.message
    );
    assert!(e.hint.is_some());
    nothing_installed(&check, &pair, "after the timed-out add").await;
    assert!(stored_mode(&check, &store, &pair).await.is_empty());

    long.batch_execute("ROLLBACK").await.unwrap();
    apply(
        &mut admin,
        &store,
        RuleChange::Add(rule(&pair, Mode::DualWrite)),
    )
    .await
    .unwrap_or_else(|e| panic!("ADD RULE after the transaction ended: {e}"));
    whole(&check, &pair, &store, "forward", &pair.legacy).await;

    // Rows in both tables, then a transaction that holds the tables again.
    check
        .batch_execute(&format!(
            "{}; {}",
            row_insert(&pair.legacy, 2, "acme", "a"),
            row_insert(&pair.legacy, 3, "globex", "b")
        ))
        .await
        .unwrap();
    long.batch_execute(&format!(
        "BEGIN; {}; UPDATE {} SET note = 'long' WHERE id = 2",
        row_insert(&pair.legacy, 4, "initech", "long"),
        pair.legacy
    ))
    .await
    .unwrap();
    for (mode, direction, guarded) in [
        (Mode::Cutover, "reverse", &pair.target),
        (Mode::DualWrite, "forward", &pair.legacy),
        (Mode::Cutover, "reverse", &pair.target),
    ] {
        let table = TableName::new(Some("public"), &pair.legacy);
        let applied = apply(
            &mut admin,
            &store,
            RuleChange::SetMode {
                table,
                mode,
                force: false,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("SET RULE MODE {mode} with a transaction open: {e}"));
        assert!(
            !applied.notes.iter().any(|n| n.contains("timed out")),
            "a mode change waited for a lock: {:?}",
            applied.notes
        );
        whole(&check, &pair, &store, direction, guarded).await;
    }
    long.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pair.counts(&check).await, (3, 3));
    equal(&check, &pair, "after the long transaction").await;
    // In cutover the target is guarded now.
    check
        .batch_execute(&pair.sql("UPDATE {target} SET note = 'direct' WHERE id = 3"))
        .await
        .unwrap();
    equal(&check, &pair, "a direct write to the target in cutover").await;
}

/// Writes retried (deadlocks), for the test's output.
static RETRIED: AtomicU64 = AtomicU64::new(0);

/// Errors a writer retries: the two directions' writes of one row can deadlock while the
/// proxy still runs the old mode's rewrite.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(sqlstate(e).as_str(), "40P01" | "40001")
}

/// Writes through Tandem (always naming the legacy table) until `stop`: inserts of its own
/// rows, updates of shared rows and of its own, deletes of its own.
async fn proxy_writer(
    via: Client,
    pair: Pair,
    writer: i64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let base = 1_000_000 * writer;
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let own = base + i / 4 * 4;
        let shared = (i * 7 + writer) % 10 + 1;
        let sql = match i % 4 {
            0 => row_insert(
                &pair.legacy,
                own,
                ["acme", "globex", "initech"][(i % 3) as usize],
                "proxy",
            ),
            1 => format!(
                "UPDATE {} SET amount = amount + 1, note = 'proxy {writer}' WHERE id = {shared}",
                pair.legacy
            ),
            2 => format!(
                "UPDATE {} SET note = 'own {i}' WHERE id = {own}",
                pair.legacy
            ),
            _ if (i / 4) % 2 == 0 => format!("DELETE FROM {} WHERE id = {own}", pair.legacy),
            _ => format!(
                "UPDATE {} SET score = score + 1 WHERE id = {shared}",
                pair.legacy
            ),
        };
        match via.batch_execute(&sql).await {
            Ok(()) => {
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Err(e) if retryable(&e) => {
                RETRIED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("through Tandem: {sql}: {}", db_text(&e)),
        }
    }
}

/// Writes straight to the table of record until `stop`: each transaction reads the rule's
/// mode (under a shared advisory lock the switcher takes exclusively, so the mode cannot
/// change before it commits) and writes the legacy table in dual_write, the target in
/// cutover, as an application connected around Tandem would.
async fn direct_writer(
    mut client: Client,
    pair: Pair,
    schema: String,
    writer: i64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) {
    let base = 1_000_000 * writer;
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let own = base + i / 3 * 3;
        let shared = (i * 11 + writer) % 10 + 1;
        let result = async {
            let tx = client.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                &[&pair.legacy],
            )
            .await?;
            let mode: String = tx
                .query_one(
                    &format!("SELECT mode FROM \"{schema}\".rules WHERE table_name = $1"),
                    &[&format!("public.{}", pair.legacy)],
                )
                .await?
                .get(0);
            let table = if mode == "cutover" {
                &pair.target
            } else {
                &pair.legacy
            };
            let sql = match i % 3 {
                0 => row_insert(
                    table,
                    own,
                    ["globex", "acme", "initech"][(i % 3) as usize],
                    "direct",
                ),
                1 => format!(
                    "UPDATE {table} SET amount = amount + 2, note = 'direct {writer}' \
                     WHERE id IN ({shared}, {own})"
                ),
                _ if (i / 3) % 2 == 0 => format!("DELETE FROM {table} WHERE id = {own}"),
                _ => format!("UPDATE {table} SET score = score * 2 WHERE id = {shared}"),
            };
            tx.batch_execute(&sql).await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Err(e) if retryable(&e) => {
                RETRIED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("direct writer {writer}: {}", db_text(&e)),
        }
    }
}

/// Switches the rule's mode in the store (plain SQL, as an operator could) under the
/// advisory lock the direct writers share.
async fn switch(check: &Client, schema: &str, pair: &Pair, mode: &str) {
    check
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('{l}')); \
             UPDATE \"{schema}\".rules SET mode = '{mode}', updated_by = 'test' \
             WHERE table_name = 'public.{l}'; COMMIT",
            l = pair.legacy
        ))
        .await
        .unwrap_or_else(|e| panic!("switch to {mode}: {}", db_text(&e)));
}

/// dual_write -> cutover -> dual_write -> cutover -> dual_write while two sessions write
/// through Tandem and two straight to the table of record, on shared and own rows: at the
/// end the legacy table and the target hold the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_under_load_leaves_no_divergent_rows() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (id, tenant, amount, note, score, token, created_at) \
             SELECT g, (ARRAY['acme', 'globex', 'initech'])[g % 3 + 1], g, 'seed', 1, \
                    gen_random_uuid(), now() FROM generate_series(1, 100) g; \
             INSERT INTO {target} SELECT * FROM {legacy}",
        ))
        .await
        .unwrap();
    let config = config_with(&[pair.rule(Kind::List)]);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut counters = Vec::new();
    for w in 1..=2 {
        let done = Arc::new(AtomicU64::new(0));
        counters.push(("through Tandem", w, done.clone()));
        writers.push(tokio::spawn(proxy_writer(
            through(&proxy).await,
            pair.clone(),
            w,
            stop.clone(),
            done,
        )));
    }
    for w in 3..=4 {
        let done = Arc::new(AtomicU64::new(0));
        counters.push(("direct", w, done.clone()));
        writers.push(tokio::spawn(direct_writer(
            pg().direct().await,
            pair.clone(),
            schema.clone(),
            w,
            stop.clone(),
            done,
        )));
    }

    let total = || {
        counters
            .iter()
            .map(|(_, _, d)| d.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    for mode in ["cutover", "dual_write", "cutover", "dual_write"] {
        let from = total();
        wait_progress(&counters, from).await;
        switch(&check, &schema, &pair, mode).await;
        // The next phase runs with the proxy's sessions under the new mode too.
        reloaded(&proxy, &check).await;
    }
    wait_progress(&counters, total()).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("a writer did not stop")
            .expect("a writer failed");
    }
    for (how, w, done) in &counters {
        assert!(
            done.load(Ordering::Relaxed) > 0,
            "writer {w} ({how}) never wrote"
        );
    }
    eprintln!(
        "writes ({} retried after a deadlock): {:?}",
        RETRIED.load(Ordering::Relaxed),
        counters
            .iter()
            .map(|(how, w, d)| format!("{w} {how}: {}", d.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
    );
    equal(&check, &pair, "after switching under load").await;
    let (l, t) = pair.counts(&check).await;
    assert_eq!(l, t);
    assert!(l >= 100, "{l} rows");
}

/// Waits (at least half a second) until the writers made 40 more writes than `from`.
async fn wait_progress(counters: &[(&str, i64, Arc<AtomicU64>)], from: u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total: u64 = counters
            .iter()
            .map(|(_, _, d)| d.load(Ordering::Relaxed))
            .sum();
        if total >= from + 40 {
            return;
        }
        assert!(Instant::now() < deadline, "the writers made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
