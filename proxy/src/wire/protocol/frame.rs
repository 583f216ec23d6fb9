//! Frame headers: a one-byte tag and a big-endian i32 length that counts itself.
//!
//! The relay finds message boundaries from headers alone and never decodes a body it only
//! forwards. A length is a peer's claim: it is checked against the minimum (4) and the
//! configured maximum before any buffer is sized from it.

use bytes::{BufMut, BytesMut};

/// Size of a tagged frame's header: tag byte plus length word.
pub const HEADER_LEN: usize = 5;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message tag.
    pub tag: u8,
    /// Body length in bytes (the wire length minus its own four bytes).
    pub body_len: usize,
}

impl FrameHeader {
    /// Total bytes of the frame on the wire, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len
    }
}

/// Why a frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length word is below 4 (it counts itself) or negative.
    #[error("invalid message length {length} for message type '{}'", printable(*tag))]
    BadLength {
        /// The frame's tag.
        tag: u8,
        /// The length word as sent.
        length: i32,
    },
    /// The frame is larger than the configured limit.
    #[error("message of type '{}' is {size} bytes, over the limit of {limit} bytes", printable(*tag))]
    TooLarge {
        /// The frame's tag.
        tag: u8,
        /// The claimed body size.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
}

fn printable(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

/// Reads a frame header from the start of `buf`.
///
/// `Ok(None)` means fewer than five bytes are buffered: not an error, just wait for more.
pub fn parse_header(buf: &[u8], max_body: usize) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let length = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if length < 4 {
        return Err(FrameError::BadLength { tag, length });
    }
    let body_len = length as usize - 4;
    if body_len > max_body {
        return Err(FrameError::TooLarge {
            tag,
            size: body_len,
            limit: max_body,
        });
    }
    Ok(Some(FrameHeader { tag, body_len }))
}

/// Starts a tagged frame in `out` with a placeholder length; returns where the length
/// word is, for [`finish`].
pub fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let start = out.len();
    out.put_i32(0);
    start
}

/// Patches the length word of a frame started with [`begin`].
pub fn finish(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads a NUL-terminated string at the start of `buf`, returning it and the rest.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// Reads a big-endian i32 at the start of `buf`.
pub fn read_i32(buf: &[u8]) -> Option<(i32, &[u8])> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some((i32::from_be_bytes(bytes), &buf[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffer_needs_more() {
        assert_eq!(parse_header(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn valid_header() {
        let h = parse_header(b"Q\0\0\0\x09abcd", 100).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                tag: b'Q',
                body_len: 5
            }
        );
        assert_eq!(h.frame_len(), 10);
    }

    #[test]
    fn lying_lengths_are_refused() {
        assert!(matches!(
            parse_header(b"Q\0\0\0\x03", 100),
            Err(FrameError::BadLength { length: 3, .. })
        ));
        assert!(matches!(
            parse_header(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength { length: -1, .. })
        ));
        assert!(matches!(
            parse_header(b"Q\x7f\xff\xff\xff", 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn cstr_and_i32_are_bounds_checked() {
        assert_eq!(read_cstr(b"abc"), None);
        assert_eq!(read_cstr(b"ab\0c"), Some((&b"ab"[..], &b"c"[..])));
        assert_eq!(read_i32(b"\0\0"), None);
        assert_eq!(read_i32(b"\0\0\0\x07x"), Some((7, &b"x"[..])));
    }
}
