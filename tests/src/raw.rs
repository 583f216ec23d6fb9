//! Raw wire-protocol peers for bad-input tests: a byte-level client and a fake upstream.
//!
//! Well-behaved drivers cannot send lying lengths or a second StartupMessage, and a real
//! Postgres never omits SQLSTATE; these helpers can.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tandem::wire::protocol::backend::ErrorFields;
use tandem::wire::protocol::startup::StartupMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A StartupMessage for `user` and `database`, with extra parameters.
pub fn startup(user: &str, database: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut params = vec![
        ("user".to_string(), user.to_string()),
        ("database".to_string(), database.to_string()),
    ];
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut out = BytesMut::new();
    StartupMessage {
        major: 3,
        minor: 0,
        params,
    }
    .encode(&mut out);
    out.to_vec()
}

/// A tagged message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out.to_vec()
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A Parse of `sql` as statement `name` (empty: unnamed), parameter types left to the server.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend_from_slice(&[0, 0]);
    message(b'P', &body)
}

/// A Bind of statement `statement` to portal `portal`: parameters in text format (`None`
/// is NULL), results in text format.
pub fn bind(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(cstr(statement));
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.extend_from_slice(&[0, 0]);
    message(b'B', &body)
}

/// A Describe of a statement (`kind` `b'S'`) or a portal (`b'P'`).
pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend(cstr(name));
    message(b'D', &body)
}

/// A Close of a statement (`kind` `b'S'`) or a portal (`b'P'`).
pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend(cstr(name));
    message(b'C', &body)
}

/// An Execute of `portal`; `max_rows` 0 means no limit.
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend_from_slice(&max_rows.to_be_bytes());
    message(b'E', &body)
}

/// A Sync.
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// A Flush: the server sends what it has without ending the batch.
pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}

/// `s` NUL-terminated.
fn cstr(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    out.push(0);
    out
}

/// Everything the peer sends until it closes or `wait` passes, split into (tag, body).
pub async fn read_frames<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    (split_frames(&buf), closed)
}

/// Reads frames until a ReadyForQuery arrives (or `wait` passes).
pub async fn read_until_ready<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> Vec<(u8, Vec<u8>)> {
    read_until_readies(stream, wait, 1).await
}

/// Reads frames until `readies` ReadyForQuery messages have arrived (or `wait` passes): the
/// answer to that many pipelined Syncs or simple Queries.
pub async fn read_until_readies<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
    readies: usize,
) -> Vec<(u8, Vec<u8>)> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if split_frames(&buf)
                .iter()
                .filter(|(t, _)| *t == b'Z')
                .count()
                >= readies
            {
                return;
            }
        }
    })
    .await;
    split_frames(&buf)
}

/// Splits complete frames; a trailing partial frame is ignored.
pub fn split_frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while buf.len() >= 5 {
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        let Ok(len) = usize::try_from(len) else { break };
        if len < 4 || buf.len() < 1 + len {
            break;
        }
        frames.push((buf[0], buf[5..1 + len].to_vec()));
        buf = &buf[1 + len..];
    }
    frames
}

/// The first ErrorResponse among frames, decoded.
pub fn first_error(frames: &[(u8, Vec<u8>)]) -> Option<ErrorFields> {
    frames
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| ErrorFields::parse(b))
}

/// Connects a raw client to `addr` and completes a trust login.
pub async fn login(addr: std::net::SocketAddr, user: &str, database: &str, app: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&startup(user, database, &[("application_name", app)]))
        .await
        .expect("send startup");
    let frames = read_until_ready(&mut s, Duration::from_secs(10)).await;
    assert!(
        frames.iter().any(|(t, _)| *t == b'Z'),
        "login failed: {frames:?}"
    );
    s
}

/// A fake upstream: accepts connections, reads the startup packet, then runs `handler`.
pub async fn fake_upstream<F, Fut>(handler: F) -> std::net::SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let Ok(len) = s.read_i32().await else {
                continue;
            };
            let mut body = vec![0u8; (len.max(4) - 4) as usize];
            if s.read_exact(&mut body).await.is_err() {
                continue;
            }
            tokio::spawn(handler(s));
        }
    });
    addr
}

/// AuthenticationOk, a BackendKeyData, and ReadyForQuery: a fake upstream's login.
pub fn fake_login_ok() -> Vec<u8> {
    let mut out = message(b'R', &0i32.to_be_bytes());
    out.extend(message(b'K', &[0, 0, 0, 42, 1, 2, 3, 4]));
    out.extend(message(b'Z', b"I"));
    out
}
