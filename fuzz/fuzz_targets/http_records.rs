//! Streamed response bodies — server-sent events and JSON lines — through
//! `http::records::RecordMasker` as the proxy feeds it: the body in pieces, as frames
//! arrive. The first byte picks the kind, the second how the body is cut; the rest is the
//! body.
//!
//! Properties besides "no panic": the cut does not matter — fed in pieces or whole, the
//! same bytes come out, with the same count of masked values and the same error; when
//! nothing was masked and nothing failed, the output is the input, byte for byte.
#![no_main]

use std::sync::OnceLock;

use interceptor::masking::{FieldRule, Masker, Strategy};
use interceptor::protocols::http::mask::MaskError;
use interceptor::protocols::http::records::{RecordMasker, Records};
use libfuzzer_sys::fuzz_target;

mod support;

fn masker() -> &'static (Masker, Vec<FieldRule>) {
    static M: OnceLock<(Masker, Vec<FieldRule>)> = OnceLock::new();
    M.get_or_init(|| {
        support::masker_with(&[
            ("$.ssn", Strategy::Redact),
            ("$.choices[*].delta.content", Strategy::Hash),
        ])
    })
}

/// Everything handed on, the values masked and the error that ended the stream.
fn run(kind: Records, pieces: &[&[u8]]) -> (Vec<u8>, u64, Option<MaskError>) {
    let (m, f) = masker();
    let mut r = RecordMasker::new(kind, u64::MAX);
    let (mut out, mut n) = (Vec::new(), 0);
    for p in pieces {
        let got = r.push(m, f, p);
        out.extend_from_slice(&got.out);
        n += got.fields;
        if got.error.is_some() {
            return (out, n, got.error);
        }
    }
    let got = r.finish(m, f);
    out.extend_from_slice(&got.out);
    (out, n + got.fields, got.error)
}

fuzz_target!(|data: &[u8]| {
    let [sel, cut, body @ ..] = data else {
        return;
    };
    let kind = if sel & 1 == 0 {
        Records::Events
    } else {
        Records::JsonLines
    };
    // Pieces of 1..=16 bytes, the sizes cycling from `cut`.
    let mut pieces = Vec::new();
    let (mut rest, mut size) = (body, usize::from(*cut));
    while !rest.is_empty() {
        let n = (size % 16 + 1).min(rest.len());
        let (p, r) = rest.split_at(n);
        pieces.push(p);
        rest = r;
        size = size.wrapping_mul(31).wrapping_add(7);
    }
    let whole = run(kind, &[body]);
    let cut = run(kind, &pieces);
    assert_eq!(whole, cut, "the cut changed the result");
    if whole.1 == 0 && whole.2.is_none() {
        assert_eq!(whole.0, body, "nothing masked, yet the bytes changed");
    }
});
