//! Masking of response bodies with the shared engine (`crate::masking`): JSON bodies by
//! field paths and detectors, text bodies by detectors. Pure: bytes in, bytes out.

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};

use super::records::{RecordMasker, Records};
use crate::masking::{FieldRule, JsonTextError, Masker};

/// Why a body that must be masked cannot be.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error("the response is compressed with {0:?} although Accept-Encoding was removed; only gzip and deflate can be decoded for masking, so it is withheld")]
    Compressed(String),
    #[error("the response says it is JSON but does not parse ({0}); it cannot be masked, so it is withheld")]
    BadJson(String),
    #[error("the response body is larger than max_mask_bytes ({0} bytes); it cannot be masked, so it is withheld (raise max_mask_bytes)")]
    TooLarge(u64),
    #[error("the response's compressed body does not decode ({0}); it cannot be masked, so it is withheld")]
    Corrupt(String),
    #[error("the response is a part of the body (206 Partial Content) although Range was removed; a part cannot be masked as a whole, so it is withheld")]
    Partial,
    #[error("the response's text is in {0}, which the detectors cannot read (only ASCII-compatible charsets such as UTF-8 or ISO-8859-x can be masked), so it is withheld")]
    Charset(String),
    #[error("the response's text is in {0} and has bytes outside ASCII; only UTF-8, ISO-8859-1 and windows-1252 text is decoded for masking, so it is withheld")]
    NotDecoded(String),
}

/// What kind of body, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    /// Newline-delimited JSON (`application/x-ndjson`, `application/jsonl`, `application/stream+json`…):
    /// one value per line.
    JsonLines,
    /// Server-sent events (`text/event-stream`).
    Events,
    Text,
    /// Missing or another type: decided by the bytes (`sniff`), because a server that labels
    /// JSON `application/octet-stream` (or not at all) must not get it past the masking.
    Unknown,
}

impl BodyKind {
    /// The kinds that are streams of records, masked record by record (`records.rs`).
    pub fn records(self) -> Option<Records> {
        match self {
            BodyKind::JsonLines => Some(Records::JsonLines),
            BodyKind::Events => Some(Records::Events),
            _ => None,
        }
    }
}

pub fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Unknown;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(
        mime.as_str(),
        "application/x-ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines"
            | "application/stream+json"
    ) {
        BodyKind::JsonLines
    } else if mime == "text/event-stream" {
        BodyKind::Events
    } else if mime.ends_with("/json") || mime.ends_with("+json") {
        BodyKind::Json
    } else if mime.starts_with("text/")
        || mime.ends_with("/xml")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/yaml"
                | "application/x-yaml"
                | "application/csv"
        )
    {
        BodyKind::Text
    } else {
        BodyKind::Unknown
    }
}

/// Whether the start of a body of unknown kind is binary (a NUL byte, or bytes that are not
/// UTF-8 — a character cut at the end of `start` does not count): such bodies are passed
/// on unmasked, the detectors work on text.
pub fn looks_binary(start: &[u8]) -> bool {
    start.contains(&0) || std::str::from_utf8(start).is_err_and(|e| e.error_len().is_some())
}

/// The kind of a whole text body of unknown type: JSON when it parses as JSON, else text.
/// A leading byte order mark is ignored.
pub fn sniff(body: &[u8]) -> BodyKind {
    if json_like(body) && crate::masking::check_json(without_bom(body)).is_ok() {
        BodyKind::Json
    } else {
        BodyKind::Text
    }
}

/// Removes from a request whose response is masked what would make the upstream send
/// something else than the whole body in a form that can be decoded: `Accept-Encoding`,
/// and `Range` / `If-Range` (a slice of a JSON document can be valid JSON on its own —
/// just one string — and would be masked as if it were the whole).
pub fn for_masking(headers: &mut HeaderMap) {
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
}

/// A masked request's answer must be a whole body: a 206 (from an upstream that ignored
/// the removal of `Range`, or sends parts anyway) is withheld.
pub fn partial(status: StatusCode) -> Result<(), MaskError> {
    if status == StatusCode::PARTIAL_CONTENT {
        Err(MaskError::Partial)
    } else {
        Ok(())
    }
}

