//! `COPY ... FROM STDIN` into a ruled table compared with the server's own answers: Tandem
//! stages the rows in a session temp table, so everything the server would check on the
//! legacy table (the column list, `FREEZE`) must still be checked there, and a session's
//! later COPY with other columns must work as the first did.

use tandem_tests::mirror::{Kind, RawSession, Twins};
use tandem_tests::raw;

/// Sends `template` with one CopyData of `data` and CopyDone on both twins, asserts the
/// transcripts are equal and the ruled pair in parity; returns the transcript.
async fn same_copy(
    twins: &Twins,
    via: &mut RawSession,
    direct: &mut RawSession,
    template: &str,
    data: &str,
) -> Vec<String> {
    let transcript = same_copy_in_transaction(twins, via, direct, template, data).await;
    twins.assert_parity(template).await;
    transcript
}

/// [`same_copy`] without the parity check, which would wait for the locks of an open
/// transaction.
async fn same_copy_in_transaction(
    twins: &Twins,
    via: &mut RawSession,
    direct: &mut RawSession,
    template: &str,
    data: &str,
) -> Vec<String> {
    let frames = |sql: String| {
        let mut out = raw::query(&sql);
        out.extend(raw::message(b'd', data.as_bytes()));
        out.extend(raw::message(b'c', &[]));
        out
    };
    let got = twins.transcript(&via.send(&frames(twins.ruled.sql(template))).await);
    let want = twins.transcript(&direct.send(&frames(twins.baseline.sql(template))).await);
    assert_eq!(
        got, want,
        "{template}: through Tandem (left) differs from direct (right)"
    );
    got
}

/// A simple Query on both twins with equal transcripts, inside a transaction.
async fn same_in_transaction(
    twins: &Twins,
    via: &mut RawSession,
    direct: &mut RawSession,
    sql: &str,
) {
    let got = twins.transcript(&via.simple(&twins.ruled.sql(sql)).await);
    let want = twins.transcript(&direct.simple(&twins.baseline.sql(sql)).await);
    assert_eq!(
        got, want,
        "{sql}: through Tandem (left) differs from direct (right)"
    );
}

