//! Email addresses: `local@domain.tld`, found from each `@`.

use super::{DetectorKind, Hit, Hits};

const LOCAL: u8 = 1;
const DOMAIN: u8 = 2;
const NON_ASCII: u8 = 4;

/// Byte classes: local-part characters (the common subset of RFC 5322
/// atext), domain characters, non-ASCII bytes.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c >= 0x80 {
            NON_ASCII
        } else if c.is_ascii_alphanumeric() {
            LOCAL | DOMAIN
        } else {
            match c {
                b'.' | b'-' => LOCAL | DOMAIN,
                b'_' | b'%' | b'+' | b'\'' => LOCAL,
                _ => 0,
            }
        };
        b += 1;
    }
    t
};

pub(super) fn find(s: &[u8], _runs: &[usize], hits: &mut Hits) {
    let mut from = 0;
    let mut i = 0;
    while let Some(off) = s[i..].iter().position(|&b| b == b'@') {
        let at = i + off;
        match at_match(s, at, from) {
            Some((start, end)) => {
                hits.push(Hit {
                    start,
                    end,
                    kind: DetectorKind::Email,
                });
                from = end;
                i = end;
            }
            None => i = at + 1,
        }
        if i >= s.len() {
            break;
        }
    }
}

/// The address around the `@` at `at`, starting no earlier than `from`.
/// Letters and digits beyond ASCII are accepted (internationalized
/// addresses); a match still starts and ends on a character boundary.
pub(crate) fn at_match(s: &[u8], at: usize, from: usize) -> Option<(usize, usize)> {
    // Local part: back from the '@'.
    let mut start = at;
    while start > from {
        let c = CLASS[usize::from(s[start - 1])];
        if c & LOCAL != 0 {
            start -= 1;
        } else if c & NON_ASCII != 0 {
            match char_before(s, start) {
                Some((ch, len)) if ch.is_alphanumeric() && start - len >= from => start -= len,
                _ => break,
            }
        } else {
            break;
        }
    }
    while start < at && s[start] < 0x80 && !(s[start].is_ascii_alphanumeric() || s[start] == b'_') {
        start += 1;
    }
    if start == at || at - start > 64 || s[at - 1] == b'.' {
        return None;
    }
    // Domain: forward from the '@', without trailing '.' or '-'.
    let mut end = at + 1;
    while end < s.len() {
        let c = CLASS[usize::from(s[end])];
        if c & DOMAIN != 0 {
            end += 1;
        } else if c & NON_ASCII != 0 {
            match char_at(s, end) {
                Some((ch, len)) if ch.is_alphanumeric() => end += len,
                _ => break,
            }
        } else {
            break;
        }
    }
    while end > at + 1 && matches!(s[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &s[at + 1..end];
    if domain.len() < 4 || domain.len() > 253 {
        return None;
    }
    // Labels: non-empty, at most 63 bytes, not starting or ending with '-'.
    let mut label_start = 0;
    let mut labels = 1;
    for (i, &b) in domain.iter().enumerate() {
        if b == b'.' {
            if i == label_start || i - label_start > 63 || domain[i - 1] == b'-' {
                return None;
            }
            labels += 1;
            label_start = i + 1;
        } else if b == b'-' && i == label_start {
            return None;
        }
    }
    // The trimmed domain ends with neither '.' nor '-'.
    let tld = &domain[label_start..];
    if labels < 2 || tld.len() > 63 {
        return None;
    }
    let tld_ok = if tld.is_ascii() {
        tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
    } else {
        // Taken whole characters at a time, so it is UTF-8.
        std::str::from_utf8(tld)
            .is_ok_and(|t| t.chars().count() >= 2 && t.chars().all(char::is_alphabetic))
    };
    tld_ok.then_some((start, end))
}

/// The character ending just before `i` (which must follow a non-ASCII byte) and its length.
fn char_before(s: &[u8], i: usize) -> Option<(char, usize)> {
    let mut j = i - 1;
    while j > 0 && s[j] & 0xC0 == 0x80 && i - j < 4 {
        j -= 1;
    }
    let c = std::str::from_utf8(&s[j..i]).ok()?.chars().next()?;
    Some((c, i - j))
}

/// The character starting at `i` and its length.
fn char_at(s: &[u8], i: usize) -> Option<(char, usize)> {
    let len = match s[i] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(s.get(i..i + len)?)
        .ok()?
        .chars()
        .next()?;
    Some((c, len))
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::Email;

    fn emails(t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == Email)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn positives() {
        assert_eq!(emails("alice@example.com"), ["alice@example.com"]);
        assert_eq!(
            emails("Contact: <Bob.O'Neil+tag@mail.example.co.uk>."),
            ["Bob.O'Neil+tag@mail.example.co.uk"]
        );
        assert_eq!(
            emails("a@b.io and second_one@sub-domain.example.org!"),
            ["a@b.io", "second_one@sub-domain.example.org"]
        );
        assert_eq!(
            emails("https://x.test/?email=carol@example.net&x=1"),
            ["email=carol@example.net"[6..].to_owned()]
        );
        assert_eq!(emails("mailto:dan@example.com"), ["dan@example.com"]);
        assert_eq!(emails("x@y@example.com"), ["y@example.com"]);
    }

    #[test]
    fn negatives() {
        for t in [
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@example.c",
            "alice@example.c0m",
            "alice@-example.com",
            "alice.@example.com",
            "user@192.168.0.1",
            "price: 5 @ 3.99",
            "@@@.com",
            "a@b..com",
        ] {
            assert_eq!(emails(t), Vec::<String>::new(), "{t:?}");
        }
    }

    #[test]
    fn multibyte_neighbours() {
        assert_eq!(
            emails("Zoë schrieb: zoë.müller@example.de → jürgen@exämple.de."),
            ["zoë.müller@example.de", "jürgen@exämple.de"]
        );
        assert_eq!(emails("メール：taro@example.jp です"), ["taro@example.jp"]);
        assert_eq!(emails("ok—ann@example.com—"), ["ann@example.com"]);
    }
}
