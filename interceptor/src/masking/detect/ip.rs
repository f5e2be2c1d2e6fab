//! IP addresses: dotted-quad IPv4 not inside a longer dotted sequence, and IPv6 tokens accepted by the standard library's parser.

use std::net::Ipv6Addr;

use super::{is_word, DetectorKind, Hit, Hits};

pub(super) fn find_v4(s: &[u8], runs: &[usize], hits: &mut Hits) {
    let mut next = 0;
    for &i in runs {
        let left_ok = i == 0 || !(is_word(s[i - 1]) || s[i - 1] == b'.');
        if i < next || !left_ok {
            continue;
        }
        if let Some(end) = v4_at(s, i) {
            hits.push(Hit {
                start: i,
                end,
                kind: DetectorKind::Ipv4,
            });
            next = end;
        }
    }
}

/// Four octets (0-255, no leading zeros) joined by dots, not followed by
/// a word character or by `.` and another word character.
fn v4_at(s: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for k in 0..4 {
        if k > 0 {
            if s.get(p) != Some(&b'.') {
                return None;
            }
            p += 1;
        }
        let n = super::digits_at(s, p, 4);
        if n == 0 || n > 3 || (n > 1 && s[p] == b'0') {
            return None;
        }
        let v = s[p..p + n]
            .iter()
            .fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
        if v > 255 {
            return None;
        }
        p += n;
    }
    let glued = match s.get(p) {
        None => false,
        Some(&b) if is_word(b) => true,
        Some(b'.') => s.get(p + 1).is_some_and(|&c| is_word(c)),
        Some(_) => false,
    };
    (!glued).then_some(p)
}

#[inline]
fn v6_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

pub(super) fn find_v6(s: &[u8], _runs: &[usize], hits: &mut Hits) {
    let mut i = 0;
    while i < s.len() {
        if !v6_char(s[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut colons = 0;
        let mut double = false;
        while end < s.len() && v6_char(s[end]) {
            if s[end] == b':' {
                colons += 1;
                double |= end > start && s[end - 1] == b':';
            }
            end += 1;
        }
        i = end;
        let glued_left = start > 0 && (is_word(s[start - 1]));
        let glued_right = end < s.len() && is_word(s[end]);
        if glued_left || glued_right || colons < 2 || !(double || colons >= 6) {
            continue;
        }
        // Trailing dots (end of a sentence) are not part of the address.
        let mut e = end;
        while e > start && s[e - 1] == b'.' {
            e -= 1;
        }
        let token = &s[start..e];
        if !token.iter().any(u8::is_ascii_hexdigit) {
            continue;
        }
        let parsed = std::str::from_utf8(token)
            .ok()
            .and_then(|t| t.parse::<Ipv6Addr>().ok());
        if parsed.is_some() {
            hits.push(Hit {
                start,
                end: e,
                kind: DetectorKind::Ipv6,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::{self, Ipv4, Ipv6};

    fn found(kind: DetectorKind, t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn ipv4_positives() {
        assert_eq!(found(Ipv4, "192.168.1.42"), ["192.168.1.42"]);
        assert_eq!(
            found(Ipv4, "from 10.0.0.1:5432 and 255.255.255.255/32."),
            ["10.0.0.1", "255.255.255.255"]
        );
        assert_eq!(found(Ipv4, "ip=8.8.8.8."), ["8.8.8.8"]);
        assert_eq!(found(Ipv4, "(0.0.0.0)"), ["0.0.0.0"]);
    }

    #[test]
    fn ipv4_negatives() {
        for t in [
            "1.2.3.4.5",
            "version 1.2.3.4.5 released",
            "v1.2.3.4",
            "256.1.1.1",
            "1.2.3.256",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4a",
            "1.2.3.4.x",
            "10.0.19041.1",
            "3.14159",
            "2024.03.15",
        ] {
            assert_eq!(found(Ipv4, t), Vec::<String>::new(), "{t:?}");
        }
    }

    #[test]
    fn ipv6_positives() {
        for a in [
            "2001:db8::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "fe80::1ff:fe23:4567:890a",
            "::1",
            "::ffff:192.0.2.128",
            "64:ff9b::192.0.2.33",
        ] {
            assert_eq!(found(Ipv6, a), [a], "{a:?}");
            assert_eq!(found(Ipv6, &format!("addr [{a}]:443.")), [a], "{a:?}");
            assert_eq!(found(Ipv6, &format!("addr {a}.")), [a], "{a:?}");
        }
    }

    #[test]
    fn ipv6_negatives() {
        for t in [
            "12:30:45",
            "2024-03-15 10:23:45",
            "00:1a:2b:3c:4d:5e",
            "std::vec::Vec",
            "a::b::c",
            "::",
            "1:2:3",
            "2001:db8::1g",
            "feed::beef::cafe",
            "x2001:db8::1",
        ] {
            assert_eq!(found(Ipv6, t), Vec::<String>::new(), "{t:?}");
        }
    }
}
