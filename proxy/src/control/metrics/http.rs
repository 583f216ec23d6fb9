//! Just enough HTTP/1.1 for a scrape: `GET /metrics` gets the exposition, anything else a
//! 404, and every connection closes after its answer. A request must arrive within
//! [`REQUEST_TIMEOUT`] and fit in [`MAX_REQUEST`] bytes; Prometheus sends a few hundred.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::shared::{Phase, Shared};

/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// The OpenMetrics text format, which Prometheus negotiates and parses.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves scrapes until the proxy stops running.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut phase: watch::Receiver<Phase> = shared.shutdown.clone();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint listening (GET /metrics)");
    }
    loop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, shared: Arc<Shared>) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(error = %e, "metrics: cannot read a request");
            return;
        }
        Err(_) => return,
    };
    let response = match Request::parse(&head) {
        Request::Metrics { head_only } => {
            let body = super::scrape(&shared).await;
            response("200 OK", CONTENT_TYPE, &body, head_only)
        }
        Request::NotFound => response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "tandem: the metrics are at GET /metrics\n",
            false,
        ),
        Request::BadMethod => response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "tandem: only GET is served here\n",
            false,
        ),
    };
    if let Err(e) = stream.write_all(&response).await {
        debug!(error = %e, "metrics: cannot send a response");
    }
    let _ = stream.shutdown().await;
}

/// The request head up to its blank line; `None` when the peer closed or sent too much.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (or `HEAD`), with or without a query string.
    Metrics {
        /// `HEAD`: headers only.
        head_only: bool,
    },
    /// Another path.
    NotFound,
    /// Another method.
    BadMethod,
}

impl Request {
    fn parse(head: &[u8]) -> Self {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET" | "HEAD", "/metrics") => Request::Metrics {
                head_only: method == "HEAD",
            },
            ("GET" | "HEAD", _) => Request::NotFound,
            _ => Request::BadMethod,
        }
    }
}

fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(
            Request::parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            Request::parse(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head_only: true }
        );
        assert_eq!(Request::parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            Request::parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::BadMethod
        );
        assert_eq!(Request::parse(b"\xff\xfe\r\n\r\n"), Request::BadMethod);
    }
}
