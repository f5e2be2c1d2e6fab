//! Phone numbers: E.164 (`+` and 8 to 15 digits, optionally grouped) and North American formats; bare digit runs are never phones.

use super::{is_word, num_left_ok, num_right_ok, DetectorKind, Hit, Hits};

pub(super) fn find(s: &[u8], runs: &[usize], hits: &mut Hits) {
    let mut next = 0;
    for &r in runs {
        if r < next {
            continue;
        }
        let prev = if r > 0 { s[r - 1] } else { b' ' };
        let found = match prev {
            b'+' => e164(s, r - 1).map(|end| (r - 1, end)),
            b'(' if r == 1 || !is_word(s[r - 2]) => nanp(s, r - 1).map(|end| (r - 1, end)),
            _ => None,
        }
        .or_else(|| {
            {
                // A North American number starts with its 3-digit area code or a `1`.
                let len = super::digits_at(s, r, 4);
                (len == 3 || (len == 1 && s[r] == b'1')) && num_left_ok(s, r)
            }
            .then(|| nanp(s, r))
            .flatten()
            .map(|end| (r, end))
        });
        if let Some((start, end)) = found {
            hits.push(Hit {
                start,
                end,
                kind: DetectorKind::Phone,
            });
            next = end;
        }
    }
}

/// `+CC ...`: digit groups separated by one space, dash or dot, or in
/// parentheses; 8 to 15 digits in all. Returns the end of the longest such
/// number that ends on a number boundary.
fn e164(s: &[u8], plus: usize) -> Option<usize> {
    if plus > 0 && (is_word(s[plus - 1]) || s[plus - 1] == b'+') {
        return None;
    }
    let mut p = plus + 1;
    if !matches!(s.get(p), Some(b'1'..=b'9')) {
        return None;
    }
    let mut digits = 0;
    let mut best = None;
    loop {
        let n = super::digits_at(s, p, 16);
        if n > 0 {
            p += n;
            digits += n;
        } else if s.get(p) == Some(&b'(') {
            let n = super::digits_at(s, p + 1, 5);
            if n == 0 || s.get(p + 1 + n) != Some(&b')') {
                break;
            }
            p += n + 2;
            digits += n;
        } else {
            break;
        }
        if digits > 15 {
            break;
        }
        if digits >= 8 && num_right_ok(s, p) {
            best = Some(p);
        }
        // A separator continues the number only if a group follows it.
        match (s.get(p), s.get(p + 1)) {
            (Some(b' ' | b'-' | b'.'), Some(b'0'..=b'9' | b'(')) => p += 1,
            (Some(b'0'..=b'9' | b'('), _) => {}
            _ => break,
        }
    }
    best
}

/// North American numbers starting at `i`: `(555) 123-4567`,
/// `555-123-4567`, `555.123.4567`, `555 123 4567`, optionally after `1` and
/// a separator. The spaced form is not a stretch of a longer row of
/// space-separated numbers.
fn nanp(s: &[u8], i: usize) -> Option<usize> {
    let row_before = i >= 2 && s[i - 1] == b' ' && s[i - 2].is_ascii_digit();
    let found = (s[i] == b'1' && matches!(s.get(i + 1), Some(b' ' | b'-' | b'.')))
        .then(|| nanp_body(s, i + 2))
        .flatten()
        .or_else(|| nanp_body(s, i));
    match found {
        Some((_, true)) if row_before => None,
        Some((end, _)) => Some(end),
        None => None,
    }
}

fn three(s: &[u8], i: usize) -> bool {
    super::digits_at(s, i, 4) == 3
}

fn area_ok(s: &[u8], i: usize) -> bool {
    three(s, i) && s[i] >= b'2'
}

/// The end of the number at `i`, and whether it is the spaced form.
fn nanp_body(s: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut spaced = false;
    let end = if s.get(i) == Some(&b'(') {
        // (555) 123-4567, (555)123-4567, (555) 123 4567
        if !(area_ok(s, i + 1) && s.get(i + 4) == Some(&b')')) {
            return None;
        }
        let mut p = i + 5;
        if s.get(p) == Some(&b' ') {
            p += 1;
        }
        if !three(s, p) {
            return None;
        }
        p += 3;
        if matches!(s.get(p), Some(b'-' | b'.' | b' ')) {
            p += 1;
        }
        if super::digits_at(s, p, 5) != 4 {
            return None;
        }
        p + 4
    } else {
        // 555-123-4567, 555.123.4567, 555 123 4567
        if !area_ok(s, i) {
            return None;
        }
        let sep = *s.get(i + 3)?;
        if !matches!(sep, b'-' | b'.' | b' ') || !three(s, i + 4) || s.get(i + 7) != Some(&sep) {
            return None;
        }
        if super::digits_at(s, i + 8, 5) != 4 {
            return None;
        }
        if sep == b' ' {
            // A real exchange code starts with 2-9, and no number follows.
            let row_after =
                s.get(i + 12) == Some(&b' ') && s.get(i + 13).is_some_and(u8::is_ascii_digit);
            if s[i + 4] < b'2' || row_after {
                return None;
            }
            spaced = true;
        }
        i + 12
    };
    num_right_ok(s, end).then_some((end, spaced))
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::Phone;

    fn phones(t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == Phone)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn north_american() {
        for p in [
            "(555) 123-4567",
            "(555)123-4567",
            "555-123-4567",
            "555.123.4567",
            "1-555-123-4567",
            "+1 555 123 4567",
            "+1 (555) 123-4567",
            "+1-555-123-4567",
            "+15551234567",
            "415 555 0199",
            "1 415 555 0199",
        ] {
            assert_eq!(phones(p), [p], "{p:?}");
            assert_eq!(phones(&format!("call {p}, thanks")), [p], "{p:?}");
            assert_eq!(phones(&format!("tél.:{p}.")), [p], "{p:?}");
        }
    }

    #[test]
    fn international() {
        for p in [
            "+44 20 7946 0958",
            "+49 30 901820",
            "+33 1 23 45 67 89",
            "+81-3-1234-5678",
            "+353.1.234.5678",
            "+61 (0)2 9876 5432",
        ] {
            assert_eq!(phones(&format!("Tel {p} (office)")), [p], "{p:?}");
        }
        // The longest number that ends cleanly: the date is not part of it.
        assert_eq!(phones("+1 555 123 4567 2024-01-01"), ["+1 555 123 4567"]);
    }

    #[test]
    fn not_phones() {
        for t in [
            "123456789",
            "5551234567",
            "order 1234567890 shipped",
            "1700000000",
            "2024-03-15 10:23:45",
            "2024-03-15T10:23:45.123456Z",
            "version 10.123.4567.2",
            "555-123-45678",
            "5555-123-4567",
            "055-123-4567",
            "155-123-4567",
            "555-123.4567",
            "555 123.4567",
            "555 123-4567",
            // Spaced: an exchange starting with 0 or 1, or a row of numbers
            "555 123 4567",
            "415 055 0199",
            "12 415 555 0199",
            "415 555 0199 12",
            "2 415 555 0199",
            "ID-555-123-4567",
            "x555-123-4567",
            "555-123-4567-89",
            "+0 555 123 4567",
            "+1234567",
            "+1234567890123456",
            "a+15551234567",
            "3+4=7",
            "1.555.123.4567.8",
        ] {
            assert_eq!(phones(t), Vec::<String>::new(), "{t:?}");
        }
    }
}