/// The body without a leading UTF-8 byte order mark.
fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body)
}

/// The leading UTF-8 byte order mark of `body` (or nothing), and the rest.
fn split_bom(body: &[u8]) -> (&[u8], &[u8]) {
    let rest = without_bom(body);
    (&body[..body.len() - rest.len()], rest)
}

/// Masks a JSON body in place (`Masker::mask_json_text`): `None` when nothing was masked
/// (it goes on as it came). Only masked values change; a leading byte order mark is kept.
fn mask_json(
    masker: &Masker,
    fields: &[FieldRule],
    body: &[u8],
) -> Result<(Option<Bytes>, u64), JsonTextError> {
    let (bom, json) = split_bom(body);
    Ok(match masker.mask_json_text(json, fields)? {
        None => (None, 0),
        Some((out, n)) if bom.is_empty() => (Some(out.into()), n as u64),
        Some((out, n)) => (Some([bom, &out].concat().into()), n as u64),
    })
}

/// Whether a body (after a byte order mark and whitespace) starts as an object or an array:
/// the only JSON a text body can be (`sniff`).
fn json_like(body: &[u8]) -> bool {
    let start = without_bom(body).iter().find(|c| !c.is_ascii_whitespace());
    matches!(start, Some(b'{' | b'['))
}

