//! Tests of `inflate.rs`: every coding fed whole and in pieces, the end checks, the budget.

use std::io::Write;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;

use super::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Decodes `body` fed in pieces of `piece` bytes.
fn decode(coding: Coding, body: &[u8], piece: usize, budget: u64) -> Result<Vec<u8>, MaskError> {
    let mut d = Inflater::new(coding).unwrap();
    let mut out = Vec::new();
    for p in body.chunks(piece.max(1)) {
        out.extend(d.push(p, budget)?);
    }
    out.extend(d.finish(budget)?);
    Ok(out)
}

fn sample() -> Vec<u8> {
    (0..2000)
        .map(|i| format!("{{\"id\":{i},\"email\":\"user{i}@example.com\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn codings_from_the_header() {
    assert_eq!(coding(None), Ok(Coding::Identity));
    assert_eq!(coding(Some(" identity ")), Ok(Coding::Identity));
    assert_eq!(coding(Some("GZIP")), Ok(Coding::Gzip));
    assert_eq!(coding(Some("x-gzip")), Ok(Coding::Gzip));
    assert_eq!(coding(Some("deflate")), Ok(Coding::Deflate));
    assert_eq!(coding(Some("br")), Err(MaskError::Compressed("br".into())));
    // A list (all Content-Encoding lines joined): identity entries change nothing.
    assert_eq!(coding(Some("identity, gzip")), Ok(Coding::Gzip));
    assert_eq!(coding(Some("identity,identity")), Ok(Coding::Identity));
    for list in ["gzip, gzip", "deflate, gzip", "gzip, br"] {
        assert_eq!(coding(Some(list)), Err(MaskError::Compressed(list.into())));
    }
    assert!(coding(Some("gzip, gzip")).is_err(), "several codings");
    assert!(Inflater::new(Coding::Identity).is_none());
}

#[test]
fn every_coding_whole_and_in_pieces() {
    let data = sample();
    for (coding, body) in [
        (Coding::Gzip, gzip(&data)),
        (Coding::Deflate, zlib(&data)),
        (Coding::Deflate, raw(&data)),
    ] {
        for piece in [1, 2, 3, 7, 100, 4096, body.len()] {
            let out = decode(coding, &body, piece, u64::MAX).unwrap();
            assert!(out == data, "{coding:?} in pieces of {piece}");
        }
    }
    // Two gzip members, as `cat a.gz b.gz` makes.
    let mut two = gzip(b"first ");
    two.extend(gzip(b"second"));
    assert_eq!(
        decode(Coding::Gzip, &two, 5, u64::MAX).unwrap(),
        b"first second"
    );
    assert_eq!(decode(Coding::Gzip, &gzip(b""), 1, u64::MAX).unwrap(), b"");
}

#[test]
fn truncated_or_trailing_bytes_are_errors() {
    let data = sample();
    for (coding, body) in [
        (Coding::Gzip, gzip(&data)),
        (Coding::Deflate, zlib(&data)),
        (Coding::Deflate, raw(&data)),
    ] {
        let cut = &body[..body.len() - 5];
        assert!(
            matches!(
                decode(coding, cut, 64, u64::MAX),
                Err(MaskError::Corrupt(_))
            ),
            "{coding:?} truncated"
        );
        let mut more = body.clone();
        more.extend_from_slice(b"junk");
        assert!(
            matches!(
                decode(coding, &more, 64, u64::MAX),
                Err(MaskError::Corrupt(_))
            ),
            "{coding:?} with bytes after the end"
        );
    }
    assert!(matches!(
        decode(Coding::Gzip, b"this is not gzip at all", 4, u64::MAX),
        Err(MaskError::Corrupt(_))
    ));
    assert!(matches!(
        decode(
            Coding::Deflate,
            b"\xff\xff\xff\xff not deflate",
            4,
            u64::MAX
        ),
        Err(MaskError::Corrupt(_))
    ));
    // A body that ends before the coding could even be recognised.
    assert!(matches!(
        decode(Coding::Deflate, b"x", 1, u64::MAX),
        Err(MaskError::Corrupt(_))
    ));
}

#[test]
fn the_budget_bounds_what_one_piece_inflates_to() {
    // 8 MiB of zeros compress to about 8 KiB.
    let zeros = vec![0u8; 8 << 20];
    for (coding, body) in [
        (Coding::Gzip, gzip(&zeros)),
        (Coding::Deflate, zlib(&zeros)),
    ] {
        assert!(body.len() < 64 * 1024, "{}", body.len());
        assert_eq!(
            decode(coding, &body, body.len(), 1 << 20),
            Err(MaskError::TooLarge(1 << 20)),
            "{coding:?}"
        );
        // Fed in small pieces, each piece's output stays within the budget.
        let out = decode(coding, &body, 256, 1 << 20).unwrap();
        assert_eq!(out.len(), zeros.len(), "{coding:?}");
    }
    // Exactly the budget is fine.
    let body = gzip(b"0123456789");
    assert_eq!(
        decode(Coding::Gzip, &body, body.len(), 10).unwrap(),
        b"0123456789"
    );
    assert_eq!(
        decode(Coding::Deflate, &zlib(b"0123456789"), 64, 10).unwrap(),
        b"0123456789"
    );
}

#[test]
fn a_flushed_piece_decodes_at_once() {
    // A server streaming compressed events flushes after each one: every event must come
    // out of `push` as soon as its piece is in, not with the next piece.
    let events = ["data: one\n\n", "data: two\n\n", "data: three\n\n"];
    for coding in [Coding::Gzip, Coding::Deflate] {
        let mut pieces = Vec::new();
        match coding {
            Coding::Gzip => {
                let mut e = GzEncoder::new(Vec::new(), Compression::default());
                for ev in events {
                    e.write_all(ev.as_bytes()).unwrap();
                    e.flush().unwrap();
                    pieces.push(std::mem::take(e.get_mut()));
                }
                pieces.push(e.finish().unwrap());
            }
            _ => {
                let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
                for ev in events {
                    e.write_all(ev.as_bytes()).unwrap();
                    e.flush().unwrap();
                    pieces.push(std::mem::take(e.get_mut()));
                }
                pieces.push(e.finish().unwrap());
            }
        }
        let mut d = Inflater::new(coding).unwrap();
        for (piece, ev) in pieces.iter().zip(events) {
            assert_eq!(
                d.push(piece, u64::MAX).unwrap(),
                ev.as_bytes(),
                "{coding:?}"
            );
        }
        assert_eq!(d.push(pieces.last().unwrap(), u64::MAX).unwrap(), b"");
        assert_eq!(d.finish(u64::MAX).unwrap(), b"");
    }
}
