//! Syntax errors in a statement that names a ruled table: Tandem cannot parse it, so it
//! refuses to run it, but the client must still get the server's own 42601, first, as
//! without Tandem: the server parses a whole query string before it runs any of it, and
//! before it refuses a statement in an aborted transaction (25P02).

use tandem_tests::mirror::{without_positions, Kind, RawSession, Twins};

/// A simple Query on both twins: the same transcript, error positions aside (the server
/// counts Tandem's refusal in front of the client's text).
async fn same(
    twins: &Twins,
    via: &mut RawSession,
    direct: &mut RawSession,
    sql: &str,
) -> Vec<String> {
    let got = without_positions(twins.transcript(&via.simple(&twins.ruled.sql(sql)).await));
    let want = without_positions(twins.transcript(&direct.simple(&twins.baseline.sql(sql)).await));
    assert_eq!(
        got, want,
        "{sql}: through Tandem (left) differs from direct (right)"
    );
    got
}

fn error_code(transcript: &[String]) -> Option<&str> {
    transcript
        .iter()
        .find_map(|l| l.split(" | ").find_map(|f| f.strip_prefix("C=")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_error_naming_a_ruled_table_is_the_servers_own() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    for sql in [
        "INSERT INTO {legacy} (tenant VALUES ('acme')",
        // The whole string is parsed first: its first statement does not run.
        "INSERT INTO {src} VALUES ('initech', 1, 'x'); UPDATE {legacy} SET note = WHERE id = 1",
        "DELETE FROM {legacy} WHERE (",
    ] {
        let transcript = same(&twins, &mut via, &mut direct, sql).await;
        assert_eq!(error_code(&transcript), Some("42601"), "{transcript:?}");
        twins.assert_parity(sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_error_in_an_aborted_transaction_is_reported_before_25p02() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    for (sql, code) in [
        ("BEGIN", None),
        ("SELECT 1/0", Some("22012")),
        (
            "INSERT INTO {legacy} (tenant VALUES ('acme')",
            Some("42601"),
        ),
        (
            "UPDATE {legacy} SET note = WHERE id = 1; SELECT 1",
            Some("42601"),
        ),
        // A statement the server can parse is refused as the aborted transaction says.
        (
            "INSERT INTO {legacy} (tenant) VALUES ('acme')",
            Some("25P02"),
        ),
        ("ROLLBACK", None),
    ] {
        let transcript = same(&twins, &mut via, &mut direct, sql).await;
        assert_eq!(error_code(&transcript), code, "{sql}: {transcript:?}");
    }
    twins.assert_parity("ROLLBACK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_error_in_a_parse_is_the_servers_own_with_its_position() {
    let twins = Twins::with_rule(Kind::List, |r| r.guard("off")).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    let broken = "UPDATE {legacy} SET note = WHERE id = 1";
    for in_aborted_transaction in [false, true] {
        if in_aborted_transaction {
            same(&twins, &mut via, &mut direct, "BEGIN").await;
            same(&twins, &mut via, &mut direct, "SELECT 1/0").await;
        }
        let got = twins.transcript(&via.extended(&twins.ruled.sql(broken)).await);
        let want = twins.transcript(&direct.extended(&twins.baseline.sql(broken)).await);
        assert_eq!(
            got, want,
            "through Tandem (left) differs from direct (right)"
        );
        assert_eq!(error_code(&got), Some("42601"), "{got:?}");
    }
    same(&twins, &mut via, &mut direct, "ROLLBACK").await;
    // Text the server can parse is still refused, not run.
    let got = twins.transcript(
        &via.extended(&twins.ruled.sql("DELETE FROM {legacy} WHERE CURRENT OF c"))
            .await,
    );
    assert_eq!(error_code(&got), Some("0A000"), "{got:?}");
    twins.assert_parity("the refusals").await;
}
