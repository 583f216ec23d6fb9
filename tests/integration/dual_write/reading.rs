//! Tandem reads each statement as the server will: the lexer's edge cases, the session's
//! `standard_conforming_strings` and `client_encoding`, and names the server truncates.
//! Every case is mirrored, or refused with a clear SQLSTATE; none runs unmirrored.

use tandem_tests::mirror::{
    config_with, db_text, sqlstate, start_ruled_proxy, Kind, RawSession, RuleToml,
};
use tandem_tests::raw::first_error;
use tandem_tests::{pg, through, unique};

use super::ruled_pair;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_comment_ended_by_a_carriage_return_is_mirrored() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via = through(&proxy).await;
    via.simple_query(&pair.sql(
        "insert into --a comment that ends here\r{legacy} (tenant, amount) values ('acme', 1)",
    ))
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_name_the_server_truncates_to_a_ruled_table_is_that_table() {
    let check = pg().direct().await;
    let mut legacy = unique("trunc");
    while legacy.len() < 63 {
        legacy.push('x');
    }
    let target = format!("{}_v2", unique("trunc"));
    check
        .batch_execute(&format!(
            "CREATE TABLE public.{legacy} (id bigint PRIMARY KEY, v text);
             CREATE TABLE public.{target} (id bigint PRIMARY KEY, v text);"
        ))
        .await
        .unwrap();
    let rule = RuleToml::dual_write(&legacy).target(&format!("public.{target}"));
    let proxy = start_ruled_proxy(config_with(&[rule])).await;
    let via = through(&proxy).await;
    for (i, spelling) in [
        format!("{legacy}_and_more"),
        format!("\"{legacy}_and_more\""),
        format!("{}_AND_MORE", legacy.to_uppercase()),
    ]
    .iter()
    .enumerate()
    {
        via.batch_execute(&format!("INSERT INTO {spelling} (id, v) VALUES ({i}, 'x')"))
            .await
            .unwrap();
    }
    let count = |t: &str| format!("SELECT count(*) FROM public.{t}");
    for table in [&legacy, &target] {
        let n: i64 = check.query_one(&count(table), &[]).await.unwrap().get(0);
        assert_eq!(n, 3, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unicode_escaped_name_of_a_ruled_table_is_that_table() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via = through(&proxy).await;
    let escaped: String = pair
        .legacy
        .chars()
        .map(|c| format!("!{:04X}", c as u32))
        .collect();
    let sql =
        format!("INSERT INTO U&\"{escaped}\" UESCAPE '!' (tenant, amount) VALUES ('acme', 1)");
    via.simple_query(&sql).await.unwrap();
    via.execute(sql.as_str(), &[]).await.unwrap();
    assert_eq!(pair.counts(&check).await, (2, 2));
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_read_with_standard_conforming_strings_off_are_mirrored_or_refused() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via = through(&proxy).await;
    via.batch_execute("SET standard_conforming_strings = off; SET escape_string_warning = off")
        .await
        .unwrap();
    // Reads the same under both string syntaxes: mirrored, and both tables hold the value
    // the server made of it.
    via.batch_execute(
        &pair.sql(r"INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'C:\dir')"),
    )
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
    // A quote the backslash escapes: the server reads one string where Tandem's planner
    // would read two. Refused.
    let e = via
        .batch_execute(
            &pair.sql(r"INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 2, 'it\'s')"),
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{}", db_text(&e));
    assert!(
        db_text(&e).contains("standard_conforming_strings"),
        "{}",
        db_text(&e)
    );
    // Under this session's syntax the DELETE is inside the string: nothing is deleted,
    // and nothing is refused.
    via.batch_execute(&pair.sql(r"SELECT 'x\'; DELETE FROM {legacy}; --'"))
        .await
        .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
    // Back to standard strings (the server's report is what Tandem follows).
    via.batch_execute("SET standard_conforming_strings = on")
        .await
        .unwrap();
    via.batch_execute(&pair.sql(r"SELECT 'x\'; DELETE FROM {legacy}; --'"))
        .await
        .unwrap();
    assert_eq!(pair.counts(&check).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_text_in_another_client_encoding_is_refused_when_it_names_a_ruled_table() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let mut via = RawSession::connect(proxy.addr).await;
    let frames = via.simple("SET client_encoding = 'LATIN1'").await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    // ASCII reads the same in every encoding: mirrored.
    let frames = via
        .simple(
            &pair.sql("INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'plain')"),
        )
        .await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    assert_eq!(pair.counts(&check).await, (1, 1));
    // 'café' in LATIN1: refused, nothing written.
    let mut sql = pair
        .sql("INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 2, 'caf")
        .into_bytes();
    sql.extend_from_slice(b"\xe9')");
    let frames = via.simple_bytes(&sql).await;
    let error = first_error(&frames).expect("refused");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    assert!(
        error.message.contains("client_encoding is LATIN1"),
        "{error:?}"
    );
    assert_eq!(pair.counts(&check).await, (1, 1));
    // The same bytes into a table without a rule: relayed, the server converts them.
    let mut sql = pair
        .sql("INSERT INTO {src} (tenant, amount, note) VALUES ('latin', 2, 'caf")
        .into_bytes();
    sql.extend_from_slice(b"\xe9')");
    let frames = via.simple_bytes(&sql).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    let note: String = check
        .query_one(
            &pair.sql("SELECT note FROM {src} WHERE tenant = 'latin'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "café");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_name_that_is_not_utf8_is_refused() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let mut via = RawSession::connect(proxy.addr).await;
    let mut parse = b"s\xff\0".to_vec();
    parse.extend_from_slice(
        pair.sql("INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 1)")
            .as_bytes(),
    );
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = tandem_tests::raw::message(b'P', &parse);
    out.extend(tandem_tests::raw::message(b'B', b"\0s\xff\0\0\0\0\0\0\0"));
    out.extend(tandem_tests::raw::message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(tandem_tests::raw::message(b'S', &[]));
    let frames = via.send(&out).await;
    let error = first_error(&frames).expect("refused");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    assert_eq!(pair.counts(&check).await, (0, 0));
    // The session goes on, and its own unnamed statement was not touched.
    let frames = via.extended("SELECT 1").await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_packet_naming_the_database_twice_means_the_last_one() {
    use tokio::io::AsyncWriteExt;
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let packet = tandem_tests::raw::startup(
        &pg().superuser,
        "postgres",
        &[("database", pg().database.as_str())],
    );
    s.write_all(&packet).await.unwrap();
    let wait = std::time::Duration::from_secs(10);
    let frames = tandem_tests::raw::read_until_ready(&mut s, wait).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    s.write_all(&tandem_tests::raw::query(
        &pair.sql("INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 1)"),
    ))
    .await
    .unwrap();
    let frames = tandem_tests::raw::read_until_ready(&mut s, wait).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    assert_eq!(pair.counts(&check).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruled_table_replaced_behind_tandems_back_is_not_written() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql("INSERT INTO public.{legacy} (tenant, amount) VALUES ('acme', 1)"))
        .await
        .unwrap();
    // Straight to the database, where Tandem cannot refuse it: the legacy table is
    // replaced by another of the same name.
    check
        .batch_execute(&pair.sql(
            "ALTER TABLE public.{legacy} RENAME TO {legacy}_old;
             CREATE TABLE public.{legacy} (LIKE public.{legacy}_old INCLUDING ALL);",
        ))
        .await
        .unwrap();
    for sql in [
        "INSERT INTO public.{legacy} (tenant, amount) VALUES ('acme', 2)",
        "INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 3)",
    ] {
        let e = via.batch_execute(&pair.sql(sql)).await.unwrap_err();
        assert_eq!(sqlstate(&e), "55000", "{sql}: {}", db_text(&e));
    }
    let n: i64 = check
        .query_one(&pair.sql("SELECT count(*) FROM public.{legacy}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing written to the new table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multibyte_character_ending_in_a_backslash_byte_hides_no_write() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via_sql = "INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 1)";
    through(&proxy)
        .await
        .batch_execute(&pair.sql(via_sql))
        .await
        .unwrap();
    check
        .batch_execute(&pair.sql("INSERT INTO {src} VALUES ('sjis', 1, 'x')"))
        .await
        .unwrap();
    // SJIS 0x83 0x5C is one character (ソ) whose second byte is a backslash. The server
    // reads it as a character, so the string ends at the next quote and the DELETE is real:
    // shown directly on a table without a rule.
    let mut direct = RawSession::connect(tandem_tests::mirror::direct_addr()).await;
    let frames = direct.simple("SET client_encoding = 'SJIS'").await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    let mut sql = b"SELECT E'\x83\x5c'; ".to_vec();
    sql.extend_from_slice(
        pair.sql("DELETE FROM {src} WHERE tenant = 'sjis'")
            .as_bytes(),
    );
    let frames = direct.simple_bytes(&sql).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    let left: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {src} WHERE tenant = 'sjis'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the server ran the DELETE");
    // Through Tandem, the same shape naming the ruled table is read as the server reads it
    // (a write, with non-ASCII text in a non-UTF8 encoding): refused, nothing deleted.
    let mut via = RawSession::connect(proxy.addr).await;
    let frames = via.simple("SET client_encoding = 'SJIS'").await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    let mut sql = b"SELECT E'\x83\x5c'; ".to_vec();
    sql.extend_from_slice(pair.sql("DELETE FROM {legacy}").as_bytes());
    let frames = via.simple_bytes(&sql).await;
    let error = first_error(&frames).expect("refused");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    assert_eq!(pair.counts(&check).await, (1, 1));
}
