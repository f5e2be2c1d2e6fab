//! Request paths as the policy sees them and as the upstream receives them: normalised
//! (RFC 3986 §6.2.2) so that a path rule cannot be sidestepped by spelling the same resource
//! differently. Percent-encoded unreserved characters are decoded (`%61dmin` → `admin`), other
//! escapes upper-cased, repeated slashes merged (`//admin` → `/admin`, as nginx does) and dot
//! segments removed (`/public/../admin` → `/admin`). Spellings whose meaning depends on the
//! server — an encoded `/` or `\`, a raw backslash, an encoded control character — are
//! refused. The normalised path is what is decided, audited and sent upstream.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains an encoded separator ({0}); servers disagree on whether it separates segments, so the interceptor refuses it: send the path without it")]
    EncodedSeparator(String),
    #[error("the path contains a backslash, which some servers read as `/`; send `/` or `%5C`-free paths")]
    Backslash,
    #[error("the path has a malformed percent-escape at byte {0} (`%` must be followed by two hex digits)")]
    BadEscape(usize),
    #[error("the path contains an encoded control character ({0})")]
    Control(String),
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The normalised form of an origin-form path (`/…`); anything else (`*`) is returned as is.
/// Borrowed when nothing changes.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    // Pass 1: escapes.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let v = match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => h << 4 | l,
                    _ => return Err(PathError::BadEscape(i)),
                };
                let esc = &path[i..i + 3];
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator(esc.to_owned())),
                    0..=0x1f | 0x7f => return Err(PathError::Control(esc.to_owned())),
                    c if unreserved(c) => decoded.push(c as char),
                    _ => decoded.push_str(&esc.to_ascii_uppercase()),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy the run up to the next escape or backslash (keeps UTF-8 intact).
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\')
                    .map_or(b.len(), |n| i + n);
                decoded.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    // Pass 2: segments.
    let norm = crate::policy::resolve_segments(decoded[1..].split('/'));
    Ok(if norm == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(norm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap().into_owned()
    }

    #[test]
    fn plain_paths_stay_borrowed() {
        for p in [
            "/",
            "/v1/users/42",
            "/v1/users/",
            "/a%20b",
            "/%E2%82%AC",
            "/é",
            "*",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes() {
        assert_eq!(n("/public/../admin/keys"), "/admin/keys");
        assert_eq!(n("/a/./b/../../c"), "/c");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/v1//admin///x"), "/v1/admin/x");
        assert_eq!(n("/v1/users/.."), "/v1/");
        assert_eq!(n("/v1/users/."), "/v1/users/");
        assert_eq!(n("//"), "/");
        assert_eq!(
            n("/a/..b/c."),
            "/a/..b/c.",
            "only whole segments are dot segments"
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(n("/v1/%61dmin"), "/v1/admin");
        assert_eq!(n("/v1/%2e%2e/admin"), "/admin", "encoded dots are dots");
        assert_eq!(n("/a%7eb"), "/a~b");
        assert_eq!(
            n("/a%3fb%e2%82%ac"),
            "/a%3Fb%E2%82%AC",
            "reserved and non-ASCII stay encoded"
        );
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        assert_eq!(
            normalize("/v1/admin%2Fkeys"),
            Err(PathError::EncodedSeparator("%2F".into()))
        );
        assert_eq!(
            normalize("/v1/a%5cb"),
            Err(PathError::EncodedSeparator("%5c".into()))
        );
        assert_eq!(normalize("/v1\\admin"), Err(PathError::Backslash));
        assert_eq!(normalize("/a%00"), Err(PathError::Control("%00".into())));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape(2)));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape(2)));
    }
}