/// Masks `body`; returns the new body (`None`: unchanged) and the number of values masked.
/// A body of a text type (`text/*`, JavaScript, form data…) that is JSON — as `sniff`
/// decides — is masked as JSON: field paths, and detectors on the decoded strings (so
/// escapes such as `\u0040` do not hide a value from them). JSON is masked in its text:
/// numbers, key order, whitespace and every occurrence of a duplicate key (each masked on
/// its own) stay as they came.
pub fn mask_body(
    masker: &Masker,
    fields: &[FieldRule],
    kind: BodyKind,
    body: &[u8],
) -> Result<(Option<Bytes>, u64), MaskError> {
    match kind {
        BodyKind::Json => {
            let json = without_bom(body);
            if json.iter().all(u8::is_ascii_whitespace) {
                return Ok((None, 0));
            }
            mask_json(masker, fields, body).map_err(|e| MaskError::BadJson(e.to_string()))
        }
        BodyKind::JsonLines | BodyKind::Events => {
            let kind = kind.records().expect("a record stream");
            let mut r = RecordMasker::new(kind, u64::MAX);
            let done = r.push(masker, fields, body);
            let done = match done.error {
                Some(e) => return Err(e),
                None => done.then(r.finish(masker, fields)),
            };
            let rewritten = done.fields > 0;
            let (out, n) = done.into_result()?;
            Ok((rewritten.then(|| out.into()), n))
        }
        BodyKind::Text | BodyKind::Unknown => {
            if json_like(body) {
                if let Ok(masked) = mask_json(masker, fields, body) {
                    return Ok(masked);
                }
            }
            let text = String::from_utf8_lossy(body);
            match masker.mask_text(&text) {
                Some((s, n)) => Ok((Some(s.into_bytes().into()), n as u64)),
                None => Ok((None, 0)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::{MaskingDoc, Strategy};

    fn masker(yaml: &str) -> Masker {
        let doc: MaskingDoc = serde_yaml::from_str(yaml).unwrap();
        Masker::new(&doc, vec![7; 32]).unwrap()
    }

    #[test]
    fn json_fields_and_detectors() {
        let m = masker("detectors:\n  - kind: email\n    strategy: partial\n");
        let fields = [FieldRule::new("$.user.ssn", Strategy::Redact).unwrap()];
        let body = br#"{"user":{"ssn":"123-45-6789","email":"alice@example.com","n":1}}"#;
        let (out, n) = mask_body(&m, &fields, BodyKind::Json, body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(v["user"]["ssn"], "[REDACTED]");
        assert_eq!(v["user"]["email"], "a***@example.com");
        assert_eq!(v["user"]["n"], 1);
        let (out, n) = mask_body(&m, &fields, BodyKind::Json, br#"{"ok":true}"#).unwrap();
        assert_eq!((out, n), (None, 0));
        assert!(matches!(
            mask_body(&m, &fields, BodyKind::Json, b"{nope"),
            Err(MaskError::BadJson(_))
        ));
    }

    #[test]
    fn text_and_kinds() {
        let m = masker("detectors:\n  - kind: email\n    strategy: redact\n");
        let (out, n) = mask_body(&m, &[], BodyKind::Text, b"mail bob@example.org now").unwrap();
        assert_eq!(n, 1);
        assert_eq!(&out.unwrap()[..], b"mail [REDACTED:email] now");
        assert_eq!(
            body_kind(Some("application/json; charset=utf-8")),
            BodyKind::Json
        );
        assert_eq!(body_kind(Some("application/problem+json")), BodyKind::Json);
        assert_eq!(body_kind(Some("text/plain")), BodyKind::Text);
        assert_eq!(body_kind(Some("image/png")), BodyKind::Unknown);
        assert_eq!(body_kind(None), BodyKind::Unknown);
        assert_eq!(body_kind(Some("text/json")), BodyKind::Json);
        assert_eq!(body_kind(Some("image/svg+xml")), BodyKind::Text);
        assert_eq!(body_kind(Some("application/x-ndjson")), BodyKind::JsonLines);
        assert_eq!(
            body_kind(Some("application/stream+json")),
            BodyKind::JsonLines,
            "a stream, not one value"
        );
        assert_eq!(
            body_kind(Some("text/event-stream; charset=utf-8")),
            BodyKind::Events
        );
    }

    #[test]
    fn unknown_bodies_are_sniffed() {
        assert!(looks_binary(b"\x89PNG\r\n\x1a\n\0\0"));
        assert!(looks_binary(b"ab\xffcd"));
        assert!(
            !looks_binary(b"{\"a\": \"\xe2\x82"),
            "a character cut at the end"
        );
        assert!(!looks_binary("caf\u{e9}".as_bytes()));
        assert_eq!(sniff(b" {\"a\":1}\n"), BodyKind::Json);
        assert_eq!(sniff(b"[1,2"), BodyKind::Text);
        assert_eq!(sniff(b"name,email\n"), BodyKind::Text);
        let m = masker("detectors:\n  - kind: email\n    strategy: redact\n");
        let fields = [FieldRule::new("$.ssn", Strategy::Redact).unwrap()];
        let (out, n) = mask_body(&m, &fields, sniff(br#"{"ssn":"x"}"#), br#"{"ssn":"x"}"#).unwrap();
        assert_eq!((&out.unwrap()[..], n), (&br#"{"ssn":"[REDACTED]"}"#[..], 1));
    }

    #[test]
    fn masked_requests_ask_for_whole_bodies_and_parts_are_withheld() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("accept-encoding", "gzip"),
            ("range", "bytes=88-106"),
            ("if-range", "\"v1\""),
            ("accept", "*/*"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        for_masking(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"]);
        assert!(partial(StatusCode::OK).is_ok());
        assert!(matches!(
            partial(StatusCode::PARTIAL_CONTENT),
            Err(MaskError::Partial)
        ));
    }

    #[test]
    fn json_with_a_text_type_gets_its_field_paths() {
        let m = masker("detectors:\n  - kind: email\n    strategy: redact\n");
        let fields = [FieldRule::new("$.ssn", Strategy::Redact).unwrap()];
        let body = br#" {"ssn":"123-45-6789","m":"a\u0040b.example"}"#;
        let want = r#" {"ssn":"[REDACTED]","m":"[REDACTED:email]"}"#;
        for ct in [
            "text/plain",
            "text/html",
            "application/javascript",
            "application/x-www-form-urlencoded",
        ] {
            let (out, n) = mask_body(&m, &fields, body_kind(Some(ct)), body).unwrap();
            assert_eq!(
                (std::str::from_utf8(&out.unwrap()).unwrap(), n),
                (want, 2),
                "{ct}"
            );
        }
        // A leading byte order mark: still JSON, typed or not, and kept.
        let bom = b"\xef\xbb\xbf{\"ssn\":\"1\"}";
        assert_eq!(sniff(bom), BodyKind::Json);
        for kind in [BodyKind::Json, BodyKind::Text, sniff(bom)] {
            let (out, n) = mask_body(&m, &fields, kind, bom).unwrap();
            assert_eq!(
                (&out.unwrap()[..], n),
                (&b"\xef\xbb\xbf{\"ssn\":\"[REDACTED]\"}"[..], 1)
            );
        }
        // Text that is not JSON: the detectors.
        let (out, n) = mask_body(&m, &fields, BodyKind::Text, b"{ssn: a@b.example").unwrap();
        assert_eq!((&out.unwrap()[..], n), (&b"{ssn: [REDACTED:email]"[..], 1));
    }

    #[test]
    fn duplicate_keys_are_masked_each_and_the_rest_kept() {
        let m = masker("detectors:\n  - kind: email\n    strategy: redact\n");
        let fields = [FieldRule::new("$.ssn", Strategy::Redact).unwrap()];
        // The last duplicate needs no masking; the first is masked all the same.
        let body = br#"{"id":1,"note":"call bob@example.org","x":{"k":"c@d.example","k":2},"note":"clean"}"#;
        for kind in [BodyKind::Json, BodyKind::Text, BodyKind::Unknown] {
            let (out, n) = mask_body(&m, &fields, kind, body).unwrap();
            assert_eq!(
                (std::str::from_utf8(&out.unwrap()).unwrap(), n),
                (
                    r#"{"id":1,"note":"call [REDACTED:email]","x":{"k":"[REDACTED:email]","k":2},"note":"clean"}"#,
                    2
                ),
                "{kind:?}"
            );
        }
        let lines = b"{\"a\":1}\n{\"n\":\"bob@example.org\",\"n\":\"x\"}\n";
        let (out, _) = mask_body(&m, &fields, BodyKind::JsonLines, lines).unwrap();
        assert_eq!(
            std::str::from_utf8(&out.unwrap()).unwrap(),
            "{\"a\":1}\n{\"n\":\"[REDACTED:email]\",\"n\":\"x\"}\n"
        );
        // Nothing to mask, duplicates or not: the bytes as they came.
        let plain = br#"{"a":1.50,"b":{"a":[1e5,-0,18446744073709551616]},"a":2}"#;
        assert_eq!(
            mask_body(&m, &fields, BodyKind::Json, plain).unwrap(),
            (None, 0)
        );
        // Something masked: only that changes.
        let big = b"{\"z\": 12345678901234567890123,\n \"ssn\": \"1\", \"a\": [1.0, -0]}";
        let (out, n) = mask_body(&m, &fields, BodyKind::Json, big).unwrap();
        assert_eq!(
            (std::str::from_utf8(&out.unwrap()).unwrap(), n),
            (
                "{\"z\": 12345678901234567890123,\n \"ssn\": \"[REDACTED]\", \"a\": [1.0, -0]}",
                1
            )
        );
    }

    #[test]
    fn json_lines_are_masked_line_by_line() {
        let m = masker("detectors:\n  - kind: email\n    strategy: redact\n");
        let fields = [FieldRule::new("$.ssn", Strategy::Redact).unwrap()];
        let body = b"{\"ssn\":\"1\"}\n{\"ok\":true}\n\n{\"m\":\"a@b.example\"}\n";
        let (out, n) = mask_body(&m, &fields, BodyKind::JsonLines, body).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            std::str::from_utf8(&out.unwrap()).unwrap(),
            "{\"ssn\":\"[REDACTED]\"}\n{\"ok\":true}\n\n{\"m\":\"[REDACTED:email]\"}\n"
        );
        let plain = b"{\"ok\":1}\n";
        assert_eq!(
            mask_body(&m, &fields, BodyKind::JsonLines, plain).unwrap(),
            (None, 0)
        );
        assert_eq!(
            mask_body(&m, &fields, BodyKind::JsonLines, b"{\"ok\":1}\nnope\n"),
            Err(MaskError::BadJson(
                "line 2: expected ident at line 1 column 2".into()
            ))
        );
    }
}
