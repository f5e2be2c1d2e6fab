//! Decoding of compressed responses that must be masked. The proxy removes `Accept-Encoding`
//! from such requests, but some servers compress anyway (pre-compressed files, a gateway
//! that ignores the header): a `gzip` (or `x-gzip`) or `deflate` body is decoded here, masked
//! and sent on uncompressed. Pure: bytes in, bytes out, fed in pieces as they arrive.
//!
//! Every call is given an output budget, so a small compressed body cannot inflate into
//! more memory than the caller allows (a "zip bomb" is withheld as too large). The end of
//! the stream is checked: a truncated body, or bytes after its end, is an error — the gzip
//! checksum and length are verified, the deflate stream must reach its end block.

use std::io::{self, Write};

use flate2::write::MultiGzDecoder;
use flate2::{Decompress, FlushDecompress, Status};

use super::mask::MaskError;

/// A response's `Content-Encoding`, as far as masking is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// The coding of a response to be masked; other codings (`br`, `zstd`, `compress`, or a
/// list of several) cannot be decoded here.
pub fn coding(content_encoding: Option<&str>) -> Result<Coding, MaskError> {
    // A list: codings applied in order; `identity` entries change nothing.
    let codings: Vec<String> = content_encoding
        .unwrap_or("")
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
        .collect();
    match codings.as_slice() {
        [] => Ok(Coding::Identity),
        [one] if one == "gzip" || one == "x-gzip" => Ok(Coding::Gzip),
        [one] if one == "deflate" => Ok(Coding::Deflate),
        _ => Err(MaskError::Compressed(
            content_encoding.unwrap_or_default().trim().to_owned(),
        )),
    }
}

/// A streaming decoder for one body.
pub struct Inflater {
    inner: Inner,
    coding: Coding,
}

enum Inner {
    Gzip(Box<MultiGzDecoder<Sink>>),
    /// `deflate`: zlib-wrapped as the standard says, or raw as some servers send it; which
    /// one is decided by the first two bytes (held here until they are there).
    Deflate {
        head: Vec<u8>,
        stream: Option<Box<Decompress>>,
        ended: bool,
    },
}

/// Collects decoded bytes and refuses to grow past its budget.
struct Sink {
    out: Vec<u8>,
    budget: usize,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.budget {
            self.over = true;
            return Err(io::Error::other("over budget"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Inflater {
    /// `None` for [`Coding::Identity`]: nothing to decode.
    pub fn new(coding: Coding) -> Option<Inflater> {
        let inner = match coding {
            Coding::Identity => return None,
            Coding::Gzip => Inner::Gzip(Box::new(MultiGzDecoder::new(Sink {
                out: Vec::new(),
                budget: 0,
                over: false,
            }))),
            Coding::Deflate => Inner::Deflate {
                head: Vec::new(),
                stream: None,
                ended: false,
            },
        };
        Some(Inflater { inner, coding })
    }

    /// Decodes the next piece of the body; the bytes decoded from it, at most `budget`.
    pub fn push(&mut self, input: &[u8], budget: u64) -> Result<Vec<u8>, MaskError> {
        let budget = usize::try_from(budget).unwrap_or(usize::MAX);
        match &mut self.inner {
            Inner::Gzip(d) => {
                d.get_mut().budget = budget;
                // `flush` hands on what the decoder still holds: a streamed event must not
                // wait for the next piece.
                let r = d.write_all(input).and_then(|()| d.flush());
                let sink = d.get_mut();
                let out = std::mem::take(&mut sink.out);
                match r {
                    Ok(()) => Ok(out),
                    Err(_) if sink.over => Err(MaskError::TooLarge(budget as u64)),
                    Err(e) => Err(corrupt(self.coding, &e.to_string())),
                }
            }
            Inner::Deflate {
                head,
                stream,
                ended,
            } => {
                let mut input = input;
                if stream.is_none() {
                    head.extend_from_slice(input);
                    if head.len() < 2 {
                        return Ok(Vec::new());
                    }
                    let zlib = is_zlib_header(head[0], head[1]);
                    *stream = Some(Box::new(Decompress::new(zlib)));
                    input = head.as_slice();
                }
                let d = stream.as_mut().expect("set above");
                let r = inflate(d, input, budget, ended);
                head.clear();
                r.map_err(|e| match e {
                    Failure::Budget => MaskError::TooLarge(budget as u64),
                    Failure::Corrupt(why) => corrupt(self.coding, &why),
                })
            }
        }
    }

    /// Checks that the body ended where its encoding ends; the last decoded bytes, if any.
    pub fn finish(&mut self, budget: u64) -> Result<Vec<u8>, MaskError> {
        let budget = usize::try_from(budget).unwrap_or(usize::MAX);
        match &mut self.inner {
            Inner::Gzip(d) => {
                d.get_mut().budget = budget;
                let r = d.try_finish();
                let sink = d.get_mut();
                let out = std::mem::take(&mut sink.out);
                match r {
                    Ok(()) => Ok(out),
                    Err(_) if sink.over => Err(MaskError::TooLarge(budget as u64)),
                    Err(_) => Err(corrupt(self.coding, "the body ends before its gzip data")),
                }
            }
            Inner::Deflate { ended: true, .. } => Ok(Vec::new()),
            Inner::Deflate { .. } => Err(corrupt(
                self.coding,
                "the body ends before its deflate data",
            )),
        }
    }
}

enum Failure {
    Budget,
    Corrupt(String),
}

/// Runs `d` over all of `input`; sets `ended` at the end of the stream (where nothing may
/// follow).
fn inflate(
    d: &mut Decompress,
    mut input: &[u8],
    budget: usize,
    ended: &mut bool,
) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    while !input.is_empty() {
        if *ended {
            return Err(Failure::Corrupt("bytes after the end of the data".into()));
        }
        if out.len() >= budget {
            return Err(Failure::Budget);
        }
        // `decompress_vec` fills only the spare capacity: give it room, within the budget.
        out.reserve((budget - out.len()).min(32 * 1024));
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(|e| Failure::Corrupt(e.to_string()))?;
        let used = usize::try_from(d.total_in() - in0).unwrap_or(input.len());
        input = &input[used.min(input.len())..];
        match status {
            Status::StreamEnd => *ended = true,
            Status::Ok | Status::BufError if used == 0 && d.total_out() == out0 => {
                // Input left and room to write, yet no progress: never loop on it.
                return Err(if out.len() >= budget {
                    Failure::Budget
                } else {
                    Failure::Corrupt("the decoder made no progress".into())
                });
            }
            Status::Ok | Status::BufError => {}
        }
        if out.len() > budget {
            return Err(Failure::Budget);
        }
    }
    Ok(out)
}

/// RFC 1950: compression method 8 and a header checksum that divides by 31.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

fn corrupt(coding: Coding, why: &str) -> MaskError {
    let name = match coding {
        Coding::Gzip => "gzip",
        Coding::Deflate => "deflate",
        Coding::Identity => "identity",
    };
    MaskError::Corrupt(format!("{name}: {why}"))
}

#[cfg(test)]
#[path = "inflate_tests.rs"]
mod tests;