fn has(transcript: &[String], what: &str) -> bool {
    transcript.iter().any(|l| l.contains(what))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_with_another_column_list_in_the_same_session_matches_postgres() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    let copies = [
        (
            "COPY {legacy} (tenant, amount, note) FROM STDIN",
            "acme\t1\ta\n",
            "COPY 1",
        ),
        (
            "COPY {legacy} (tenant, note) FROM STDIN",
            "globex\tb\n",
            "COPY 1",
        ),
        (
            "COPY {legacy} (note, tenant, amount) FROM STDIN",
            "c\tacme\t3\n",
            "COPY 1",
        ),
        (
            "COPY {legacy} (tenant, amount) FROM STDIN WITH (FORMAT csv)",
            "globex,4\nacme,5\n",
            "COPY 2",
        ),
        // Refused before CopyInResponse, as the server refuses them.
        (
            "COPY {legacy} (tenant, nosuch) FROM STDIN",
            "acme\tx\n",
            "C=42703",
        ),
        (
            "COPY {legacy} (tenant, note, tenant) FROM STDIN",
            "a\tb\tc\n",
            "C=42701",
        ),
        (
            "COPY {legacy} (tenant, note) FROM STDIN",
            "globex\tafter\n",
            "COPY 1",
        ),
    ];
    for (template, data, expect) in copies {
        let transcript = same_copy(&twins, &mut via, &mut direct, template, data).await;
        assert!(has(&transcript, expect), "{template}: {transcript:?}");
    }
    assert_eq!(twins.ruled.counts(&twins.check).await, (6, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_freeze_fails_as_postgres_does_unless_the_table_was_truncated_in_the_transaction() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    let freeze = "COPY {legacy} (tenant, amount) FROM STDIN WITH (FREEZE)";
    let refused = same_copy(&twins, &mut via, &mut direct, freeze, "acme\t1\n").await;
    assert!(has(&refused, "C=55000"), "{refused:?}");
    for sql in ["BEGIN", "TRUNCATE {src}"] {
        same_in_transaction(&twins, &mut via, &mut direct, sql).await;
    }
    let refused =
        same_copy_in_transaction(&twins, &mut via, &mut direct, freeze, "acme\t1\n").await;
    assert!(has(&refused, "C=55000"), "{refused:?}");
    twins.same_simple(&mut via, &mut direct, "ROLLBACK").await;
    for sql in ["BEGIN", "TRUNCATE {legacy}"] {
        same_in_transaction(&twins, &mut via, &mut direct, sql).await;
    }
    let data = "acme\t1\nglobex\t2\n";
    let loaded = same_copy_in_transaction(&twins, &mut via, &mut direct, freeze, data).await;
    assert!(has(&loaded, "COPY 2"), "{loaded:?}");
    same_in_transaction(&twins, &mut via, &mut direct, "COMMIT").await;
    twins.assert_parity("COMMIT").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_onto_a_key_the_target_already_holds_overwrites_it_as_the_upsert_does() {
    // Tandem first moves staged rows into the target with a plain INSERT (issue 17: the
    // upsert's speculative insertion was a quarter of a large COPY's time); a target that
    // drifted and holds one of the keys makes it fail, and the upsert runs instead. A
    // hash-partitioned target (the violation names a partition, not the target itself) and
    // a plain one (it names the target).
    for kind in [Kind::Hash, Kind::Shadow] {
        let twins = Twins::new(kind).await;
        let (mut via, mut direct) = twins.raw_sessions().await;
        let stale = "INSERT INTO {target} (id, tenant, amount, note, score, token, created_at) \
                     VALUES (7, 'stale', 0, 'drifted', 0, gen_random_uuid(), now())";
        twins
            .check
            .batch_execute(&twins.ruled.sql(stale))
            .await
            .expect("stale target row");
        let copy = "COPY {legacy} (id, tenant, amount, note, score) FROM STDIN";
        let data = "6\tacme\t1\tsix\t0.5\n7\tglobex\t2\tseven\t0.25\n8\tacme\t3\teight\t0.125\n";
        let transcript = same_copy(&twins, &mut via, &mut direct, copy, data).await;
        assert!(has(&transcript, "COPY 3"), "{kind:?}: {transcript:?}");
        assert_eq!(twins.ruled.counts(&twins.check).await, (3, 3), "{kind:?}");
        let note: String = twins
            .check
            .query_one(
                &twins.ruled.sql("SELECT note FROM {target} WHERE id = 7"),
                &[],
            )
            .await
            .expect("the overwritten row")
            .get(0);
        assert_eq!(note, "seven", "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_breaking_a_legacy_unique_key_fails_as_postgres_does_and_lands_nowhere() {
    // A unique violation of the legacy table is the client's error: raised as it was, not
    // retried (a retry would take new serial values and might succeed where COPY fails).
    let twins = Twins::new(Kind::Hash).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    let copy = "COPY {legacy} (id, tenant, amount) FROM STDIN";
    same_copy(&twins, &mut via, &mut direct, copy, "1\tacme\t1\n").await;
    let failed = same_copy(
        &twins,
        &mut via,
        &mut direct,
        copy,
        "2\tacme\t2\n1\tacme\t3\n",
    )
    .await;
    assert!(has(&failed, "C=23505"), "{failed:?}");
    assert_eq!(twins.ruled.counts(&twins.check).await, (1, 1));
    // Inside a transaction that then rolls back, a successful COPY leaves nothing either.
    twins.same_simple(&mut via, &mut direct, "BEGIN").await;
    let loaded = same_copy_in_transaction(
        &twins,
        &mut via,
        &mut direct,
        copy,
        "10\tacme\t4\n11\tglobex\t5\n",
    )
    .await;
    assert!(has(&loaded, "COPY 2"), "{loaded:?}");
    twins.same_simple(&mut via, &mut direct, "ROLLBACK").await;
    twins.assert_parity("ROLLBACK").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (1, 1));
}
