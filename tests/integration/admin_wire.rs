//! The admin console at the byte level, where it must behave as Postgres does: auth
//! messages capped before their body is read, a SCRAM authorization identity refused,
//! messages after an extended-protocol error discarded until Sync, SCRAM channel binding
//! negotiated and checked as Postgres does.

use std::sync::Arc;
use std::time::Duration;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tandem::config::AdminConfig;
use tandem::RunningProxy;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::pg;
use tandem_tests::raw::{first_error, message, query, read_frames, read_until_ready, startup};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

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
    sasl_initial_for("SCRAM-SHA-256", data)
}

/// A SASLInitialResponse for `mechanism` carrying `data`.
fn sasl_initial_for(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
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

/// A console on a listener with `[tls]` (the test server's certificate), no rules.
async fn tls_console_proxy() -> RunningProxy {
    let mut config = config_with(&[]);
    config.admin = Some(AdminConfig {
        user: "admin".into(),
        password: Some(PASSWORD.into()),
        password_env: None,
    });
    config.tls = Some(tandem_tests::proxy_tls());
    start_ruled_proxy(config).await
}

/// SSLRequest, then a TLS handshake (certificate not verified, as sslmode=require).
async fn tls_connect(proxy: &RunningProxy) -> TlsStream<TcpStream> {
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S", "the listener has TLS");
    let config = tandem::wire::tls::client_config(None, "test").expect("client config");
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, s)
        .await
        .expect("TLS handshake")
}

/// The mechanisms of the AuthenticationSASL among `frames`, in order.
fn mechanisms(frames: &[(u8, Vec<u8>)]) -> Vec<String> {
    let (_, body) = frames
        .iter()
        .find(|(t, b)| *t == b'R' && b[..4] == 10i32.to_be_bytes())
        .unwrap_or_else(|| panic!("expected AuthenticationSASL: {frames:?}"));
    body[4..]
        .split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

/// Starts SCRAM over `s` with `mechanism` and a postgres-protocol client binding with
/// `binding`, sends its final message, and returns what the console answered and whether
/// it closed.
async fn scram_login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    mechanism: &str,
    binding: ChannelBinding,
) -> (Vec<(u8, Vec<u8>)>, bool) {
    s.write_all(&startup("admin", "tandem", &[])).await.unwrap();
    let frames = read_until_ready(s, Duration::from_millis(500)).await;
    assert!(!mechanisms(&frames).is_empty());
    let mut scram = ScramSha256::new(PASSWORD.as_bytes(), binding);
    s.write_all(&sasl_initial_for(mechanism, scram.message()))
        .await
        .unwrap();
    let frames = read_until_ready(s, Duration::from_millis(500)).await;
    let Some((_, first)) = frames.iter().find(|(t, _)| *t == b'R') else {
        // Refused at the first message.
        return read_rest(s, frames).await;
    };
    scram.update(&first[4..]).expect("server-first");
    s.write_all(&message(b'p', scram.message())).await.unwrap();
    read_frames(s, WAIT).await
}

async fn read_rest<S: AsyncRead + Unpin>(
    s: &mut S,
    mut frames: Vec<(u8, Vec<u8>)>,
) -> (Vec<(u8, Vec<u8>)>, bool) {
    let (more, closed) = read_frames(s, WAIT).await;
    frames.extend(more);
    (frames, closed)
}

/// The certificate this connection was presented, bound as `tls-server-end-point` (what
/// a client computes).
fn end_point(s: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = s
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate");
    tandem::wire::tls::tls_server_end_point(&certs[0]).expect("the test certificate can be bound")
}

