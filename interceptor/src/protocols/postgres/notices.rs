//! The free text a server sends outside result rows, scanned by the session's detectors
//! before the agent sees it: error and notice fields (`invalid input syntax for type
//! integer: "123-45-6789"` quotes a row value; `Key (email)=(…) already exists` too),
//! notification payloads (`pg_notify('ch', ssn)`), and reported parameter values
//! (`set_config('application_name', email, false)`). Column rules cannot apply here — no
//! column is named — so the detectors are what protects these. Pure.

use bytes::{BufMut, BytesMut};

use super::backend;
use super::codec::{put_cstr, Frame};
use super::error::Result;
use crate::masking::Masker;

/// Error and notice fields that carry no free text: severity, SQLSTATE, positions, the
/// server's source location.
const STRUCTURAL: &[u8] = b"SVCPpFLR";

/// Parameters the protocol itself depends on: passed as they are.
const PROTOCOL_PARAMETERS: &[&str] = &[
    "client_encoding",
    "server_encoding",
    "standard_conforming_strings",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "integer_datetimes",
    "server_version",
    "is_superuser",
    "in_hot_standby",
    "default_transaction_read_only",
    "scram_iterations",
];

/// An ErrorResponse or NoticeResponse with its text fields masked; `None`: unchanged.
pub fn error_or_notice(masker: &Masker, f: &Frame) -> Result<Option<(Frame, u64)>> {
    let fields = backend::fields(&f.body)?;
    let mut n = 0;
    let mut changed = Vec::with_capacity(fields.len());
    for (code, value) in fields {
        match STRUCTURAL.contains(&code) {
            true => changed.push((code, value)),
            false => match masker.mask_text(&value) {
                Some((v, k)) => {
                    n += k as u64;
                    changed.push((code, v));
                }
                None => changed.push((code, value)),
            },
        }
    }
    if n == 0 {
        return Ok(None);
    }
    let mut b = BytesMut::new();
    for (code, value) in &changed {
        b.put_u8(*code);
        put_cstr(&mut b, value);
    }
    b.put_u8(0);
    Ok(Some((Frame::new(f.tag, b.freeze()), n)))
}

/// A NotificationResponse (`A`: pid, channel, payload) with its payload masked.
pub fn notification(masker: &Masker, f: &Frame) -> Result<Option<(Frame, u64)>> {
    let body = &f.body[..];
    let malformed = || super::error::PgError::malformed("upstream", "bad NotificationResponse");
    if body.len() < 4 {
        return Err(malformed());
    }
    let (pid, rest) = body.split_at(4);
    let channel_end = rest.iter().position(|&b| b == 0).ok_or_else(malformed)?;
    let (channel, rest) = (&rest[..channel_end], &rest[channel_end + 1..]);
    let payload_end = rest.iter().position(|&b| b == 0).ok_or_else(malformed)?;
    let payload = String::from_utf8_lossy(&rest[..payload_end]);
    let Some((masked, n)) = masker.mask_text(&payload) else {
        return Ok(None);
    };
    let mut b = BytesMut::new();
    b.put_slice(pid);
    b.put_slice(channel);
    b.put_u8(0);
    put_cstr(&mut b, &masked);
    Ok(Some((Frame::new(f.tag, b.freeze()), n as u64)))
}

/// A ParameterStatus with its value masked, unless the protocol depends on it.
pub fn parameter(masker: &Masker, name: &str, value: &str) -> Option<(Frame, u64)> {
    if PROTOCOL_PARAMETERS.contains(&name) {
        return None;
    }
    let (masked, n) = masker.mask_text(value)?;
    Some((backend::parameter_status(name, &masked), n as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::MaskingDoc;

    fn masker() -> Masker {
        let doc: MaskingDoc =
            serde_yaml::from_str("detectors:\n  - kind: all\n    strategy: redact\n").unwrap();
        Masker::new(&doc, vec![7; 32]).unwrap()
    }

    #[test]
    fn error_fields_with_values_are_masked() {
        let m = masker();
        let e = backend::error(
            "ERROR",
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
            Some("Key (email)=(alice@example.com) already exists."),
            None,
        );
        let (f, n) = error_or_notice(&m, &e).unwrap().expect("masked");
        assert_eq!(n, 2);
        let fields = backend::fields(&f.body).unwrap();
        let text = format!("{fields:?}");
        assert!(!text.contains("123-45-6789"), "{text}");
        assert!(!text.contains("alice@example.com"), "{text}");
        assert_eq!(backend::field(&fields, b'C'), Some("22P02"));
        assert_eq!(backend::field(&fields, b'S'), Some("ERROR"));
        let plain = backend::error(
            "ERROR",
            "42P01",
            "relation \"x\" does not exist",
            None,
            None,
        );
        assert!(error_or_notice(&m, &plain).unwrap().is_none());
    }

    #[test]
    fn notification_payloads_and_parameters_are_masked() {
        let m = masker();
        let mut b = BytesMut::new();
        b.put_i32(4242);
        put_cstr(&mut b, "ch");
        put_cstr(&mut b, "123-45-6789 alice@example.com");
        let f = Frame::new(b'A', b.freeze());
        let (g, n) = notification(&m, &f).unwrap().expect("masked");
        assert_eq!(n, 2);
        assert_eq!(&g.body[..4], &4242i32.to_be_bytes());
        assert!(g.body.starts_with(&[0, 0, 0x10, 0x92, b'c', b'h', 0]));
        let payload = String::from_utf8_lossy(&g.body[7..]);
        assert!(!payload.contains("alice"), "{payload}");
        assert!(notification(&m, &Frame::new(b'A', &b"\0\0"[..])).is_err());

        let (p, n) = parameter(&m, "application_name", "alice@example.com").expect("masked");
        assert_eq!(n, 1);
        let (k, v) = backend::parse_parameter_status(&p.body).unwrap();
        assert_eq!(k, "application_name");
        assert!(!v.contains("alice"), "{v}");
        assert!(parameter(&m, "application_name", "psql").is_none());
        assert!(parameter(&m, "server_version", "15.18 (1.2.3.4)").is_none());
    }
}
