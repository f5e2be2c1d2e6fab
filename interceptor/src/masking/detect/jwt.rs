//! JSON Web Tokens: `eyJ` + base64url segments joined by dots (three, or five for JWE), whose header decodes to JSON with an `"alg"` member.

use super::{DetectorKind, Hit, Hits};

#[inline]
fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

pub(super) fn find(s: &[u8], _runs: &[usize], hits: &mut Hits) {
    let mut i = 0;
    while i + 3 <= s.len() {
        let Some(off) = s[i..].windows(3).position(|w| w == b"eyJ") else {
            return;
        };
        let start = i + off;
        match at(s, start) {
            Some(end) => {
                hits.push(Hit {
                    start,
                    end,
                    kind: DetectorKind::Jwt,
                });
                i = end;
            }
            None => i = start + 1,
        }
    }
}

fn at(s: &[u8], start: usize) -> Option<usize> {
    if start > 0 && (b64url(s[start - 1]) || s[start - 1] == b'.') {
        return None;
    }
    let mut segs = [(0usize, 0usize); 5];
    let mut n = 0;
    let mut p = start;
    loop {
        let len = s[p..].iter().take_while(|&&b| b64url(b)).count();
        segs[n] = (p, p + len);
        n += 1;
        p += len;
        if n == 5 || s.get(p) != Some(&b'.') {
            break;
        }
        p += 1;
    }
    if !(n == 3 || n == 5) {
        return None;
    }
    let (hs, he) = segs[0];
    let (ps, pe) = segs[1];
    if he - hs < 10 || pe - ps < 2 {
        return None;
    }
    header_has_alg(&s[hs..he]).then_some(p)
}

/// Decodes (the first 512 characters of) a base64url header and looks for `"alg"`.
fn header_has_alg(seg: &[u8]) -> bool {
    let mut out = [0u8; 384];
    let mut n = 0;
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in seg.iter().take(512) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            _ => 63,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[n] = (acc >> bits) as u8;
            n += 1;
        }
    }
    let json = &out[..n];
    json.starts_with(b"{\"") && json.windows(5).any(|w| w == b"\"alg\"")
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::Jwt;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    fn jwts(t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == Jwt)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn positives() {
        assert_eq!(jwts(JWT), [JWT]);
        assert_eq!(jwts(&format!("Authorization: Bearer {JWT}")), [JWT]);
        assert_eq!(jwts(&format!("token=\"{JWT}\".")), [JWT]);
        // alg none: empty signature
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        assert_eq!(jwts(&format!("t {unsigned} end")), [unsigned]);
    }

    #[test]
    fn negatives() {
        for t in [
            // header without "alg": {"typ":"JWT"}
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln",
            // only two segments
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
            // glued to a longer token
            "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            // four segments
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln.ZXh0cmE",
            "heyJude.was.here",
        ] {
            assert_eq!(jwts(t), Vec::<String>::new(), "{t:?}");
        }
    }
}
