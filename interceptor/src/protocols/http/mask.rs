//! Masking of response bodies with the shared engine (`crate::masking`): JSON bodies by
//! field paths and detectors, text bodies by detectors. Pure: bytes in, bytes out.

use bytes::Bytes;

use super::records::{RecordMasker, Records};
use crate::masking::{FieldRule, Masker};

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
pub fn sniff(body: &[u8]) -> BodyKind {
    let start = body.iter().find(|c| !c.is_ascii_whitespace());
    if matches!(start, Some(b'{' | b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        BodyKind::Json
    } else {
        BodyKind::Text
    }
}

/// Masks `body`; returns the new body (`None`: unchanged) and the number of values masked.
pub fn mask_body(
    masker: &Masker,
    fields: &[FieldRule],
    kind: BodyKind,
    body: &[u8],
) -> Result<(Option<Bytes>, u64), MaskError> {
    match kind {
        BodyKind::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok((None, 0));
            }
            let mut v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| MaskError::BadJson(e.to_string()))?;
            let n = masker.mask_json(&mut v, fields);
            if n == 0 {
                return Ok((None, 0));
            }
            let out = serde_json::to_vec(&v).expect("a JSON value always serializes");
            Ok((Some(out.into()), n as u64))
        }
        BodyKind::JsonLines | BodyKind::Events => {
            let kind = kind.records().expect("a record stream");
            let mut r = RecordMasker::new(kind, u64::MAX);
            let (mut out, n) = r.push(masker, fields, body).into_result()?;
            let (rest, k) = r.finish(masker, fields).into_result()?;
            out.extend_from_slice(&rest);
            Ok(((n + k > 0).then(|| out.into()), n + k))
        }
        BodyKind::Text | BodyKind::Unknown => {
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
