//! IBANs: country code, check digits and BBAN, compact or in groups of four, with the country's length (15 to 34 for unknown countries) and mod-97 == 1.

use super::{is_word, DetectorKind, Hit, Hits};

/// IBAN lengths of the countries in the SWIFT registry.
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

fn country_length(cc: &[u8]) -> Option<usize> {
    LENGTHS.iter().find(|(c, _)| &c[..] == cc).map(|&(_, l)| l)
}

/// A character of an IBAN written in upper case (`lower`: in lower case).
#[inline]
fn iban_char(b: u8, lower: bool) -> bool {
    b.is_ascii_digit()
        || if lower {
            b.is_ascii_lowercase()
        } else {
            b.is_ascii_uppercase()
        }
}

pub(super) fn find(s: &[u8], runs: &[usize], hits: &mut Hits) {
    // The check digits are a digit run right after the two-letter country code.
    let mut next = 0;
    for &r in runs {
        if r < 2 || r - 2 < next || r + 13 > s.len() {
            continue;
        }
        let i = r - 2;
        let lower = s[i].is_ascii_lowercase();
        let starts = iban_char(s[i], lower)
            && !s[i].is_ascii_digit()
            && iban_char(s[i + 1], lower)
            && !s[i + 1].is_ascii_digit()
            && s[r + 1].is_ascii_digit()
            && (i == 0 || !is_word(s[i - 1]));
        if let Some(end) = starts.then(|| at(s, i, lower)).flatten() {
            hits.push(Hit {
                start: i,
                end,
                kind: DetectorKind::Iban,
            });
            next = end;
        }
    }
}

/// The end of an IBAN starting at `i` (which starts with `[A-Z]{2}[0-9]{2}`,
/// or `[a-z]{2}[0-9]{2}` when `lower`). Letters are all of one case; in
/// lower case only a country of the registry counts (hex ids would
/// otherwise pass one time in 97).
fn at(s: &[u8], i: usize, lower: bool) -> Option<usize> {
    let want = country_length(&s[i..i + 2].to_ascii_uppercase());
    if lower && want.is_none() {
        return None;
    }
    let fits = |len: usize| match want {
        Some(w) => len == w,
        None => (15..=34).contains(&len),
    };
    let ok = |b: u8| iban_char(b, lower);
    let mut buf = [0u8; 34];
    let token = s[i..].iter().take_while(|&&b| ok(b)).count();
    let after = i + token;
    if token > 4 {
        // Compact form.
        if token > 34 || s.get(after).is_some_and(|&b| is_word(b)) || !fits(token) {
            return None;
        }
        buf[..token].copy_from_slice(&s[i..after]);
        return mod97(&buf[..token]).then_some(after);
    }
    // Grouped form: "DE89 3704 0044 0532 0130 00" (or with dashes, the same
    // separator throughout). Every group but the last has four characters;
    // the number may end after any group.
    buf[..4].copy_from_slice(&s[i..i + 4]);
    let mut n = 4;
    let mut p = after;
    let mut best = None;
    let sep = match s.get(p) {
        Some(&c @ (b' ' | b'-')) => c,
        _ => return None,
    };
    while s.get(p) == Some(&sep) {
        let g = s[p + 1..].iter().take(5).take_while(|&&b| ok(b)).count();
        if g == 0 || g > 4 || n + g > 34 || s.get(p + 1 + g).is_some_and(|&b| is_word(b)) {
            break;
        }
        buf[n..n + g].copy_from_slice(&s[p + 1..p + 1 + g]);
        n += g;
        p += 1 + g;
        if fits(n) && mod97(&buf[..n]) && !(sep == b'-' && continued(s, p)) {
            best = Some(p);
        }
        if g < 4 {
            break;
        }
    }
    best
}

/// A dash and a letter or digit follow `p`: the dashed token goes on.
fn continued(s: &[u8], p: usize) -> bool {
    s.get(p) == Some(&b'-') && s.get(p + 1).is_some_and(u8::is_ascii_alphanumeric)
}

/// ISO 7064 mod 97-10 over the IBAN moved so the first four characters come last.
fn mod97(iban: &[u8]) -> bool {
    let (head, rest) = iban.split_at(4);
    let mut r = 0u32;
    for &c in rest.iter().chain(head) {
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c.to_ascii_uppercase() - b'A') + 10) % 97
        };
    }
    r == 1
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::Iban;

    fn ibans(t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == Iban)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn positives() {
        for v in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82 WEST 1234 5698 7654 32",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "NO9386011117947",
            "BE68 5390 0754 7034",
            // Lower case, dashes
            "de89370400440532013000",
            "de89 3704 0044 0532 0130 00",
            "gb82 west 1234 5698 7654 32",
            "DE89-3704-0044-0532-0130-00",
            "gb82-west-1234-5698-7654-32",
        ] {
            assert_eq!(ibans(v), [v], "{v:?}");
            assert_eq!(ibans(&format!("IBAN: {v}, BIC x")), [v], "{v:?}");
        }
        // The grouped form stops at the country's length.
        assert_eq!(
            ibans("DE89 3704 0044 0532 0130 00 1234 paid"),
            ["DE89 3704 0044 0532 0130 00"]
        );
    }

    #[test]
    fn negatives() {
        for t in [
            // Bad checksum
            "DE89370400440532013001",
            "DE88 3704 0044 0532 0130 00",
            "GB82WEST12345698765433",
            // Wrong length for the country
            "DE8937040044053201300",
            "DE893704004405320130000",
            // Mixed case or separators, glued to a word, too short
            "De89370400440532013000",
            "gb82WEST12345698765432",
            "DE89 3704-0044 0532 0130 00",
            "DE89-3704-0044-0532-0130-00-12",
            // Lower case needs a registered country (hex ids)
            "zz89370400440532013000",
            "xDE89370400440532013000",
            "DE89370400440532013000x",
            "AB12",
            "SKU AB12CDEF34567890",
            "ORDER-2024-000123",
        ] {
            assert_eq!(ibans(t), Vec::<String>::new(), "{t:?}");
        }
    }
}
