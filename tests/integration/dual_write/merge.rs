//! MERGE into a ruled table: mirrored in one statement from PostgreSQL 17 on (MERGE ...
//! RETURNING inside WITH), a key change from 18 on (RETURNING OLD), refused on 15 and 16,
//! the server's own syntax error on 13 and 14. Where it runs, the client gets exactly what
//! Postgres answers for the same MERGE on an identical unruled pair (the twins): the
//! `MERGE n` tag, the RETURNING rows and RowDescription; and the target holds exactly the
//! legacy rows after every statement. The twins run without the guard (but for one round),
//! so what mirrors is Tandem's rewrite alone.

use tandem_tests::mirror::{db_text, rows_text, simple_counts, sqlstate, Kind, RawSession, Twins};
use tandem_tests::{raw, server_has_merge, server_major, server_mirrors_merge};
use tokio_postgres::Client;

/// Seeds the twins with one row per `{src}` tenant (ids 1, 2, 3), every value alike.
async fn seeded(twins: &Twins, via: &mut RawSession, direct: &mut RawSession) {
    twins
        .same_simple(
            via,
            direct,
            "INSERT INTO {legacy} (tenant, amount, note, token, created_at) VALUES \
             ('acme', 1, 'a', '00000000-0000-0000-0000-000000000001', '2024-01-01'), \
             ('globex', 2, 'b', '00000000-0000-0000-0000-000000000002', '2024-01-02'), \
             ('umbrella', 3, 'c', '00000000-0000-0000-0000-000000000003', '2024-01-03')",
        )
        .await;
}

/// Every action (INSERT, UPDATE, DELETE, DO NOTHING, NOT MATCHED BY SOURCE), with and
/// without RETURNING, in the client's own WITH, and a MERGE that writes nothing.
const MERGES: &[&str] = &[
    "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
     WHEN MATCHED AND s.tenant = 'umbrella' THEN DELETE \
     WHEN MATCHED THEN UPDATE SET amount = s.amount, note = s.note \
     WHEN NOT MATCHED THEN INSERT (tenant) VALUES (s.tenant)",
    "MERGE INTO {legacy} AS l USING {src} s ON l.tenant = s.tenant \
     WHEN MATCHED THEN DO NOTHING \
     WHEN NOT MATCHED THEN INSERT (tenant, amount, note, token, created_at) \
     VALUES (s.tenant, s.amount, 'back', '00000000-0000-0000-0000-0000000000aa', '2024-03-01') \
     RETURNING merge_action(), l.*",
    "MERGE INTO {legacy} USING (SELECT * FROM {src} WHERE tenant = 'acme') AS s \
     ON {legacy}.tenant = s.tenant \
     WHEN MATCHED THEN UPDATE SET note = 'by source' \
     WHEN NOT MATCHED BY SOURCE AND {legacy}.tenant = 'umbrella' THEN DELETE \
     RETURNING merge_action() AS act, merge_action()::text, {legacy}.id, {legacy}.note, ctid",
    "WITH s AS (SELECT 'globex'::text AS tenant, 42::numeric AS amount) \
     MERGE INTO {legacy} l USING s ON l.tenant = s.tenant \
     WHEN MATCHED THEN UPDATE SET amount = s.amount RETURNING l.id, l.amount, merge_action()",
    "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant AND s.amount < 0 \
     WHEN MATCHED THEN DELETE RETURNING l.id",
    "MERGE INTO {legacy} l USING (VALUES (100, 'acme'), (101, 'initech')) AS v(id, tenant) \
     ON l.id = v.id \
     WHEN NOT MATCHED THEN INSERT (id, tenant, amount, token, created_at) \
     VALUES (v.id, v.tenant, 7, '00000000-0000-0000-0000-0000000000cc', '2024-05-01') \
     RETURNING l.*, (l.xmax = 0) AS inserted",
    "MERGE INTO ONLY {legacy} AS l USING {src} s ON l.tenant = s.tenant \
     WHEN MATCHED THEN UPDATE SET note = 'only'",
    "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
     WHEN MATCHED AND l.tenant = 'globex' THEN DELETE \
     WHEN NOT MATCHED THEN DO NOTHING \
     RETURNING merge_action(), l.id, l.tenant, l.note",
];

