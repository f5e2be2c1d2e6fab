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

/// Sum of the bytes of `x`, each 0 or 1 (no popcount instruction needed).
#[inline(always)]
fn count(mask: u64) -> u32 {
    ((mask >> 7).wrapping_mul(L) >> 56) as u32
}

/// What the pre-pass saw in a value.
#[derive(Default)]
pub(crate) struct Prepass {
    digits: u32,
    colons: u32,
    /// Or-ed class masks: `@`, `.`, `-`, ASCII letters, `::`.
    at: u64,
    dot: u64,
    dash: u64,
    letter: u64,
    double_colon: u64,
    /// A run of at least 15 letters, digits, `-` or `_` (API keys, JWTs).
    long_token: bool,
    len: usize,
    prev_digit: u64,
    prev_colon: u64,
    token_run: u32,
    /// Start offsets of the runs of ASCII digits, on the stack unless many.
    inline: [usize; 16],
    n: usize,
    spill: Vec<usize>,
}

impl Prepass {
    /// Scans `s` into `self` (a fresh `Prepass` from `Default`).
    pub(crate) fn scan(&mut self, s: &[u8]) {
        self.len = s.len();
        let mut chunks = s.chunks_exact(8);
        let mut base = 0;
        for c in &mut chunks {
            self.word(base, u64::from_le_bytes(c.try_into().expect("8 bytes")));
            base += 8;
        }
        let rest = chunks.remainder();
        // Zero padding is in none of the classes (and ends a token).
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.word(base, u64::from_le_bytes(last));
    }

    #[cfg(test)]
    fn of(s: &[u8]) -> Prepass {
        let mut p = Prepass::default();
        p.scan(s);
        p
    }

    #[inline(always)]
    fn word(&mut self, base: usize, w: u64) {
        let ascii = !w & H;
        // `low7` drops the high bit: class masks are and-ed with `ascii`.
        let low7 = w & M;
        let digit = ge(low7, b'0') & !ge(low7, b':') & ascii;
        let colon = eq(low7, b':') & ascii;
        let dash = eq(low7, b'-') & ascii;
        let under = eq(low7, b'_') & ascii;
        // Setting bit 5 folds upper case onto lower case.
        let folded = low7 | (L * 0x20);
        let letter = ge(folded, b'a') & !ge(folded, b'{') & ascii;
        self.at |= eq(low7, b'@') & ascii;
        self.dot |= eq(low7, b'.') & ascii;
        self.dash |= dash;
        self.letter |= letter;
        if colon != 0 {
            self.double_colon |= colon & ((colon << 8) | (self.prev_colon >> 56));
            self.colons += count(colon);
        }
        self.digits += count(digit);
        let not_token = !(digit | dash | under | letter) & H;
        if not_token == 0 {
            self.token_run += 8;
        } else {
            self.long_token |= self.token_run + not_token.trailing_zeros() / 8 >= 15;
            self.token_run = not_token.leading_zeros() / 8;
        }
        let mut starts = digit & !((digit << 8) | (self.prev_digit >> 56));
        while starts != 0 {
            self.push(base + (starts.trailing_zeros() / 8) as usize);
            starts &= starts - 1;
        }
        self.prev_digit = digit;
        self.prev_colon = colon;
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
        let (at, dot, dash) = (self.at != 0, self.dot != 0, self.dash != 0);
        let mut k = 0u16;
        let mut set = |kind: DetectorKind, possible: bool| {
            if possible && enabled.has(kind) {
                k |= 1 << kind.index();
            }
        };
        set(DetectorKind::Email, at && dot && len >= 6);
        set(DetectorKind::Phone, digits >= 8);
        set(DetectorKind::CreditCard, digits >= 13);
        set(DetectorKind::UsSsn, digits >= 9 && len >= 11);
        set(
            DetectorKind::Iban,
            digits >= 4 && self.letter != 0 && len >= 15,
        );
        set(DetectorKind::Ipv4, digits >= 4 && dot);
        // Without `::` an IPv6 address has 7 colons (6 with a dotted tail).
        set(
            DetectorKind::Ipv6,
            self.double_colon != 0 || self.colons >= 6,
        );
        // A JWT header with "alg" is at least 15 base64url characters.
        set(DetectorKind::Jwt, self.long_token && dot);
        set(DetectorKind::ApiKey, self.long_token);
        set(DetectorKind::PrivateKey, dash && len >= 40);
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
            b"abcdefghijklmn".to_vec(),
            b"abcdefghijklmno".to_vec(),
            b"x abcdefghijklmn".to_vec(),
            b"xx abcdefghijklmno".to_vec(),
            b"1234567.abcdefghijklmnopqrstuvwxyz".to_vec(),
            b"1234567.abcdefghijklmn.abcdefghijklmn".to_vec(),
            b"a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0 1 2 3 4 5 6 7 8 9".to_vec(),
            "2024-03-15 10:23:45.123+00 ünd 日本 ::1 a@b.c x_y-Z"
                .as_bytes()
                .to_vec(),
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
            assert_eq!(p.colons as usize, s.iter().filter(|&&b| b == b':').count());
            let has = |c: u8| s.contains(&c);
            assert_eq!(p.at != 0, has(b'@'));
            assert_eq!(p.dot != 0, has(b'.'));
            assert_eq!(p.dash != 0, has(b'-'));
            assert_eq!(p.letter != 0, s.iter().any(u8::is_ascii_alphabetic));
            assert_eq!(p.double_colon != 0, s.windows(2).any(|w| w == b"::"));
            let token = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
            let longest = s.split(|b| !token(b)).map(<[u8]>::len).max().unwrap_or(0);
            assert_eq!(p.long_token, longest >= 15, "{s:?}");
        }
    }
}
