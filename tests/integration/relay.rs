//! The relay with tokio-postgres: simple and extended protocol, binary values, pipelining,
//! COPY both ways, LISTEN/NOTIFY, cancel, notices and errors, all identical to direct.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use tandem_tests::{pg, start_proxy, through, unique};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

fn tags(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_multi_statement_matches_direct() {
    let proxy = start_proxy().await;
    let via = through(&proxy).await;
    let direct = pg().direct().await;
    let t = unique("simple");
    via.batch_execute(&format!("CREATE TABLE {t} (id int primary key, v text)"))
        .await
        .unwrap();
    let sql = format!(
        "INSERT INTO {t} VALUES (1, 'a'), (2, NULL); UPDATE {t} SET v = 'b' WHERE id = 2; \
         SELECT id, v FROM {t} ORDER BY id; DELETE FROM {t} WHERE id = 1"
    );
    let got = via.simple_query(&sql).await.unwrap();
    assert_eq!(tags(&got), vec![2, 1, 2, 1]);
    assert_eq!(
        simple_rows(&got),
        vec![
            vec![Some("1".into()), Some("a".into())],
            vec![Some("2".into()), Some("b".into())]
        ]
    );
    let left = direct
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>(0), 1);

    // An error in the middle of a multi-statement string stops it, exactly as direct.
    let bad =
        format!("INSERT INTO {t} VALUES (10, 'x'); SELECT 1/0; INSERT INTO {t} VALUES (11, 'y')");
    let e_via = via.simple_query(&bad).await.unwrap_err();
    let e_direct = direct.simple_query(&bad).await.unwrap_err();
    let (dv, dd) = (
        e_via.as_db_error().unwrap(),
        e_direct.as_db_error().unwrap(),
    );
    assert_eq!(dv.code(), dd.code());
    assert_eq!(dv.message(), dd.message());
    let n: i64 = direct
        .query_one(&format!("SELECT count(*) FROM {t} WHERE id >= 10"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "the implicit transaction of the failed string rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_params_and_results() {
    let proxy = start_proxy().await;
    let via = through(&proxy).await;
    let t = unique("ext");
    via.batch_execute(&format!(
        "CREATE TABLE {t} (id bigint primary key, f float8, b bytea, ts timestamptz, j text, a int[])"
    ))
    .await
    .unwrap();
    let insert = via
        .prepare(&format!(
            "INSERT INTO {t} VALUES ($1, $2, $3, now(), $4, $5) RETURNING id, b"
        ))
        .await
        .unwrap();
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let json = "{\"k\": [1, 2]}";
    let row = via
        .query_one(&insert, &[&7i64, &1.5f64, &blob, &json, &vec![1i32, 2, 3]])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, Vec<u8>>(1), blob);
    // Named statement reused many times; unnamed via query with params.
    for i in 8..20i64 {
        via.execute(
            &insert,
            &[&i, &(i as f64), &vec![i as u8], &json, &vec![i as i32]],
        )
        .await
        .unwrap();
    }
    let rows = via
        .query(
            &format!("SELECT id, f, a FROM {t} WHERE id > $1 ORDER BY id"),
            &[&10i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 9);
    assert_eq!(rows[0].get::<_, f64>(1), 11.0);
    assert_eq!(rows[0].get::<_, Vec<i32>>(2), vec![11]);
    // Statement description comes through: parameter and column types.
    let stmt = via
        .prepare(&format!("SELECT f, b FROM {t} WHERE id = $1"))
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::INT8]);
    assert_eq!(
        stmt.columns()[1].type_(),
        &tokio_postgres::types::Type::BYTEA
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_arrive_in_order() {
    let proxy = start_proxy().await;
    let via = through(&proxy).await;
    let stmt = via.prepare("SELECT $1::int * 2").await.unwrap();
    let futures: Vec<_> = (0..200i32)
        .map(|i| {
            let via = &via;
            let stmt = &stmt;
            async move { via.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
        })
        .collect();
    let results = futures_util::future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i32 * 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let proxy = start_proxy().await;
    let via = through(&proxy).await;
    let t = unique("copy");
    via.batch_execute(&format!("CREATE TABLE {t} (id int, v text)"))
        .await
        .unwrap();
    let sink = via.copy_in(&format!("COPY {t} FROM STDIN")).await.unwrap();
    pin_mut!(sink);
    let mut data = String::new();
    for i in 0..50_000 {
        data.push_str(&format!("{i}\tvalue {i}\n"));
    }
    for chunk in data.as_bytes().chunks(7919) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 50_000);
    let out = via
        .copy_out(&format!("COPY (SELECT * FROM {t} ORDER BY id) TO STDOUT"))
        .await
        .unwrap();
    let chunks: Vec<Bytes> = out.try_collect().await.unwrap();
    let copied: Vec<u8> = chunks.concat();
    assert_eq!(copied, data.as_bytes());
    // A COPY that fails mid-way reports Postgres's error and leaves the session usable.
    let sink = via.copy_in(&format!("COPY {t} FROM STDIN")).await.unwrap();
    pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tok\nnot-a-number\tbad\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION)
    );
    let n: i64 = via
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_reach_the_client() {
    let proxy = start_proxy().await;
    let url = tandem_tests::proxy_url(&proxy, &pg().superuser);
    let (client, mut conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(Ok(msg)) = stream.next().await {
            let _ = tx.send(msg);
        }
    });
    let channel = unique("chan");
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql' USING DETAIL = 'd1', HINT = 'h1'; END $$")
        .await
        .unwrap();
    let other = through(&proxy).await;
    other
        .batch_execute(&format!("NOTIFY {channel}, 'payload-1'"))
        .await
        .unwrap();
    let mut got_notice = false;
    let mut got_notify = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(got_notice && got_notify) {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out")
            .expect("closed");
        match msg {
            AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "hello from plpgsql");
                assert_eq!(n.detail(), Some("d1"));
                assert_eq!(n.hint(), Some("h1"));
                got_notice = true;
            }
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), channel);
                assert_eq!(n.payload(), "payload-1");
                got_notify = true;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_backend() {
    let proxy = start_proxy().await;
    let via = through(&proxy).await;
    let bystander = through(&proxy).await;
    let token = via.cancel_token();
    let sleeper = tokio::spawn(async move { via.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The other session was not touched.
    let one: i32 = bystander.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_all_fields() {
    let proxy = start_proxy().await;
    let via = through(&proxy).await;
    let direct = pg().direct().await;
    let t = unique("errs");
    direct
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int primary key, n int CHECK (n > 0))"
        ))
        .await
        .unwrap();
    direct
        .batch_execute(&format!("INSERT INTO {t} VALUES (1, 1)"))
        .await
        .unwrap();
    for sql in [
        format!("INSERT INTO {t} VALUES (1, 1)"),
        format!("INSERT INTO {t} VALUES (2, -1)"),
        "SELECT nosuchcolumn FROM pg_class".to_string(),
        "SELEC 1".to_string(),
    ] {
        let a = via.simple_query(&sql).await.unwrap_err();
        let b = direct.simple_query(&sql).await.unwrap_err();
        let (a, b) = (a.as_db_error().unwrap(), b.as_db_error().unwrap());
        assert_eq!(a.code(), b.code(), "{sql}");
        assert_eq!(a.message(), b.message());
        assert_eq!(a.detail(), b.detail());
        assert_eq!(a.hint(), b.hint());
        assert_eq!(a.position(), b.position());
        assert_eq!(a.table(), b.table());
        assert_eq!(a.constraint(), b.constraint());
        assert_eq!(a.schema(), b.schema());
    }
}