/// The SQLSTATE and message of `sql` through `via`, which must fail.
async fn failure(via: &Client, sql: &str) -> (String, String) {
    let e = via
        .simple_query(sql)
        .await
        .map(|_| panic!("{sql}: ran through Tandem"))
        .unwrap_err();
    let message = e.as_db_error().map(|d| d.message().to_string());
    (sqlstate(&e), message.unwrap_or_default())
}

/// What a simple Query of `sql`, a MERGE into the ruled table, gets before 17: Tandem's
/// refusal on 15 and 16, but the server reads the client's text first, so MERGE on 13 and
/// 14, and MERGE ... RETURNING on 15 and 16, are the server's own syntax error.
async fn code_before_17(sql: &str) -> &'static str {
    if server_has_merge().await && !sql.contains("RETURNING") {
        "0A000"
    } else {
        "42601"
    }
}

/// Before 17: a simple Query of `sql` through Tandem fails (see [`code_before_17`]) and
/// writes nothing.
async fn assert_not_mirrored(twins: &Twins, sql: &str) {
    let via = tandem_tests::through(&twins.proxy).await;
    let before = twins.ruled.legacy_rows(&twins.check).await;
    let (code, message) = failure(&via, &twins.ruled.sql(sql)).await;
    assert_eq!(code, code_before_17(sql).await, "{sql}: {message}");
    if code == "0A000" {
        assert_eq!(code, "0A000", "{sql}: {message}");
        assert!(
            message.contains(&format!(
                "MERGE into ruled table public.{}",
                twins.ruled.legacy
            )) && message.contains("mirrored from PostgreSQL 17 on"),
            "{sql}: {message}"
        );
    }
    assert_eq!(twins.ruled.legacy_rows(&twins.check).await, before, "{sql}");
    twins.assert_mirrored(sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_answers_as_postgres_and_is_mirrored() {
    // Last with the guard in place (`mirror`): it finds nothing left to mirror.
    for (kind, guard) in [
        (Kind::List, "off"),
        (Kind::Shadow, "off"),
        (Kind::List, "mirror"),
    ] {
        let twins = Twins::with_rule(kind, |r| r.guard(guard)).await;
        let (mut via, mut direct) = twins.raw_sessions().await;
        seeded(&twins, &mut via, &mut direct).await;
        if !server_mirrors_merge().await {
            if guard == "off" {
                assert_not_mirrored(&twins, MERGES[0]).await;
                assert_not_mirrored(&twins, MERGES[6]).await;
            }
            continue;
        }
        for template in MERGES {
            let got = twins.same_simple(&mut via, &mut direct, template).await;
            assert!(
                got.iter().any(|l| l.contains("CommandComplete MERGE ")),
                "{template}: {got:?}"
            );
        }
        // The same statements again, over the extended protocol.
        for template in MERGES {
            twins.same_extended(&mut via, &mut direct, template).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_tags_count_the_merged_rows() {
    let twins = Twins::with_rule(Kind::Hash, |r| r.guard("off")).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    if !server_mirrors_merge().await {
        return assert_not_mirrored(&twins, MERGES[0]).await;
    }
    let got = twins.same_simple(&mut via, &mut direct, MERGES[0]).await;
    assert!(
        got.contains(&"CommandComplete MERGE 3".to_string()),
        "{got:?}"
    );
    let got = twins.same_simple(&mut via, &mut direct, MERGES[4]).await;
    assert!(
        got.contains(&"CommandComplete MERGE 0".to_string()),
        "{got:?}"
    );
    // DO NOTHING writes nothing and counts nothing.
    let got = twins
        .same_simple(
            &mut via,
            &mut direct,
            "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
             WHEN MATCHED THEN DO NOTHING",
        )
        .await;
    assert!(
        got.contains(&"CommandComplete MERGE 0".to_string()),
        "{got:?}"
    );
    assert_eq!(twins.ruled.counts(&twins.check).await, (2, 2));
}

/// Parse, Describe, Bind with `params`, Describe, Execute, Sync of `sql` as statement
/// `name` (bound again without a Parse when `parse` is false).
async fn extended_with(
    session: &mut RawSession,
    name: &str,
    sql: &str,
    parse: bool,
    params: &[Option<&str>],
) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    if parse {
        out.extend(raw::parse(name, sql));
        out.extend(raw::describe(b'S', name));
    }
    out.extend(raw::bind("", name, params));
    out.extend(raw::describe(b'P', ""));
    out.extend(raw::execute("", 0));
    out.extend(raw::sync());
    session.send(&out).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_merge_with_parameters_answers_as_postgres() {
    let twins = Twins::with_rule(Kind::Hash, |r| r.guard("off")).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    let template = "MERGE INTO {legacy} l \
        USING (SELECT $1::text AS tenant, $2::numeric AS amount) s ON l.tenant = s.tenant \
        WHEN MATCHED AND s.amount = 0 THEN DELETE \
        WHEN MATCHED THEN UPDATE SET amount = s.amount \
        WHEN NOT MATCHED THEN INSERT (tenant, amount, token, created_at) \
        VALUES (s.tenant, s.amount, '00000000-0000-0000-0000-0000000000bb', '2024-04-01') \
        RETURNING merge_action(), l.id, l.tenant, l.amount";
    if !server_mirrors_merge().await {
        let frames = extended_with(
            &mut via,
            "",
            &twins.ruled.sql(template),
            true,
            &[Some("acme"), Some("5")],
        )
        .await;
        // A Parse is refused before the server reads it (unlike a simple Query, where the
        // server's syntax error comes first on 13 and 14).
        let code = raw::first_error(&frames).and_then(|e| e.code);
        assert_eq!(code.as_deref(), Some("0A000"), "{frames:?}");
        twins.assert_mirrored(template).await;
        return;
    }
    for (i, params) in [
        [Some("acme"), Some("5")],
        [Some("initech"), Some("6")],
        [Some("globex"), Some("0")],
    ]
    .iter()
    .enumerate()
    {
        // The unnamed statement each time, then a named one parsed once and bound again.
        for (name, parse) in [("", true), ("m", i == 0)] {
            let params: Vec<Option<&str>> = params.to_vec();
            let (ruled, baseline) = (twins.ruled.sql(template), twins.baseline.sql(template));
            let got = extended_with(&mut via, name, &ruled, parse, &params).await;
            let got = twins.transcript(&got);
            let want = extended_with(&mut direct, name, &baseline, parse, &params).await;
            let want = twins.transcript(&want);
            assert_eq!(
                got, want,
                "{params:?} ({name:?}): through Tandem (left) differs from direct (right)"
            );
            twins.assert_parity(template).await;
        }
    }
    // A driver's own prepared statement: the affected-row count comes from the tag.
    let (via, direct) = twins.clients().await;
    let sql = "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
               WHEN MATCHED THEN UPDATE SET note = $1 \
               WHEN NOT MATCHED THEN INSERT (tenant, note) VALUES (s.tenant, $1)";
    let got = via
        .execute(&twins.ruled.sql(sql), &[&"driver"])
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let want = direct
        .execute(&twins.baseline.sql(sql), &[&"driver"])
        .await
        .unwrap();
    assert_eq!((got, want), (3, 3));
    twins.assert_parity(sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_key_change_is_mirrored_on_18_and_refused_before() {
    let twins = Twins::with_rule(Kind::List, |r| r.guard("off")).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    // tenant is part of the rule's key and the target's partition key; id is the legacy key.
    let moves = [
        "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant AND s.tenant = 'acme' \
         WHEN MATCHED THEN UPDATE SET tenant = 'globex' RETURNING l.id, l.tenant, merge_action()",
        "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
         WHEN MATCHED AND l.tenant = 'umbrella' THEN DELETE \
         WHEN MATCHED THEN UPDATE SET id = l.id + 1000, tenant = 'initech' \
         WHEN NOT MATCHED THEN INSERT (id, tenant) VALUES (7, s.tenant)",
    ];
    match server_major().await {
        major if major >= 18 => {
            for template in moves {
                twins.same_simple(&mut via, &mut direct, template).await;
            }
            for template in moves {
                twins.same_extended(&mut via, &mut direct, template).await;
            }
        }
        17 => {
            let via = tandem_tests::through(&twins.proxy).await;
            for template in moves {
                let (code, message) = failure(&via, &twins.ruled.sql(template)).await;
                assert_eq!(code, "0A000", "{template}: {message}");
                assert!(
                    message.contains("in MERGE before PostgreSQL 18"),
                    "{template}: {message}"
                );
            }
            twins.assert_mirrored("refused key changes").await;
        }
        _ => {
            for template in moves {
                assert_not_mirrored(&twins, template).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_nested_in_a_cte_or_returning_other_tables_is_refused() {
    let twins = Twins::with_rule(Kind::List, |r| r.guard("off")).await;
    let (mut via_raw, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via_raw, &mut direct).await;
    if !server_mirrors_merge().await {
        return assert_not_mirrored(&twins, MERGES[0]).await;
    }
    let via = tandem_tests::through(&twins.proxy).await;
    let before = twins.ruled.legacy_rows(&twins.check).await;
    for (template, says) in [
        (
            "WITH m AS (MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
             WHEN MATCHED THEN DELETE RETURNING l.id) SELECT count(*) FROM m",
            "inside a WITH clause",
        ),
        (
            "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
             WHEN MATCHED THEN UPDATE SET note = 'x' RETURNING *",
            "refers to * (which includes the other tables' columns)",
        ),
        (
            "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
             WHEN MATCHED THEN UPDATE SET note = 'x' RETURNING l.id, s.note",
            "refers to s.note",
        ),
    ] {
        let sql = twins.ruled.sql(template);
        // Postgres itself runs it.
        let baseline = twins.baseline.sql(template);
        twins
            .check
            .batch_execute(&format!("BEGIN; {baseline}; ROLLBACK"))
            .await
            .unwrap_or_else(|e| panic!("{baseline}: {}", db_text(&e)));
        let (code, message) = failure(&via, &sql).await;
        assert_eq!(code, "0A000", "{template}: {message}");
        assert!(message.contains(says), "{template}: {message}");
        assert!(
            message.contains(&twins.ruled.legacy),
            "{template}: {message}"
        );
    }
    assert_eq!(twins.ruled.legacy_rows(&twins.check).await, before);
    twins.assert_mirrored("refused MERGEs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_under_the_record_policy_is_mirrored() {
    let twins = Twins::with_rule(Kind::List, |r| r.guard("off").record()).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    if !server_mirrors_merge().await {
        return;
    }
    for template in [MERGES[0], MERGES[1], MERGES[7]] {
        twins.same_simple(&mut via, &mut direct, template).await;
    }
    let drift = rows_text(
        &twins.check,
        "SELECT count(*) FROM tandem.drift WHERE statement LIKE 'MERGE%' AND NOT resolved",
    )
    .await;
    assert_eq!(drift, ["0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_in_cutover_writes_the_target_and_mirrors_into_legacy() {
    let (pair, check, proxy) =
        super::ruled_pair(Kind::List, |r| r.mode("cutover").guard("off")).await;
    let seed = "INSERT INTO {table} (id, tenant, amount, note, score, token, created_at) VALUES \
                (1, 'acme', 1, 'a', 0.5, '00000000-0000-0000-0000-000000000001', '2024-01-01'), \
                (2, 'globex', 2, 'b', 0.5, '00000000-0000-0000-0000-000000000002', '2024-01-02')";
    for table in ["{legacy}", "{target}"] {
        check
            .batch_execute(&pair.sql(&seed.replace("{table}", table)))
            .await
            .unwrap();
    }
    let via = tandem_tests::through(&proxy).await;
    let sql = pair.sql(
        "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
         WHEN MATCHED AND s.tenant = 'globex' THEN DELETE \
         WHEN MATCHED THEN UPDATE SET note = s.note, tenant = 'initech' \
         WHEN NOT MATCHED THEN INSERT (id, tenant, amount, score, token, created_at) \
         VALUES (3, s.tenant, s.amount, 0.25, '00000000-0000-0000-0000-000000000003', '2024-01-03') \
         RETURNING merge_action(), l.id, l.tenant",
    );
    if !server_mirrors_merge().await {
        let (code, message) = failure(&via, &sql).await;
        assert_eq!(code, code_before_17(&sql).await, "{message}");
        return;
    }
    // The target's partition key changes: in cutover the client's MERGE moves the target
    // row itself, and the legacy row keeps its primary key (id), so this runs on 17 too.
    let msgs = via
        .simple_query(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
    assert_eq!(simple_counts(&msgs), [3]);
    let returned: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..3)
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect();
    let mut returned = returned;
    returned.sort();
    assert_eq!(
        returned,
        ["DELETE 2 globex", "INSERT 3 umbrella", "UPDATE 1 initech"]
    );
    let target = rows_text(
        &check,
        &pair.sql(
            "SELECT id || ' ' || tenant || ' ' || coalesce(note, '') FROM {target} ORDER BY id",
        ),
    )
    .await;
    assert_eq!(target, ["1 initech src acme", "3 umbrella "]);
    let drift = pair.drift(Kind::List, &check).await;
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}
