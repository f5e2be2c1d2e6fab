//! HTTP response bodies through the shared masking engine, as the proxy masks them:
//! `http::mask::mask_body` with field paths and every detector. The first byte picks JSON
//! or text; the rest is the body.
//!
//! Properties besides "no panic": a changed body reports at least one masked value, and an
//! unchanged one none; masked JSON — a JSON body, or a text body that is JSON, which is
//! masked as JSON in place — is still JSON (behind the same byte order mark, if any), parses
//! where the input parsed and keeps its shape (as many keys in every object — a key the
//! detectors mask is renamed —, the same length of every array); masked text is UTF-8 and
//! never longer than the input by more than the replacement markers allow.
//!
//! Not checked: that masking the output again finds nothing. A redaction changes the text
//! around it, so a run it was glued to can become a match on its own: in
//! `eyJ…c2lnbdb8::1` the JWT ends at `bdb8` and `::1` (glued to a word, not an address) reads
//! as an IPv6 address once the JWT is `[REDACTED:jwt]` (the first finding of this target).
#![no_main]

use std::sync::OnceLock;

use interceptor::masking::{check_json, FieldRule, Masker, Strategy};
use interceptor::protocols::http::mask::{mask_body, sniff, BodyKind};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

mod support;

fn masker() -> &'static (Masker, Vec<FieldRule>) {
    static M: OnceLock<(Masker, Vec<FieldRule>)> = OnceLock::new();
    M.get_or_init(|| {
        support::masker_with(&[
            ("$.user.ssn", Strategy::Redact),
            ("$.users[*].email", Strategy::Hash),
            ("$.data[*].phone", Strategy::PARTIAL),
        ])
    })
}

/// As many keys in every object (a key the detectors masked is renamed, never merged; the
/// members kept under their name have the same shape) and the same length of every array;
/// leaves may differ.
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_none_or(|w| same_shape(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_shape(v, w))
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (masker, fields) = masker();
    let kind = if sel & 1 == 0 {
        BodyKind::Json
    } else {
        BodyKind::Text
    };
    let Ok((out, n)) = mask_body(masker, fields, kind, body) else {
        assert_eq!(kind, BodyKind::Json, "only JSON bodies can be refused");
        return;
    };
    // A byte order mark is ignored (and kept); a text body that is JSON is masked as JSON.
    const BOM: &[u8] = b"\xef\xbb\xbf";
    let unmarked = body.strip_prefix(BOM).unwrap_or(body);
    let json = kind == BodyKind::Json || sniff(body) == BodyKind::Json;
    assert_eq!(out.is_some(), n > 0, "changed body and count disagree");
    let Some(out) = out else { return };
    match json {
        true => {
            let marked = body.len() != unmarked.len();
            assert_eq!(out.starts_with(BOM), marked, "the byte order mark");
            let out = if marked { &out[BOM.len()..] } else { &out[..] };
            check_json(out).expect("masked JSON is JSON");
            // Numbers too large for an f64 are masked but do not parse into a `Value`.
            if let Ok(before) = serde_json::from_slice::<Value>(unmarked) {
                let after: Value = serde_json::from_slice(out).expect("masked JSON parses");
                assert!(same_shape(&before, &after), "masking changed the shape");
            }
        }
        false => {
            std::str::from_utf8(&out).expect("masked text is UTF-8");
            // Each masked value becomes at most `[REDACTED:private_key]` (23 bytes).
            let bound = String::from_utf8_lossy(body).len() + 23 * n as usize;
            assert!(
                out.len() <= bound,
                "{} bytes out for {} in, {n} masked",
                out.len(),
                body.len()
            );
        }
    }
});
