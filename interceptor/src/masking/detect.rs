//! Value detectors: one cheap pre-pass over the bytes decides which scanners can possibly match, then each enabled scanner reports its occurrences.
//!
//! Scanners work on bytes and only ever start or end a match on an ASCII
//! byte, so replacing matches never splits a UTF-8 character. Each scanner
//! lives in its own file under `detect/`.

mod card;
pub(crate) mod email;
mod iban;
mod ip;
mod jwt;
mod phone;
mod prepass;
mod secrets;
mod ssn;

use super::model::DetectorKind;

/// One occurrence: `s[start..end]` is of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub kind: DetectorKind,
}

/// A set of concrete detector kinds (bit `DetectorKind::index()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KindSet(pub u16);

impl KindSet {
    pub fn with(self, k: DetectorKind) -> KindSet {
        KindSet(self.0 | 1 << k.index())
    }
    pub fn has(self, k: DetectorKind) -> bool {
        self.0 & (1 << k.index()) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A scanner: the value, the starts of its digit runs (empty unless a
/// numeric kind is scanned), and where to push occurrences.
type Scanner = fn(&[u8], &[usize], &mut Hits);

/// Finds the occurrences of the `enabled` kinds in `s` and leaves in `hits`
/// a sorted list of non-overlapping ones (on overlap, the earlier start
/// wins, then the longer match). `hits` is not allocated when nothing is
/// found.
pub(crate) fn find_all(s: &[u8], enabled: KindSet, hits: &mut Hits) {
    hits.clear();
    let mut pre = prepass::Prepass::default();
    pre.scan(s);
    let run = pre.candidates(enabled);
    if run.is_empty() {
        return;
    }
    let runs = pre.digit_runs();
    let scanners: [(DetectorKind, Scanner); 10] = [
        (DetectorKind::PrivateKey, secrets::find_private_keys),
        (DetectorKind::Jwt, jwt::find),
        (DetectorKind::ApiKey, secrets::find_api_keys),
        (DetectorKind::Email, email::find),
        (DetectorKind::Iban, iban::find),
        (DetectorKind::CreditCard, card::find),
        (DetectorKind::UsSsn, ssn::find),
        (DetectorKind::Phone, phone::find),
        (DetectorKind::Ipv6, ip::find_v6),
        (DetectorKind::Ipv4, ip::find_v4),
    ];
    let mut scanned = 0;
    for (kind, scan) in scanners {
        if run.has(kind) {
            scan(s, runs, hits);
            scanned += 1;
        }
    }
    if scanned > 1 && hits.len() > 1 {
        hits.sort_and_drop_overlaps();
    }
}

/// Occurrences found in one value: up to 8 on the stack, more on the heap.
#[derive(Debug)]
pub(crate) struct Hits {
    inline: [Hit; 8],
    n: usize,
    spill: Vec<Hit>,
}

impl Default for Hits {
    fn default() -> Hits {
        const NONE: Hit = Hit {
            start: 0,
            end: 0,
            kind: DetectorKind::All,
        };
        Hits {
            inline: [NONE; 8],
            n: 0,
            spill: Vec::new(),
        }
    }
}

impl Hits {
    pub(crate) fn push(&mut self, h: Hit) {
        if self.spill.is_empty() && self.n < self.inline.len() {
            self.inline[self.n] = h;
            self.n += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.n]);
            }
            self.spill.push(h);
        }
    }

    fn clear(&mut self) {
        self.n = 0;
        self.spill.clear();
    }

    fn as_mut_slice(&mut self) -> &mut [Hit] {
        if self.spill.is_empty() {
            &mut self.inline[..self.n]
        } else {
            &mut self.spill
        }
    }

    fn truncate(&mut self, len: usize) {
        if self.spill.is_empty() {
            self.n = self.n.min(len);
        } else {
            self.spill.truncate(len);
        }
    }

    /// Sorts by start (then longer first) and drops hits overlapping an
    /// earlier kept one.
    fn sort_and_drop_overlaps(&mut self) {
        let v = self.as_mut_slice();
        v.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut kept = 0;
        let mut last_end = 0;
        for i in 0..v.len() {
            if v[i].start >= last_end {
                last_end = v[i].end;
                v[kept] = v[i];
                kept += 1;
            }
        }
        self.truncate(kept);
    }
}

impl std::ops::Deref for Hits {
    type Target = [Hit];
    fn deref(&self) -> &[Hit] {
        if self.spill.is_empty() {
            &self.inline[..self.n]
        } else {
            &self.spill
        }
    }
}

/// Letters, digits and `_`.
#[inline]
pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A number may start at `i`: not glued to a word, nor continuing a word
/// or number through `.` or `-` (as in `1.2`, `12-34`, `ID-1234`).
#[inline]
pub(super) fn num_left_ok(s: &[u8], i: usize) -> bool {
    if i == 0 {
        return true;
    }
    let p = s[i - 1];
    !(is_word(p) || (matches!(p, b'.' | b'-') && i >= 2 && is_word(s[i - 2])))
}

/// A number may end at `end`: not glued to a word, nor continued through
/// `.` or `-` by another digit.
#[inline]
pub(super) fn num_right_ok(s: &[u8], end: usize) -> bool {
    match s.get(end) {
        None => true,
        Some(&b) => {
            !(is_word(b)
                || (matches!(b, b'.' | b'-') && s.get(end + 1).is_some_and(u8::is_ascii_digit)))
        }
    }
}

/// Number of ASCII digits at `s[i..]` (at most `max`).
#[inline]
pub(super) fn digits_at(s: &[u8], i: usize, max: usize) -> usize {
    s.get(i..)
        .unwrap_or_default()
        .iter()
        .take(max)
        .take_while(|b| b.is_ascii_digit())
        .count()
}

#[cfg(test)]
pub(crate) fn kinds_found(text: &str) -> Vec<(DetectorKind, String)> {
    let mut hits = Hits::default();
    find_all(text.as_bytes(), KindSet(0x3ff), &mut hits);
    hits.iter()
        .map(|h| (h.kind, text[h.start..h.end].to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use DetectorKind::*;

    #[test]
    fn nothing_in_plain_values() {
        for v in [
            "",
            "Alice Johnson",
            "123456789",
            "2024-03-15 10:23:45.123+00",
            "1700000000000",
            "42.50",
            "Order #123456789 shipped",
            "version 1.2.3.4.5",
            "12:30:45",
            "Main St. 221B, Springfield",
        ] {
            assert_eq!(kinds_found(v), vec![], "{v:?}");
        }
    }

    #[test]
    fn several_kinds_in_one_value() {
        let found =
            kinds_found("mail alice@example.com, call 555-123-4567, card 4111 1111 1111 1111.");
        assert_eq!(
            found,
            vec![
                (Email, "alice@example.com".into()),
                (Phone, "555-123-4567".into()),
                (CreditCard, "4111 1111 1111 1111".into()),
            ]
        );
    }

    #[test]
    fn overlaps_keep_earliest_longest() {
        // The IPv4 tail of an IPv6 address is not reported separately.
        assert_eq!(
            kinds_found("from ::ffff:192.168.1.1 ok"),
            vec![(Ipv6, "::ffff:192.168.1.1".into())]
        );
    }

    #[test]
    fn disabled_kinds_are_not_scanned() {
        let mut hits = Hits::default();
        let only_phone = KindSet::default().with(Phone);
        find_all(b"alice@example.com 555-123-4567", only_phone, &mut hits);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].kind, Phone);
    }
}
