//! Masking of response bodies with the shared engine (`crate::masking`): JSON bodies by
//! field paths and detectors, text bodies by detectors. Pure: bytes in, bytes out.

use bytes::Bytes;

use crate::masking::{FieldRule, Masker};

/// Why a body that must be masked cannot be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error("the response is compressed ({0}) although Accept-Encoding was removed; it cannot be masked, so it is withheld")]
    Compressed(String),
    #[error("the response says it is JSON but does not parse ({0}); it cannot be masked, so it is withheld")]
    BadJson(String),
    #[error("the response body is larger than max_mask_bytes ({0} bytes); it cannot be masked, so it is withheld (raise max_mask_bytes)")]
    TooLarge(u64),
}

/// What kind of body, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Text,
    /// Binary or unknown: left alone (detectors work on text).
    Other,
}

pub fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Other;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") || mime == "application/x-ndjson" {
        BodyKind::Json
    } else if mime.starts_with("text/")
        || mime == "application/xml"
        || mime == "application/javascript"
    {
        BodyKind::Text
    } else {
        BodyKind::Other
    }
}

/// Checks the Content-Encoding of a response to be masked.
pub fn check_encoding(content_encoding: Option<&str>) -> Result<(), MaskError> {
    match content_encoding.map(str::trim) {
        None | Some("") => Ok(()),
        Some(e) if e.eq_ignore_ascii_case("identity") => Ok(()),
        Some(e) => Err(MaskError::Compressed(e.to_owned())),
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
        BodyKind::Text => {
            let text = String::from_utf8_lossy(body);
            match masker.mask_text(&text) {
                Some((s, n)) => Ok((Some(s.into_bytes().into()), n as u64)),
                None => Ok((None, 0)),
            }
        }
        BodyKind::Other => Ok((None, 0)),
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
        assert_eq!(body_kind(Some("image/png")), BodyKind::Other);
        assert!(check_encoding(Some("gzip")).is_err());
        assert!(check_encoding(None).is_ok());
    }
}
