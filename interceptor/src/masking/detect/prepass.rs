//! The pre-pass: eight bytes at a time (SWAR on `u64`), count digits and colons, note which marker characters occur and where digit runs start.

use super::{DetectorKind, KindSet};

const L: u64 = 0x0101_0101_0101_0101;
const H: u64 = 0x8080_8080_8080_8080;
const M: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// High bit of each byte of `low7` (bytes with the high bit cleared) that
/// equals `c`.
#[inline(always)]
fn eq(low7: u64, c: u8) -> u64 {
    let x = low7 ^ (L * u64::from(c));
    !((x + M) | x) & H
}

/// High bit of each byte of `low7` that is at least `c` (`c` >= 1).
#[inline(always)]
fn ge(low7: u64, c: u8) -> u64 {
    (low7 + L * u64::from(0x80 - c)) & H
}

/// What the pre-pass saw in a value.
pub(crate) struct Prepass {
    digits: u32,
    colons: u32,
    double_colon: bool,
    at: bool,
    dot: bool,
    dash: bool,
    under: bool,
    upper: bool,
    lower: bool,
    len: usize,
    /// Start offsets of the runs of ASCII digits, on the stack unless many.
    inline: [usize; 16],
    n: usize,
    spill: Vec<usize>,
}

impl Prepass {
    pub(crate) fn of(s: &[u8]) -> Prepass {
        let mut p = Prepass {
            digits: 0,
            colons: 0,
            double_colon: false,
            at: false,
            dot: false,
            dash: false,
            under: false,
            upper: false,
            lower: false,
            len: s.len(),
            inline: [0; 16],
            n: 0,
            spill: Vec::new(),
        };
        let (mut at, mut dot, mut dash, mut under, mut upper, mut lower, mut dbl) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut prev_digit = 0u64;
        let mut prev_colon = 0u64;
        let mut word = |base: usize, w: u64, p: &mut Prepass| {
            let ascii = !w & H;
            let low7 = w & M;
            let digit = ge(low7, b'0') & !ge(low7, b':') & ascii;
            let colon = eq(low7, b':') & ascii;
            // `low7` drops the high bit, so non-ASCII bytes are masked out.
            at |= eq(low7, b'@') & ascii;
            dot |= eq(low7, b'.') & ascii;
            dash |= eq(low7, b'-') & ascii;
            under |= eq(low7, b'_') & ascii;
            upper |= ge(low7, b'A') & !ge(low7, b'[') & ascii;
            lower |= ge(low7, b'a') & !ge(low7, b'{') & ascii;
            dbl |= colon & ((colon << 8) | (prev_colon >> 56));
            p.digits += digit.count_ones();
            p.colons += colon.count_ones();
            let mut starts = digit & !((digit << 8) | (prev_digit >> 56));
            while starts != 0 {
                p.push(base + (starts.trailing_zeros() / 8) as usize);
                starts &= starts - 1;
            }
            prev_digit = digit;
            prev_colon = colon;
        };
        let mut chunks = s.chunks_exact(8);
        let mut base = 0;
        for c in &mut chunks {
            word(base, u64::from_le_bytes(c.try_into().expect("8 bytes")), &mut p);
            base += 8;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Zero padding matches none of the classes.
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            word(base, u64::from_le_bytes(last), &mut p);
        }
        p.at = at != 0;
        p.dot = dot != 0;
        p.dash = dash != 0;
        p.under = under != 0;
        p.upper = upper != 0;
        p.lower = lower != 0;
        p.double_colon = dbl != 0;
        p
    }

    fn push(&mut self, i: usize) {
        if self.n < self.inline.len() {
            self.inline[self.n] = i;
            self.n += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(i);
        }
    }

    /// Start offsets of the runs of ASCII digits.
    pub(crate) fn digit_runs(&self) -> &[usize] {
        if self.spill.is_empty() {
            &self.inline[..self.n]
        } else {
            &self.spill
        }
    }

    /// The `enabled` kinds whose scanners may match.
    pub(crate) fn candidates(&self, enabled: KindSet) -> KindSet {
        let (digits, len) = (self.digits, self.len);
        let mut k = 0u16;
        let mut set = |kind: DetectorKind, possible: bool| {
            if possible && enabled.has(kind) {
                k |= 1 << kind.index();
            }
        };
        set(DetectorKind::Email, self.at && self.dot && len >= 6);
        set(DetectorKind::Phone, digits >= 8);
        set(DetectorKind::CreditCard, digits >= 13);
        set(DetectorKind::UsSsn, digits >= 9 && self.dash);
        set(DetectorKind::Iban, digits >= 4 && self.upper && len >= 15);
        set(DetectorKind::Ipv4, digits >= 4 && self.dot);
        // Without `::` an IPv6 address has 7 colons (6 with a dotted tail).
        set(
            DetectorKind::Ipv6,
            self.colons >= 2 && (self.double_colon || self.colons >= 6),
        );
        set(
            DetectorKind::Jwt,
            len >= 20 && self.dot && self.upper && self.lower,
        );
        // Every key format has `_` or `-`, or upper case and digits (AWS, Google).
        set(
            DetectorKind::ApiKey,
            len >= 15 && (self.under || self.dash || (self.upper && digits > 0)),
        );
        set(DetectorKind::PrivateKey, self.dash && len >= 40);
        KindSet(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_runs(s: &[u8]) -> Vec<usize> {
        (0..s.len())
            .filter(|&i| s[i].is_ascii_digit() && (i == 0 || !s[i - 1].is_ascii_digit()))
            .collect()
    }

    #[test]
    fn matches_a_naive_scan() {
        let samples: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"1".to_vec(),
            b"12345678".to_vec(),
            b"1234567 9".to_vec(),
            b"a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0 1 2 3 4 5 6 7 8 9".to_vec(),
            "2024-03-15 10:23:45.123+00 ünd 日本 ::1 a@b.c x_y-Z".as_bytes().to_vec(),
            b"\xff\xb0\xb9\xba\xc0\xe0 0\x80".to_vec(),
            (0u8..=255).collect(),
        ];
        for s in &samples {
            let p = Prepass::of(s);
            assert_eq!(p.digit_runs(), naive_runs(s), "{s:?}");
            assert_eq!(
                p.digits as usize,
                s.iter().filter(|b| b.is_ascii_digit()).count()
            );
            assert_eq!(
                p.colons as usize,
                s.iter().filter(|&&b| b == b':').count()
            );
            let has = |c: u8| s.contains(&c);
            assert_eq!(p.at, has(b'@'));
            assert_eq!(p.dot, has(b'.'));
            assert_eq!(p.dash, has(b'-'));
            assert_eq!(p.under, has(b'_'));
            assert_eq!(p.upper, s.iter().any(u8::is_ascii_uppercase));
            assert_eq!(p.lower, s.iter().any(u8::is_ascii_lowercase));
            assert_eq!(p.double_colon, s.windows(2).any(|w| w == b"::"));
        }
    }
}
