//! Payment card numbers: 13 to 19 digits, optionally grouped by single spaces or dashes (mixed) or by dots, with a known issuer prefix and length, passing Luhn.

use super::{num_left_ok, num_right_ok, DetectorKind, Hit, Hits};

const MAX_GROUPS: usize = 24;

pub(super) fn find(s: &[u8], runs: &[usize], hits: &mut Hits) {
    let mut next = 0;
    for &i in runs {
        if i < next || !num_left_ok(s, i) {
            continue;
        }
        if let Err(stop) = enough_digits(s, i) {
            // Runs up to `stop` continue this chain of groups: fewer digits.
            next = stop;
            continue;
        }
        // Digit groups joined by single spaces and dashes, or by dots only.
        // `seps[k]` joins groups `k` and `k + 1`.
        let mut groups = [(0usize, 0usize); MAX_GROUPS];
        let mut seps = [0u8; MAX_GROUPS];
        let mut n = 0;
        let mut p = i;
        loop {
            let len = super::digits_at(s, p, usize::MAX);
            groups[n] = (p, p + len);
            n += 1;
            p += len;
            if n == MAX_GROUPS {
                break;
            }
            let dots = n > 1 && seps[0] == b'.';
            match (s.get(p), s.get(p + 1)) {
                (Some(&c @ (b' ' | b'-' | b'.')), Some(d))
                    if d.is_ascii_digit() && (n == 1 || (c == b'.') == dots) =>
                {
                    seps[n - 1] = c;
                    p += 1;
                }
                _ => break,
            }
        }
        next = groups[n - 1].1;
        if let Some((start, end)) = best_in_run(s, &groups[..n], &seps[..n - 1]) {
            hits.push(Hit {
                start,
                end,
                kind: DetectorKind::CreditCard,
            });
            next = end;
        }
    }
}

/// At least 13 digits in groups joined by single spaces, dashes or dots from
/// `i`; else where that chain of groups ends.
fn enough_digits(s: &[u8], mut i: usize) -> Result<(), usize> {
    let mut n = 0;
    while i < s.len() {
        match s[i] {
            b'0'..=b'9' => n += 1,
            b' ' | b'-' | b'.' if s.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
            _ => break,
        }
        if n >= 13 {
            return Ok(());
        }
        i += 1;
    }
    Err(i)
}

/// The first (then longest) card number made of whole consecutive groups.
/// Inside a run, a number may only start or end at a space: dashes and
/// dots join groups into one token. Dotted numbers have at least three
/// groups of 3 to 6 digits (`4.111111111111111` is a decimal number).
fn best_in_run(s: &[u8], groups: &[(usize, usize)], seps: &[u8]) -> Option<(usize, usize)> {
    let last = groups.len() - 1;
    let total: usize = groups.iter().map(|g| g.1 - g.0).sum();
    if total < 13 {
        return None;
    }
    if seps.first() == Some(&b'.')
        && (groups.len() < 3 || groups.iter().any(|g| !(3..=6).contains(&(g.1 - g.0))))
    {
        return None;
    }
    for a in 0..=last {
        if a > 0 && seps[a - 1] != b' ' {
            continue;
        }
        let mut digits = [0u8; 19];
        let mut n = 0;
        let mut best = None;
        for (b, &(gs, ge)) in groups.iter().enumerate().skip(a) {
            if n + (ge - gs) > 19 {
                break;
            }
            digits[n..n + ge - gs].copy_from_slice(&s[gs..ge]);
            n += ge - gs;
            let ends_ok = if b == last {
                num_right_ok(s, ge)
            } else {
                seps[b] == b' '
            };
            if n >= 13 && ends_ok && brand_length_ok(&digits[..n]) && luhn(&digits[..n]) {
                best = Some((groups[a].0, ge));
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

fn prefix(d: &[u8], len: usize) -> u32 {
    d[..len]
        .iter()
        .fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
}

/// A known issuer prefix (IIN) with a length that issuer uses.
fn brand_length_ok(d: &[u8]) -> bool {
    let len = d.len();
    let p1 = prefix(d, 1);
    let p2 = prefix(d, 2);
    let p3 = prefix(d, 3);
    let p4 = prefix(d, 4);
    match p1 {
        // Visa
        4 => matches!(len, 13 | 16 | 19),
        // Mastercard 51-55, 2221-2720
        5 => (51..=55).contains(&p2) && len == 16,
        2 => (2221..=2720).contains(&p4) && len == 16,
        3 => {
            // Amex 34, 37; JCB 3528-3589; Diners 36, 38, 300-305
            ((p2 == 34 || p2 == 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || ((p2 == 36 || p2 == 38 || (300..=305).contains(&p3)) && (14..=19).contains(&len))
        }
        // Discover 6011, 644-649, 65
        6 => (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65) && (16..=19).contains(&len),
        _ => false,
    }
}

/// The Luhn (mod 10) check over ASCII digits.
pub(crate) fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &c) in d.iter().rev().enumerate() {
        let mut v = u32::from(c - b'0');
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::CreditCard;

    fn cards(t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == CreditCard)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn positives() {
        for c in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500 0000 0000 0004",
            "2223000048400011",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "6500000000000002",
            "3530111333300000",
            "36227206271667",
            "30569309025904",
            "4222222222222",
            // Dots; spaces and dashes mixed
            "4111.1111.1111.1111",
            "3782.822463.10005",
            "4111 1111-1111 1111",
            "4111-1111 1111-1111",
        ] {
            assert_eq!(cards(c), [c], "{c:?}");
            assert_eq!(cards(&format!("paid with {c}, ok")), [c], "{c:?}");
        }
    }

    #[test]
    fn picked_out_of_space_separated_numbers() {
        assert_eq!(
            cards("ref 12 4111 1111 1111 1111 exp 12 27"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(cards("4111111111111111 2"), ["4111111111111111"]);
        assert_eq!(
            cards("ref 12 4111-1111 1111-1111 exp"),
            ["4111-1111 1111-1111"]
        );
        assert_eq!(
            cards("two: 4111111111111111 5500000000000004"),
            ["4111111111111111", "5500000000000004"]
        );
    }

    #[test]
    fn negatives() {
        for t in [
            // Luhn fails
            "4111111111111112",
            "4111 1111 1111 1112",
            // Unknown prefix or wrong length for the issuer
            "1234567812345670",
            "9111111111111119",
            "41111111111111111",
            "37828224631000",
            // Part of a longer digit run or token
            "04111111111111111",
            "41111111111111110000",
            "x4111111111111111",
            "4111111111111111a",
            "4111-1111-1111-1111-2",
            "1-4111-1111-1111-1111",
            "12.4111111111111111",
            "4111111111111111.5",
            // Dots mixed with other separators, decimal numbers
            "4111.1111 1111.1111",
            "4111-1111.1111-1111",
            "4.111111111111111",
            "4111.111111111111",
            "4111.1111.1111.1111.5",
            "1.4111.1111.1111.1111",
            "4111.11.11.1111.1111",
            // Not cards at all
            "1700000000000",
            "2024-03-15 10:23:45",
            "00000000000000000",
        ] {
            assert_eq!(cards(t), Vec::<String>::new(), "{t:?}");
        }
    }

    #[test]
    fn luhn_known_values() {
        assert!(super::luhn(b"79927398713"));
        assert!(!super::luhn(b"79927398710"));
    }
}
