//! The replacements written for each strategy: redaction markers, partial masks (`****` + tail, emails `a***@domain`) and keyed HMAC-SHA256 pseudonyms.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::detect::email;
use super::model::{DetectorKind, Strategy};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The prefix of partial masks.
pub(crate) const STARS: &[u8] = b"****";

/// What a column or field rule writes for `strategy: redact`.
pub(crate) const REDACTED: &[u8] = b"[REDACTED]";

/// An HMAC-SHA256 state with the key already absorbed (cloned per value).
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Appends `prefix` `_` and the first 16 hex digits of HMAC(key, parts...).
pub(crate) fn push_hash(out: &mut Vec<u8>, mac: &HmacSha256, prefix: &str, data: &[u8]) {
    let mut m = mac.clone();
    m.update(data);
    let tag = m.finalize().into_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'_');
    for &b in &tag[..8] {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// `****` and the last `keep` characters of `s`; just `****` when `s` is
/// not longer than `keep`.
pub(crate) fn push_partial_str(out: &mut Vec<u8>, s: &str, keep: usize) {
    out.extend_from_slice(STARS);
    if keep == 0 {
        return;
    }
    if let Some((at, _)) = s.char_indices().rev().nth(keep - 1) {
        if at > 0 {
            out.extend_from_slice(&s.as_bytes()[at..]);
        }
    }
}

/// `****` and the last `keep` bytes of `s` that pass `keep_byte` (ASCII
/// digits or letters), separators dropped; just `****` when there are not
/// more than `keep` of them.
pub(crate) fn push_partial_filtered(
    out: &mut Vec<u8>,
    s: &[u8],
    keep: usize,
    keep_byte: fn(&u8) -> bool,
) {
    out.extend_from_slice(STARS);
    let total = s.iter().filter(|b| keep_byte(b)).count();
    if keep == 0 || total <= keep {
        return;
    }
    out.extend(s.iter().filter(|b| keep_byte(b)).skip(total - keep));
}

/// `a***@example.com`: the first character of the local part, `***`, and
/// the domain. `s` is a whole address.
pub(crate) fn push_partial_email(out: &mut Vec<u8>, s: &[u8]) {
    let Some(at) = s.iter().rposition(|&b| b == b'@') else {
        out.extend_from_slice(STARS);
        return;
    };
    let first = match s[0] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
    .min(at);
    out.extend_from_slice(&s[..first]);
    out.extend_from_slice(b"***");
    out.extend_from_slice(&s[at..]);
}

/// Whether the whole of `s` is one email address.
pub(crate) fn is_whole_email(s: &[u8]) -> bool {
    s.iter()
        .rposition(|&b| b == b'@')
        .is_some_and(|at| email::at_match(s, at, 0) == Some((0, s.len())))
}

/// Writes the replacement of a whole value (column or JSON field rule).
/// `prefix` names hashes (the column or field name).
pub(crate) fn push_whole(
    out: &mut Vec<u8>,
    strategy: Strategy,
    mac: &HmacSha256,
    prefix: &str,
    value: &[u8],
) {
    match strategy {
        Strategy::Redact => out.extend_from_slice(REDACTED),
        Strategy::Hash => push_hash(out, mac, prefix, value),
        Strategy::Partial { keep_last } => {
            if value.contains(&b'@') && is_whole_email(value) {
                push_partial_email(out, value);
            } else {
                match std::str::from_utf8(value) {
                    Ok(s) => push_partial_str(out, s, keep_last),
                    Err(_) => out.extend_from_slice(STARS),
                }
            }
        }
    }
}

/// Writes the replacement of one detected occurrence `m` of `kind`.
pub(crate) fn push_detected(
    out: &mut Vec<u8>,
    strategy: Strategy,
    mac: &HmacSha256,
    kind: DetectorKind,
    m: &[u8],
) {
    use DetectorKind::*;
    match strategy {
        Strategy::Redact => push_redacted(out, kind),
        Strategy::Partial { keep_last } => match kind {
            Email => push_partial_email(out, m),
            Phone | CreditCard | UsSsn => {
                push_partial_filtered(out, m, keep_last, u8::is_ascii_digit)
            }
            Iban => push_partial_filtered(out, m, keep_last, u8::is_ascii_alphanumeric),
            PrivateKey => push_redacted(out, kind),
            _ => match std::str::from_utf8(m) {
                Ok(s) => push_partial_str(out, s, keep_last),
                Err(_) => out.extend_from_slice(STARS),
            },
        },
        Strategy::Hash => {
            // Normalized so that formatting does not change the pseudonym.
            let normalized: Vec<u8> = match kind {
                Email => m.to_ascii_lowercase(),
                Phone | CreditCard | UsSsn => {
                    m.iter().copied().filter(u8::is_ascii_digit).collect()
                }
                Iban => m
                    .iter()
                    .copied()
                    .filter(u8::is_ascii_alphanumeric)
                    .collect(),
                _ => m.to_vec(),
            };
            push_hash(out, mac, kind.name(), &normalized);
        }
    }
}

fn push_redacted(out: &mut Vec<u8>, kind: DetectorKind) {
    out.extend_from_slice(b"[REDACTED:");
    out.extend_from_slice(kind.name().as_bytes());
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn partial_str() {
        assert_eq!(s(|o| push_partial_str(o, "555-123-4567", 4)), "****4567");
        assert_eq!(s(|o| push_partial_str(o, "héllo wörld", 3)), "****rld");
        assert_eq!(s(|o| push_partial_str(o, "日本語テキスト", 2)), "****スト");
        assert_eq!(s(|o| push_partial_str(o, "1234", 4)), "****");
        assert_eq!(s(|o| push_partial_str(o, "12", 4)), "****");
        assert_eq!(s(|o| push_partial_str(o, "12345", 0)), "****");
        assert_eq!(s(|o| push_partial_str(o, "", 4)), "****");
    }

    #[test]
    fn partial_filtered_and_email() {
        assert_eq!(
            s(|o| push_partial_filtered(o, b"4111 1111 1111 1234", 4, u8::is_ascii_digit)),
            "****1234"
        );
        assert_eq!(
            s(|o| push_partial_filtered(o, b"123-45-6789", 6, u8::is_ascii_digit)),
            "****456789"
        );
        assert_eq!(
            s(|o| push_partial_email(o, b"alice@example.com")),
            "a***@example.com"
        );
        assert_eq!(
            s(|o| push_partial_email(o, "émile@example.fr".as_bytes())),
            "é***@example.fr"
        );
        assert!(is_whole_email(b"alice@example.com"));
        assert!(!is_whole_email(b"mail alice@example.com"));
        assert!(!is_whole_email(b"@"));
    }

    #[test]
    fn hash_shape() {
        let mac = keyed(b"k");
        let h = s(|o| push_hash(o, &mac, "email", b"alice@example.com"));
        assert!(h.starts_with("email_"));
        assert_eq!(h.len(), "email_".len() + 16);
        assert!(h[6..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}
