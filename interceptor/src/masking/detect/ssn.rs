//! US social security numbers written `AAA-GG-SSSS`, `AAA GG SSSS` or `AAA.GG.SSSS` (the same separator twice; bare nine-digit numbers are never flagged).

use super::{digits_at, num_left_ok, num_right_ok, DetectorKind, Hit, Hits};

pub(super) fn find(s: &[u8], runs: &[usize], hits: &mut Hits) {
    let mut next = 0;
    for &i in runs {
        if i >= next && i + 11 <= s.len() && num_left_ok(s, i) && at(s, i) {
            hits.push(Hit {
                start: i,
                end: i + 11,
                kind: DetectorKind::UsSsn,
            });
            next = i + 11;
        }
    }
}

fn at(s: &[u8], i: usize) -> bool {
    let sep = s[i + 3];
    if !(digits_at(s, i, 4) == 3
        && matches!(sep, b'-' | b' ' | b'.')
        && digits_at(s, i + 4, 3) == 2
        && s[i + 6] == sep
        && digits_at(s, i + 7, 5) == 4
        && num_right_ok(s, i + 11))
    {
        return false;
    }
    // Spaced: not one stretch of a longer row of space-separated numbers.
    if sep == b' '
        && ((i >= 2 && s[i - 1] == b' ' && s[i - 2].is_ascii_digit())
            || (s.get(i + 11) == Some(&b' ') && s.get(i + 12).is_some_and(u8::is_ascii_digit)))
    {
        return false;
    }
    let area = &s[i..i + 3];
    let group = &s[i + 4..i + 6];
    let serial = &s[i + 7..i + 11];
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::UsSsn;

    fn ssns(t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == UsSsn)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn positives() {
        assert_eq!(ssns("123-45-6789"), ["123-45-6789"]);
        assert_eq!(ssns("SSN: 078-05-1120."), ["078-05-1120"]);
        assert_eq!(
            ssns("a 219-09-9999 and b 665-12-3456"),
            ["219-09-9999", "665-12-3456"]
        );
        assert_eq!(ssns("(899-99-0001)"), ["899-99-0001"]);
        // Spaces or dots, the same separator twice.
        assert_eq!(ssns("123 45 6789"), ["123 45 6789"]);
        assert_eq!(ssns("SSN: 078.05.1120."), ["078.05.1120"]);
        assert_eq!(ssns("ssn 219 09 9999, ok"), ["219 09 9999"]);
    }

    #[test]
    fn negatives() {
        for t in [
            // Invalid area, group or serial
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "987-65-4321",
            "123-00-4567",
            "123-45-0000",
            // Bare nine-digit ids and other shapes
            "123456789",
            "078051120",
            "order 219099999 shipped",
            "123-456-789",
            // Mixed separators, invalid parts, longer rows of numbers
            "123 45-6789",
            "123.45 6789",
            "123-45.6789",
            "000 12 3456",
            "666.12.3456",
            "123 00 4567",
            "1 123 45 6789",
            "123 45 6789 12",
            "1.123.45.6789",
            "123.45.6789.1",
            "1234-45-6789",
            "123-45-67890",
            "x123-45-6789",
            "123-45-6789-1",
            "9.123-45-6789",
            "2024-03-15",
        ] {
            assert_eq!(ssns(t), Vec::<String>::new(), "{t:?}");
        }
    }
}
