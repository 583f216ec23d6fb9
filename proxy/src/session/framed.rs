//! Finding message boundaries in a byte stream, by headers alone.
//!
//! [`Scanner`] is the relay's hot path: it walks frame headers in a buffer, lets the caller
//! see the whole body of the few tags it inspects, and skips every other body, even one
//! larger than the buffer, so forwarding never waits for a whole message. [`FrameReader`]
//! reads whole frames one at a time for the (cold) authentication phase.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::protocol::frame::{parse_header, FrameError, HEADER_LEN};

/// What to do with one frame.
#[derive(Debug)]
pub enum Action {
    /// Send it on unchanged.
    Forward,
    /// Do not send it.
    Drop,
    /// Send these bytes instead (whole frames). Only for inspected frames: a frame that is
    /// not inspected may not be fully buffered, so asking to replace it is a bug, caught in
    /// debug builds and treated as Drop otherwise.
    Replace(BytesMut),
    /// Not yet: end the scan before this frame, which stays in the buffer to be visited
    /// again by a later scan (the session must first learn something from the server).
    /// Only for inspected frames; treated as Forward otherwise.
    Stop,
}

/// The bytes a scan decided to send: the input prefix itself while every frame is
/// forwarded unchanged (no copy), or an owned buffer once some frame was dropped or replaced.
#[derive(Debug, Default)]
pub struct Output {
    /// Bytes to send when `diverged`.
    owned: BytesMut,
    /// Whether `owned` replaces the input prefix.
    diverged: bool,
}

impl Output {
    /// The bytes to send for a scan that consumed `n` bytes of `buf`.
    pub fn bytes<'a>(&'a self, buf: &'a [u8], n: usize) -> &'a [u8] {
        if self.diverged {
            &self.owned
        } else {
            &buf[..n]
        }
    }

    fn reset(&mut self) {
        self.owned.clear();
        self.diverged = false;
    }

    /// Switches to the owned buffer, copying what was forwarded so far.
    fn diverge(&mut self, buf: &[u8], upto: usize) {
        if !self.diverged {
            self.owned.extend_from_slice(&buf[..upto]);
            self.diverged = true;
        }
    }

    fn forward(&mut self, bytes: &[u8]) {
        if self.diverged {
            self.owned.extend_from_slice(bytes);
        }
    }
}

/// Walks frames across reads; remembers how much of a skipped body is still to come.
#[derive(Debug)]
pub struct Scanner {
    /// Body bytes of the current, uninspected frame not yet seen.
    skip: usize,
    /// Whether those bytes are being dropped rather than forwarded.
    skip_drops: bool,
    /// Largest body accepted.
    max_body: usize,
}

impl Scanner {
    /// A scanner that refuses bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self {
            skip: 0,
            skip_drops: false,
            max_body,
        }
    }

    /// Scans `buf` from its start and returns how many bytes were consumed; `out` then
    /// says what to send for them.
    ///
    /// `visit(tag, body)` is called once per frame as its header is reached; `body` is the
    /// whole body when `inspect(tag)` is true (the scan stops before such a frame until it
    /// is fully buffered) and empty otherwise. Its [`Action`] decides the frame's fate.
    pub fn scan(
        &mut self,
        buf: &[u8],
        inspect: impl Fn(u8) -> bool,
        mut visit: impl FnMut(u8, &[u8]) -> Action,
        out: &mut Output,
    ) -> Result<usize, FrameError> {
        out.reset();
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let take = self.skip.min(buf.len() - pos);
                if self.skip_drops {
                    out.diverge(buf, pos);
                } else {
                    out.forward(&buf[pos..pos + take]);
                }
                pos += take;
                self.skip -= take;
                if self.skip > 0 {
                    return Ok(pos);
                }
            }
            let Some(header) = parse_header(&buf[pos..], self.max_body)? else {
                return Ok(pos);
            };
            if inspect(header.tag) {
                let end = pos + header.frame_len();
                if buf.len() < end {
                    return Ok(pos);
                }
                match visit(header.tag, &buf[pos + HEADER_LEN..end]) {
                    Action::Stop => return Ok(pos),
                    Action::Forward => out.forward(&buf[pos..end]),
                    Action::Drop => out.diverge(buf, pos),
                    Action::Replace(bytes) => {
                        out.diverge(buf, pos);
                        out.owned.extend_from_slice(&bytes);
                    }
                }
                pos = end;
            } else {
                let drop = match visit(header.tag, &[]) {
                    Action::Forward | Action::Stop => {
                        out.forward(&buf[pos..pos + HEADER_LEN]);
                        false
                    }
                    Action::Drop => {
                        out.diverge(buf, pos);
                        true
                    }
                    Action::Replace(_) => {
                        debug_assert!(false, "replace of an uninspected frame {}", header.tag);
                        out.diverge(buf, pos);
                        true
                    }
                };
                pos += HEADER_LEN;
                self.skip = header.body_len;
                self.skip_drops = drop;
            }
        }
    }
}

/// A whole frame: tag and the bytes on the wire, header included.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Message tag.
    pub tag: u8,
    /// The frame as received.
    pub bytes: Bytes,
}

