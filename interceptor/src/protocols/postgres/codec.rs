//! Framing: `tag(1) len(4, includes itself) body` after startup, `len(4) body` for the
//! startup packet. A reader buffers bytes and yields whole frames, refusing any frame
//! larger than its limit before reading it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::{PgError, Result};

/// Default limit for one message (64 MiB), like the server's own 1 GB field limit but tighter.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// At most this much buffer is reserved ahead of the bytes of a frame still to come.
const RESERVE_AHEAD: usize = 256 << 10;

/// The startup packet may not be larger than this (PostgreSQL allows 10000 bytes).
pub const MAX_STARTUP: usize = 10_000;

/// One tagged protocol message. `body` excludes tag and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    pub fn new(tag: u8, body: impl Into<Bytes>) -> Frame {
        Frame {
            tag,
            body: body.into(),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(5 + self.body.len());
        out.put_u8(self.tag);
        out.put_u32(self.body.len() as u32 + 4);
        out.put_slice(&self.body);
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b
    }
}

/// Buffered frame reader over any byte stream.
pub struct FrameReader<R> {
    pub inner: R,
    buf: BytesMut,
    max: usize,
    /// Who is on the other side, for errors ("client" / "upstream").
    side: &'static str,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: usize, side: &'static str) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
            max,
            side,
        }
    }

    /// A reader that starts with bytes already read from `inner`.
    pub fn with_buffered(inner: R, max: usize, side: &'static str, buffered: BytesMut) -> Self {
        let mut r = FrameReader::new(inner, max, side);
        r.buf.extend_from_slice(&buffered);
        r
    }

    /// Splits the reader into its stream and whatever it buffered but did not yet return.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// A complete frame from the buffer, without I/O.
    pub fn try_frame(&mut self) -> Result<Option<Frame>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len < 4 {
            return Err(PgError::malformed(
                "frame",
                format!(
                    "{} sent a message {:?} with length {len} (< 4)",
                    self.side, tag as char
                ),
            ));
        }
        if len > self.max {
            return Err(PgError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < 1 + len {
            // Grow with the bytes that actually arrive, not by the declared length: a
            // header alone must not make the proxy allocate up to `max`.
            self.buf
                .reserve((1 + len - self.buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        self.buf.advance(5);
        let body = self.buf.split_to(len - 4).freeze();
        Ok(Some(Frame { tag, body }))
    }

    /// Reads more bytes; `false` at end of stream.
    pub async fn fill(&mut self) -> Result<bool> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        Ok(self.inner.read_buf(&mut self.buf).await? > 0)
    }

    /// The next frame; `None` at a clean end of stream (between frames).
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(PgError::Closed(self.side))
                };
            }
        }
    }

    /// Like `next`, but end of stream is an error.
    pub async fn expect(&mut self) -> Result<Frame> {
        self.next().await?.ok_or(PgError::Closed(self.side))
    }

    /// An untagged startup-phase packet (`len(4) body`); `None` at end of stream.
    pub async fn next_startup(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if !(8..=MAX_STARTUP).contains(&len) {
                    return Err(PgError::malformed(
                        "startup",
                        format!("length {len} is outside 8..={MAX_STARTUP}"),
                    ));
                }
                if self.buf.len() >= len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len - 4).freeze()));
                }
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(PgError::Closed(self.side))
                };
            }
        }
    }
}

/// Cursor over a message body with the protocol's primitive types.
pub struct Body<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Body<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Body { buf, what }
    }

    fn short(&self) -> PgError {
        PgError::malformed(self.what, "message ends early")
    }

    pub fn u8(&mut self) -> Result<u8> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.short())?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i16(&mut self) -> Result<i16> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(self.i32()? as u32)
    }

    /// What is left to read, without taking it.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// A NUL-terminated string (UTF-8 checked).
    pub fn cstr(&mut self) -> Result<&'a str> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| PgError::malformed(self.what, "string without terminating NUL"))?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| PgError::malformed(self.what, "string is not valid UTF-8"))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_across_reads() {
        let mut wire = BytesMut::new();
        Frame::new(b'Q', &b"SELECT 1\0"[..]).encode(&mut wire);
        Frame::new(b'S', Bytes::new()).encode(&mut wire);
        let (mut a, b) = tokio::io::duplex(3);
        let w = wire.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&w).await.unwrap();
        });
        let mut r = FrameReader::new(b, 1024, "client");
        assert_eq!(
            r.next().await.unwrap().unwrap(),
            Frame::new(b'Q', &b"SELECT 1\0"[..])
        );
        assert_eq!(
            r.next().await.unwrap().unwrap(),
            Frame::new(b'S', Bytes::new())
        );
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_malformed_frames_are_refused() {
        let mut r = FrameReader::new(&b"Q\x00\x10\x00\x00"[..], 1024, "client");
        assert!(matches!(
            r.next().await,
            Err(PgError::TooLarge {
                len: 0x100000,
                max: 1024
            })
        ));
        let mut r = FrameReader::new(&b"Q\x00\x00\x00\x02"[..], 1024, "client");
        assert!(matches!(r.next().await, Err(PgError::Malformed { .. })));
        let mut r = FrameReader::new(&b"Q\x00\x00\x00\x09ab"[..], 1024, "client");
        assert!(matches!(r.next().await, Err(PgError::Closed("client"))));
        let mut r = FrameReader::new(&b"\x00\x00\xff\xff"[..], 1024, "client");
        assert!(matches!(
            r.next_startup().await,
            Err(PgError::Malformed { .. })
        ));
    }

    #[test]
    fn a_large_declared_length_does_not_reserve_it() {
        let mut r = FrameReader::with_buffered(
            &b""[..],
            DEFAULT_MAX_FRAME,
            "client",
            BytesMut::from(&b"Q\x03\xff\xff\xff"[..]),
        );
        assert!(r.try_frame().unwrap().is_none());
        assert!(r.buf.capacity() < 1 << 20, "{}", r.buf.capacity());
    }

    #[test]
    fn body_cursor() {
        let mut b = Body::new(b"abc\0\x00\x01\x00\x00\x00\x02z", "test");
        assert_eq!(b.cstr().unwrap(), "abc");
        assert_eq!(b.i16().unwrap(), 1);
        assert_eq!(b.i32().unwrap(), 2);
        assert_eq!(b.rest(), b"z");
        assert!(b.u8().is_err());
    }
}
