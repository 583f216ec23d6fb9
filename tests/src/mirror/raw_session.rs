//! A byte-level client for the dual-write tests: sends simple or extended-protocol
//! statements and returns every frame up to ReadyForQuery, exactly as the server sent it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::{pg, raw};

/// The test server's address.
pub fn direct_addr() -> SocketAddr {
    (pg().host.as_str(), pg().port)
        .to_socket_addrs()
        .expect("resolve the test server")
        .next()
        .expect("the test server has an address")
}

/// A byte-level client: sees every message, exactly as sent, with its full command tag.
pub struct RawSession {
    stream: TcpStream,
}

/// How long a raw session waits for ReadyForQuery.
const RAW_WAIT: Duration = Duration::from_secs(30);

impl RawSession {
    /// Logs in as the superuser to the test database (trust authentication).
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = raw::login(addr, &pg().superuser, &pg().database, "tandem-dual-write").await;
        Self { stream }
    }

    /// Sends a simple Query; returns every frame up to ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<(u8, Vec<u8>)> {
        self.send(&raw::query(sql)).await
    }

    /// Parse (unnamed), Describe statement, Bind (no parameters, text results), Describe
    /// portal, Execute (no row limit), Sync; returns every frame up to ReadyForQuery.
    pub async fn extended(&mut self, sql: &str) -> Vec<(u8, Vec<u8>)> {
        let mut out = raw::parse("", sql);
        out.extend(raw::describe(b'S', ""));
        out.extend(raw::bind("", "", &[]));
        out.extend(raw::describe(b'P', ""));
        out.extend(raw::execute("", 0));
        out.extend(raw::sync());
        self.send(&out).await
    }

    /// Sends a simple Query whose text is `sql` byte for byte (any client encoding).
    pub async fn simple_bytes(&mut self, sql: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut body = sql.to_vec();
        body.push(0);
        self.send(&raw::message(b'Q', &body)).await
    }

    /// Sends raw frames and returns every frame up to the next ReadyForQuery.
    pub async fn send(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.send_pipelined(bytes, 1).await
    }

    /// Sends raw frames at once (several Syncs or simple Queries) and returns every frame up
    /// to the `readies`-th ReadyForQuery.
    pub async fn send_pipelined(&mut self, bytes: &[u8], readies: usize) -> Vec<(u8, Vec<u8>)> {
        self.stream.write_all(bytes).await.expect("send to server");
        let frames = raw::read_until_readies(&mut self.stream, RAW_WAIT, readies).await;
        let got = frames.iter().filter(|(t, _)| *t == b'Z').count();
        assert!(
            got >= readies,
            "{got} of {readies} ReadyForQuery within {RAW_WAIT:?}: {frames:?}"
        );
        frames
    }
}