impl Frame {
    /// The body after the header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Why a whole frame could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed, or closed in the middle of a frame.
    Io(std::io::Error),
    /// The header was invalid.
    Frame(FrameError),
    /// A tag the caller does not accept here (seen from the header, before the body).
    Unexpected(u8),
}

/// Reads whole frames, keeping any extra bytes for the next call.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes read but not yet returned.
    buf: BytesMut,
    /// Largest body accepted.
    max_body: usize,
}

impl FrameReader {
    /// A reader refusing bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(8192),
            max_body,
        }
    }

    /// The next frame, or `None` on a clean end of stream between frames.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, ReadError> {
        self.next_if(r, |_| true).await
    }

    /// Like [`next`](Self::next), but fails as soon as a header shows a tag `accept` refuses,
    /// without waiting for a body whose length may be a lie.
    pub async fn next_if<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        accept: impl Fn(u8) -> bool,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(h) = parse_header(&self.buf, self.max_body).map_err(ReadError::Frame)? {
                if !accept(h.tag) {
                    return Err(ReadError::Unexpected(h.tag));
                }
                if self.buf.len() >= h.frame_len() {
                    let bytes = self.buf.split_to(h.frame_len()).freeze();
                    return Ok(Some(Frame { tag: h.tag, bytes }));
                }
                self.buf.reserve(h.frame_len() - self.buf.len());
            }
            let n = r.read_buf(&mut self.buf).await.map_err(ReadError::Io)?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Hands over bytes read past the last returned frame.
    pub fn into_leftover(mut self) -> BytesMut {
        self.buf.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend(((body.len() + 4) as i32).to_be_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn scanner_skips_bodies_across_reads() {
        let mut s = Scanner::new(1 << 20);
        let mut out = Output::default();
        let mut wire = frame(b'D', &[7; 100]);
        wire.extend(frame(b'Z', b"I"));
        let mut tags: Vec<(u8, Vec<u8>)> = Vec::new();
        let inspect = |t: u8| t == b'Z';
        // First read: header plus part of the body.
        let n = s
            .scan(
                &wire[..20],
                inspect,
                |t, b| {
                    tags.push((t, b.to_vec()));
                    Action::Forward
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(n, 20);
        assert_eq!(out.bytes(&wire[..20], n), &wire[..20]);
        // Rest of the body, then the Z header only: the Z must wait.
        let n = s
            .scan(
                &wire[20..110],
                inspect,
                |t, b| {
                    tags.push((t, b.to_vec()));
                    Action::Forward
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(n, 85);
        let n = s
            .scan(
                &wire[105..],
                inspect,
                |t, b| {
                    tags.push((t, b.to_vec()));
                    Action::Forward
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(tags, vec![(b'D', vec![]), (b'Z', b"I".to_vec())]);
    }

    #[test]
    fn scanner_drops_and_replaces_across_reads() {
        let mut wire = frame(b'T', b"x");
        wire.extend(frame(b'D', &[7; 50]));
        wire.extend(frame(b'C', b"SELECT 1\0"));
        wire.extend(frame(b'Z', b"I"));
        let mut s = Scanner::new(1 << 20);
        let mut out = Output::default();
        let mut sent = Vec::new();
        let inspect = |t: u8| t == b'C' || t == b'Z';
        let visit = |t: u8, _: &[u8]| match t {
            b'T' | b'D' => Action::Drop,
            b'C' => Action::Replace(BytesMut::from(&frame(b'C', b"INSERT 0 1\0")[..])),
            _ => Action::Forward,
        };
        let mut pos = 0;
        for cut in [12, 40, wire.len()] {
            let n = s.scan(&wire[pos..cut], inspect, visit, &mut out).unwrap();
            sent.extend_from_slice(out.bytes(&wire[pos..cut], n));
            pos += n;
        }
        assert_eq!(pos, wire.len());
        let mut expected = frame(b'C', b"INSERT 0 1\0");
        expected.extend(frame(b'Z', b"I"));
        assert_eq!(sent, expected);
    }

    #[test]
    fn scanner_refuses_oversized_and_lying_frames() {
        let mut out = Output::default();
        let mut s = Scanner::new(10);
        let fwd = |_: u8, _: &[u8]| Action::Forward;
        assert!(s
            .scan(&frame(b'Q', &[0; 11]), |_| false, fwd, &mut out)
            .is_err());
        let mut s = Scanner::new(10);
        assert!(s.scan(b"Q\0\0\0\0", |_| false, fwd, &mut out).is_err());
    }

    #[tokio::test]
    async fn reader_returns_frames_and_leftover() {
        let mut wire = frame(b'R', &[0, 0, 0, 0]);
        wire.extend(frame(b'Z', b"I"));
        wire.extend(b"extra");
        let mut r = FrameReader::new(100);
        let mut src = wire.as_slice();
        let f = r.next(&mut src).await.unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'R', &[0u8, 0, 0, 0][..]));
        let f = r.next(&mut src).await.unwrap().unwrap();
        assert_eq!(f.tag, b'Z');
        assert_eq!(&r.into_leftover()[..], b"extra");
    }

    #[tokio::test]
    async fn reader_reports_truncation() {
        let wire = frame(b'R', &[0, 0, 0, 0]);
        let mut src = &wire[..6];
        let mut r = FrameReader::new(100);
        assert!(matches!(r.next(&mut src).await, Err(ReadError::Io(_))));
    }
}