/// Over TLS the console lists SCRAM-SHA-256-PLUS first, as Postgres does, and a client
/// binding to the listener's certificate logs in; over plain TCP it lists SCRAM-SHA-256
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_scram_is_offered_bound_to_the_certificate() {
    let proxy = tls_console_proxy().await;
    let mut s = tls_connect(&proxy).await;
    s.write_all(&startup("admin", "tandem", &[])).await.unwrap();
    let frames = read_until_ready(&mut s, Duration::from_millis(500)).await;
    assert_eq!(mechanisms(&frames), ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);

    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(&startup("admin", "tandem", &[])).await.unwrap();
    let frames = read_until_ready(&mut s, Duration::from_millis(500)).await;
    assert_eq!(mechanisms(&frames), ["SCRAM-SHA-256"]);

    let mut s = tls_connect(&proxy).await;
    let binding = ChannelBinding::tls_server_end_point(end_point(&s));
    let (frames, _) = scram_login(&mut s, "SCRAM-SHA-256-PLUS", binding).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    assert!(frames.iter().any(|(t, _)| *t == b'Z'), "login: {frames:?}");
    // Plain SCRAM-SHA-256 ('n') still works over TLS.
    let mut s = tls_connect(&proxy).await;
    let (frames, _) = scram_login(&mut s, "SCRAM-SHA-256", ChannelBinding::unsupported()).await;
    assert!(frames.iter().any(|(t, _)| *t == b'Z'), "login: {frames:?}");
}

/// A client bound to another certificate (a relay in the middle) is refused as Postgres
/// refuses it, with the right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_to_another_certificate_is_refused() {
    let proxy = tls_console_proxy().await;
    let mut s = tls_connect(&proxy).await;
    let mut wrong = end_point(&s);
    wrong[0] ^= 1;
    let binding = ChannelBinding::tls_server_end_point(wrong);
    let (frames, closed) = scram_login(&mut s, "SCRAM-SHA-256-PLUS", binding).await;
    let error = first_error(&frames).expect("an ErrorResponse");
    assert_eq!(error.code.as_deref(), Some("28000"), "{error:?}");
    assert_eq!(error.message, "SCRAM channel binding check failed");
    assert!(closed);
    assert!(!frames.iter().any(|(t, _)| *t == b'Z'), "{frames:?}");
}

/// The GS2 flag against what was offered and chosen, as Postgres's auth-scram.c checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_flags_are_refused_as_postgres_refuses_them() {
    let proxy = tls_console_proxy().await;
    let refused = |frames: &[(u8, Vec<u8>)], closed: bool| {
        assert!(closed, "{frames:?}");
        let error = first_error(frames).expect("an ErrorResponse");
        (error.code.unwrap_or_default(), error.message)
    };
    // 'y' over TLS, where PLUS was offered: a downgrade.
    let mut s = tls_connect(&proxy).await;
    let (frames, closed) =
        scram_login(&mut s, "SCRAM-SHA-256", ChannelBinding::unrequested()).await;
    assert_eq!(
        refused(&frames, closed),
        (
            "28000".into(),
            "SCRAM channel binding negotiation error".into()
        )
    );
    // 'p=' with the plain mechanism.
    let mut s = tls_connect(&proxy).await;
    let binding = ChannelBinding::tls_server_end_point(end_point(&s));
    let (frames, closed) = scram_login(&mut s, "SCRAM-SHA-256", binding).await;
    assert_eq!(
        refused(&frames, closed),
        ("08P01".into(), "malformed SCRAM message".into())
    );
    // PLUS with 'n'.
    let mut s = tls_connect(&proxy).await;
    let (frames, closed) =
        scram_login(&mut s, "SCRAM-SHA-256-PLUS", ChannelBinding::unsupported()).await;
    assert_eq!(
        refused(&frames, closed),
        ("08P01".into(), "malformed SCRAM message".into())
    );
    // PLUS over plain TCP, where it was not offered.
    let bound = end_point(&tls_connect(&proxy).await);
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let binding = ChannelBinding::tls_server_end_point(bound);
    let (frames, closed) = scram_login(&mut s, "SCRAM-SHA-256-PLUS", binding).await;
    assert_eq!(
        refused(&frames, closed),
        (
            "08P01".into(),
            "client selected an invalid SASL authentication mechanism".into()
        )
    );
    // 'y' over plain TCP: the client is right, the server cannot bind there.
    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    let (frames, _) = scram_login(&mut s, "SCRAM-SHA-256", ChannelBinding::unrequested()).await;
    assert!(frames.iter().any(|(t, _)| *t == b'Z'), "login: {frames:?}");
}
