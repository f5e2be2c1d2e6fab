//! Compressed response bodies through `http::inflate::Inflater` as the proxy feeds it: in
//! pieces, as frames arrive. The first byte picks the coding (gzip or deflate) and whether
//! the rest is taken as a compressed body as it is (arbitrary bytes) or is compressed
//! first; the second byte picks how the body is cut.
//!
//! Properties besides "no panic": the cut does not matter — fed in pieces or whole, a body
//! decodes to the same bytes or fails in both cases; a body compressed here decodes back
//! to exactly what was compressed; no piece ever hands on more than its budget.
#![no_main]

use std::io::Write;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use interceptor::protocols::http::inflate::{Coding, Inflater};
use libfuzzer_sys::fuzz_target;

/// The decoded body, or `None` when decoding failed; every push within `budget`.
fn decode(coding: Coding, pieces: &[&[u8]], budget: u64) -> Option<Vec<u8>> {
    let mut d = Inflater::new(coding).expect("a real coding");
    let mut out = Vec::new();
    for p in pieces {
        let got = d.push(p, budget).ok()?;
        assert!(got.len() as u64 <= budget, "a piece handed on more than its budget");
        out.extend(got);
    }
    let got = d.finish(budget).ok()?;
    assert!(got.len() as u64 <= budget);
    out.extend(got);
    Some(out)
}

fn compress(sel: u8, data: &[u8]) -> Vec<u8> {
    let level = Compression::new(u32::from(sel >> 4) % 10);
    match sel & 6 {
        0 => {
            let mut e = GzEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        2 => {
            let mut e = ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => {
            let mut e = DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, cut, rest @ ..] = data else {
        return;
    };
    let coding = if sel & 6 == 0 { Coding::Gzip } else { Coding::Deflate };
    let compressed = sel & 1 == 1;
    let body = if compressed { compress(*sel, rest) } else { rest.to_vec() };
    // Pieces of 1..=64 bytes, the sizes cycling from `cut`.
    let mut pieces = Vec::new();
    let (mut left, mut size) = (&body[..], usize::from(*cut));
    while !left.is_empty() {
        let n = (size % 64 + 1).min(left.len());
        let (p, r) = left.split_at(n);
        pieces.push(p);
        left = r;
        size = size.wrapping_mul(31).wrapping_add(7);
    }
    let whole = decode(coding, &[&body], u64::MAX);
    let in_pieces = decode(coding, &pieces, u64::MAX);
    assert_eq!(whole, in_pieces, "the cut changed the result");
    if compressed {
        assert_eq!(whole.as_deref(), Some(rest), "compressed here, yet not decoded back");
    }
    // A small budget: each piece stays within it (or the body is refused).
    let _ = decode(coding, &pieces, u64::from(*cut) * 4);
});