mod raw_protocol {
    //! Protocol corners drivers rarely exercise: GSSENCRequest, a newer minor version,
    //! FunctionCall.

    use std::time::Duration;

    use tandem_tests::raw::{self, message, read_until_ready};
    use tandem_tests::{pg, start_proxy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gssenc_request_is_declined_then_startup_works() {
        let proxy = start_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
            .await
            .unwrap();
        assert_eq!(s.read_u8().await.unwrap(), b'N');
        s.write_all(&raw::startup(&pg().superuser, &pg().database, &[]))
            .await
            .unwrap();
        let frames = read_until_ready(&mut s, WAIT).await;
        assert_eq!(frames.last().map(|f| f.0), Some(b'Z'));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newer_minor_version_is_negotiated_by_the_server() {
        let proxy = start_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let mut startup = raw::startup(
            &pg().superuser,
            &pg().database,
            &[("_pq_.test_option", "1")],
        );
        startup[6..8].copy_from_slice(&2u16.to_be_bytes()); // protocol 3.2
        s.write_all(&startup).await.unwrap();
        let frames = read_until_ready(&mut s, WAIT).await;
        let negotiate = frames
            .iter()
            .find(|f| f.0 == b'v')
            .expect("NegotiateProtocolVersion relayed");
        // The newest version the server supports (3.2 from PostgreSQL 18 on, else 3.0: the
        // server sends the whole version number here), then the unrecognised _pq_ option.
        let newest: i32 = if tandem_tests::server_major().await >= 18 {
            0x0003_0002
        } else {
            0x0003_0000
        };
        assert_eq!(&negotiate.1[..4], &newest.to_be_bytes());
        assert!(String::from_utf8_lossy(&negotiate.1).contains("_pq_.test_option"));
        assert_eq!(frames.last().map(|f| f.0), Some(b'Z'));
        s.write_all(&raw::query("SELECT 1")).await.unwrap();
        let frames = read_until_ready(&mut s, WAIT).await;
        assert!(frames.iter().any(|f| f.0 == b'D'));
    }

    /// Protocol 3.2: PostgreSQL 18 accepts it and hands out a 32-byte cancel secret, which the
    /// proxy carries (its own key for the client is as long); older servers negotiate the
    /// session down to 3.0 and a 4-byte key. Either way the client's cancel stops its query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_3_2_cancel_keys_are_carried() {
        let proxy = start_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let mut startup = raw::startup(&pg().superuser, &pg().database, &[]);
        startup[6..8].copy_from_slice(&2u16.to_be_bytes()); // protocol 3.2
        s.write_all(&startup).await.unwrap();
        let frames = read_until_ready(&mut s, WAIT).await;
        let key = frames
            .iter()
            .find(|f| f.0 == b'K')
            .expect("BackendKeyData")
            .1
            .clone();
        let downgraded = frames.iter().find(|f| f.0 == b'v');
        if tandem_tests::server_major().await >= 18 {
            assert!(downgraded.is_none(), "PostgreSQL 18 speaks 3.2");
            assert_eq!(key.len() - 4, 32, "a 3.2 session's secret is 32 bytes");
        } else {
            let v = downgraded.expect("NegotiateProtocolVersion down to 3.0");
            assert_eq!(&v.1[..4], &0x0003_0000i32.to_be_bytes());
            assert_eq!(key.len() - 4, 4, "a 3.0 session's secret is 4 bytes");
        }
        let sleep = format!(
            "SELECT pg_sleep(60) -- {}",
            tandem_tests::unique("cancel32")
        );
        s.write_all(&raw::query(&sleep)).await.unwrap();
        let direct = pg().direct().await;
        for _ in 0..600 {
            let running = direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                    &[&sleep],
                )
                .await
                .unwrap();
            if running.get::<_, i64>(0) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut cancel = Vec::new();
        cancel.extend(((8 + key.len()) as i32).to_be_bytes());
        cancel.extend(80_877_102i32.to_be_bytes());
        cancel.extend(&key);
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(&cancel).await.unwrap();
        let frames = read_until_ready(&mut s, Duration::from_secs(30)).await;
        let error = raw::first_error(&frames).expect("the sleep was cancelled");
        assert_eq!(error.code.as_deref(), Some("57014"), "{error:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn function_call_round_trips() {
        let proxy = start_proxy().await;
        let app = tandem_tests::unique("fcall");
        let mut s = raw::login(proxy.addr, &pg().superuser, &pg().database, &app).await;
        // int4pl (OID 177) with two text-format arguments, text result.
        let mut body = Vec::new();
        body.extend(177i32.to_be_bytes());
        body.extend(0i16.to_be_bytes()); // argument formats: all text
        body.extend(2i16.to_be_bytes());
        for arg in [b"2".as_slice(), b"40".as_slice()] {
            body.extend((arg.len() as i32).to_be_bytes());
            body.extend(arg);
        }
        body.extend(0i16.to_be_bytes()); // result format: text
        s.write_all(&message(b'F', &body)).await.unwrap();
        let frames = read_until_ready(&mut s, WAIT).await;
        let result = frames
            .iter()
            .find(|f| f.0 == b'V')
            .expect("FunctionCallResponse");
        assert_eq!(&result.1[4..], b"42");
        assert_eq!(frames.last().map(|f| f.0), Some(b'Z'));
    }
}
