//! Request paths through `http::path::normalize`, the form the policy decides on and the
//! upstream receives.
//!
//! Properties besides "no panic": the result starts with `/`; it has no empty, `.` or `..`
//! segment (nothing left for a server to resolve differently); normalising it again changes
//! nothing; it contains no escape of an unreserved character and no lower-case escape; a
//! refused path is one that holds `%2F`/`%5C`, a backslash, an encoded control character or
//! a bad escape.
#![no_main]

use interceptor::protocols::http::path::{normalize, PathError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    let p = format!("/{p}");
    match normalize(&p) {
        Ok(n) => {
            assert!(n.starts_with('/'), "{p:?} -> {n:?}");
            let inner = n.strip_prefix('/').unwrap();
            let inner = inner.strip_suffix('/').unwrap_or(inner);
            if !inner.is_empty() {
                for seg in inner.split('/') {
                    assert!(
                        !seg.is_empty() && seg != "." && seg != "..",
                        "{p:?} -> {n:?}: segment {seg:?}"
                    );
                }
            }
            assert_eq!(
                normalize(&n).as_deref(),
                Ok(&*n),
                "not idempotent for {p:?}"
            );
            let b = n.as_bytes();
            for (i, _) in n.match_indices('%') {
                let esc = &b[i + 1..i + 3];
                let v = u8::from_str_radix(std::str::from_utf8(esc).unwrap(), 16).unwrap();
                assert!(
                    !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
                    "{n:?}: unreserved character left encoded"
                );
                assert!(
                    !esc.iter().any(u8::is_ascii_lowercase),
                    "{n:?}: lower-case escape"
                );
            }
        }
        Err(e) => {
            let l = p.to_ascii_lowercase();
            let explained = l.contains("%2f")
                || l.contains("%5c")
                || p.contains('\\')
                || matches!(e, PathError::BadEscape(_) | PathError::Control(_));
            assert!(explained, "{p:?} refused: {e}");
        }
    }
});
