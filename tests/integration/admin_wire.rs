//! The admin console at the byte level, where it must behave as Postgres does: auth
//! messages capped before their body is read, a SCRAM authorization identity refused,
//! messages after an extended-protocol error discarded until Sync.

use std::time::Duration;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tandem::config::AdminConfig;
use tandem::RunningProxy;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::pg;
use tandem_tests::raw::{first_error, message, query, read_frames, read_until_ready, startup};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PASSWORD: &str = "s3cret admin";
const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn console_proxy(pair: &Pair) -> RunningProxy {
    let mut config = config_with(&[pair.rule(Kind::Hash).mode("off")]);
    config.admin = Some(AdminConfig {
        user: "admin".into(),
        password: Some(PASSWORD.into()),
        password_env: None,
    });
    start_ruled_proxy(config).await
}

/// Connects to the console and waits for the SASL request.
async fn sasl_started(proxy: &RunningProxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&startup("admin", "tandem", &[])).await.unwrap();
    let frames = read_until_ready(&mut s, Duration::from_millis(500)).await;
    assert!(
        frames
            .iter()
            .any(|(t, b)| *t == b'R' && b[..4] == 10i32.to_be_bytes()),
        "expected AuthenticationSASL: {frames:?}"
    );
    s
}

/// A SASLInitialResponse for SCRAM-SHA-256 carrying `data`.
fn sasl_initial(data: &[u8]) -> Vec<u8> {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    message(b'p', &body)
}

/// A console session past SCRAM and the first ReadyForQuery.
pub(crate) async fn logged_in(proxy: &RunningProxy) -> TcpStream {
    let mut s = sasl_started(proxy).await;
    let mut scram = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    s.write_all(&sasl_initial(scram.message())).await.unwrap();
    let frames = read_until_ready(&mut s, Duration::from_millis(500)).await;
    let (_, first) = frames
        .iter()
        .find(|(t, _)| *t == b'R')
        .expect("SASLContinue");
    scram.update(&first[4..]).expect("server-first");
    s.write_all(&message(b'p', scram.message())).await.unwrap();
    let frames = read_until_ready(&mut s, WAIT).await;
    assert!(frames.iter().any(|(t, _)| *t == b'Z'), "login: {frames:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_message_over_65535_bytes_is_refused_before_its_body() {
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &pg().direct().await).await;
    let proxy = console_proxy(&pair).await;
    let mut s = sasl_started(&proxy).await;
    // The header claims 100 MB; no body follows. Postgres refuses it at once.
    let mut header = vec![b'p'];
    header.extend_from_slice(&(100 * 1024 * 1024 + 4i32).to_be_bytes());
    s.write_all(&header).await.unwrap();
    let (frames, closed) = read_frames(&mut s, WAIT).await;
    let error = first_error(&frames).expect("an ErrorResponse, not a wait for the body");
    assert_eq!(error.code.as_deref(), Some("08P01"), "{error:?}");
    assert!(closed, "the connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_authorization_identity_is_refused_as_postgres_refuses_it() {
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &pg().direct().await).await;
    let proxy = console_proxy(&pair).await;
    let mut s = sasl_started(&proxy).await;
    s.write_all(&sasl_initial(b"n,a=admin,n=,r=abcdefghijkl"))
        .await
        .unwrap();
    let (frames, closed) = read_frames(&mut s, WAIT).await;
    let error = first_error(&frames).expect("an ErrorResponse");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    assert_eq!(
        error.message,
        "client uses authorization identity, but it is not supported"
    );
    assert!(closed);
    assert!(!frames.iter().any(|(t, _)| *t == b'R'), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_after_an_extended_protocol_error_is_discarded_until_sync() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let proxy = console_proxy(&pair).await;
    let mut s = logged_in(&proxy).await;
    let table = format!("public.{}", pair.legacy);
    let mut batch = message(b'P', b"\0SHOW RULES\0\0\0");
    batch.extend(query(&format!("SET RULE {table} MODE dual_write")));
    batch.extend(message(b'S', b""));
    s.write_all(&batch).await.unwrap();
    let frames = read_until_ready(&mut s, WAIT).await;
    let tags: Vec<u8> = frames.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        tags, b"EZ",
        "one error, then Sync's ReadyForQuery: {frames:?}"
    );
    assert_eq!(first_error(&frames).unwrap().code.as_deref(), Some("0A000"));
    // The discarded SET RULE changed nothing; a Query after Sync runs.
    s.write_all(&query("SHOW RULES")).await.unwrap();
    let frames = read_until_ready(&mut s, WAIT).await;
    let rows: Vec<String> = frames
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(rows.len(), 1, "{frames:?}");
    assert!(rows[0].contains("off"), "{rows:?}");
    assert!(!rows[0].contains("dual_write"), "{rows:?}");
}

/// A client asking for protocol 3.2 and an unknown `_pq_` option (libpq 18 with
/// `max_protocol_version=latest`) is told first that the console speaks 3.0 and knows no
/// such option, then authenticates as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_2_client_is_negotiated_down_to_3_0() {
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &pg().direct().await).await;
    let proxy = console_proxy(&pair).await;
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut packet = startup("admin", "tandem", &[("_pq_.test_option", "1")]);
    packet[6..8].copy_from_slice(&2u16.to_be_bytes());
    s.write_all(&packet).await.unwrap();
    let frames = read_until_ready(&mut s, Duration::from_millis(500)).await;
    let (tag, body) = frames.first().expect("a reply");
    assert_eq!(*tag, b'v', "NegotiateProtocolVersion first: {frames:?}");
    assert_eq!(&body[..8], &[0, 3, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&body[8..], b"_pq_.test_option\0");
    assert!(
        frames
            .iter()
            .any(|(t, b)| *t == b'R' && b[..4] == 10i32.to_be_bytes()),
        "then AuthenticationSASL: {frames:?}"
    );
}
