//! Whether a body that must be masked is in an encoding the detectors can read, and its
//! decoding and encoding around the masking. The detectors match ASCII patterns
//! (`alice@example.com`, `123-45-6789`); in UTF-16 or UTF-32 every other byte is NUL and
//! nothing matches, while a client that honours the charset (or the byte order mark) reads
//! it all. Such a body is withheld rather than passed on unmasked. UTF-8 is masked as it
//! is; ISO-8859-1 (and US-ASCII) and windows-1252 are decoded, masked and encoded back;
//! other ASCII-compatible charsets are masked only when the body is all ASCII (decoding
//! them as UTF-8 would garble the rest).

use std::borrow::Cow;

use bytes::Bytes;

use super::mask::MaskError;

/// How the text of a body is read for masking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8, or no charset declared.
    Utf8,
    /// ISO-8859-1 and US-ASCII: byte `b` is U+00`b` (bytes over 0x7F in US-ASCII text
    /// are kept as they came).
    Latin1,
    /// windows-1252: ISO-8859-1 but 0x80–0x9F (`€`, `‚`, `“`…; the five unassigned bytes
    /// are the C1 controls of the same number, as in the WHATWG Encoding Standard).
    Windows1252,
    /// Another ASCII-compatible charset (the label, lower case).
    Other(String),
}

const LATIN1: &[&str] = &[
    "iso-8859-1",
    "iso8859-1",
    "iso_8859-1",
    "iso88591",
    "latin1",
    "latin-1",
    "l1",
    "cp819",
    "us-ascii",
    "ascii",
];

const WINDOWS_1252: &[&str] = &["windows-1252", "cp1252", "x-cp1252"];

/// windows-1252 at 0x80–0x9F.
const W1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}',
    '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
];

impl Charset {
    /// Whether the start of a body of unknown type is binary: a NUL, or (UTF-8) bytes
    /// that are not UTF-8. With another charset declared, bytes over 0x7F are text.
    pub fn looks_binary(&self, start: &[u8]) -> bool {
        match self {
            Charset::Utf8 => super::mask::looks_binary(start),
            _ => start.contains(&0),
        }
    }

    fn decode(&self, body: &[u8]) -> String {
        body.iter()
            .map(|&b| match (self, b) {
                (Charset::Windows1252, 0x80..=0x9F) => W1252_HIGH[usize::from(b - 0x80)],
                _ => char::from(b),
            })
            .collect()
    }

    /// `text` in this charset; `None` when a character has no byte in it.
    fn encode(&self, text: &str) -> Option<Vec<u8>> {
        text.chars()
            .map(|c| match (self, u32::from(c)) {
                (_, n @ 0..=0x7F) => u8::try_from(n).ok(),
                (Charset::Latin1, n @ 0x80..=0xFF) => u8::try_from(n).ok(),
                (Charset::Windows1252, n @ 0xA0..=0xFF) => u8::try_from(n).ok(),
                (Charset::Windows1252, _) => W1252_HIGH
                    .iter()
                    .position(|&h| h == c)
                    .and_then(|i| u8::try_from(0x80 + i).ok()),
                _ => None,
            })
            .collect()
    }

    /// Masks `body` (in this charset) with `mask`, which reads and writes UTF-8. A
    /// Latin-1 or windows-1252 body is decoded first and its masked text encoded back;
    /// when a character of the result has no byte in the charset (`\u4e2d` in JSON, now
    /// written as it is), the result stays UTF-8 and the third value is `true`: the
    /// Content-Type must say `charset=utf-8`. Another charset is only masked when the body
    /// is all ASCII. `None`: unchanged, the body goes on as it came.
    pub fn mask(
        &self,
        body: &[u8],
        mask: impl FnOnce(&[u8]) -> Result<(Option<Bytes>, u64), MaskError>,
    ) -> Result<(Option<Bytes>, u64, bool), MaskError> {
        let text: Cow<[u8]> = match self {
            Charset::Utf8 => Cow::Borrowed(body),
            _ if body.is_ascii() => Cow::Borrowed(body),
            Charset::Latin1 | Charset::Windows1252 => Cow::Owned(self.decode(body).into_bytes()),
            Charset::Other(label) => return Err(MaskError::NotDecoded(label.clone())),
        };
        let (out, n) = mask(&text)?;
        let Some(out) = out else {
            return Ok((None, n, false));
        };
        if *self == Charset::Utf8 {
            return Ok((Some(out), n, false));
        }
        match std::str::from_utf8(&out).ok().and_then(|t| self.encode(t)) {
            Some(bytes) => Ok((Some(bytes.into()), n, false)),
            None => Ok((Some(out), n, true)),
        }
    }
}

/// `content_type` with every `charset` parameter saying `utf-8`.
pub fn utf8_content_type(content_type: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (i, part) in content_type.split(';').enumerate() {
        let is_charset = i > 0
            && part
                .split_once('=')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("charset"));
        parts.push(if is_charset {
            " charset=utf-8".to_owned()
        } else {
            part.to_owned()
        });
    }
    parts.join(";")
}

/// ASCII-compatible charsets (lower case): the detectors see their ASCII as it is.
const ASCII_COMPATIBLE: &[&str] = &[
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "latin1",
    "latin-1",
    "l1",
    "iso_8859-1",
    "iso88591",
    "cp819",
    "x-cp1252",
    "koi8-r",
    "koi8-u",
    "gbk",
    "gb2312",
    "gb18030",
    "big5",
    "big5-hkscs",
    "shift_jis",
    "shift-jis",
    "sjis",
    "windows-31j",
    "euc-jp",
    "euc-kr",
    "x-euc-jp",
    "tis-620",
    "macintosh",
    "x-mac-roman",
];

/// Prefixes of families of ASCII-compatible charsets.
const ASCII_COMPATIBLE_FAMILIES: &[&str] = &["iso-8859-", "iso8859-", "windows-125", "cp125"];

/// The charset the Content-Type declares (`Utf8` when none); `Err` when it names one that
/// is not known to be ASCII-compatible (`utf-16`, `utf-32`, `ucs-2`, `utf-7`, EBCDIC code
/// pages, …), or two different ones.
pub fn declared(content_type: Option<&str>) -> Result<Charset, MaskError> {
    let Some(ct) = content_type else {
        return Ok(Charset::Utf8);
    };
    let mut found: Option<Charset> = None;
    for param in ct.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let label = value.trim().trim_matches('"').trim().to_ascii_lowercase();
        let ok = ASCII_COMPATIBLE.contains(&label.as_str())
            || ASCII_COMPATIBLE_FAMILIES.iter().any(|f| {
                label
                    .strip_prefix(f)
                    .is_some_and(|n| n.parse::<u16>().is_ok())
            });
        if !ok {
            return Err(MaskError::Charset(label));
        }
        let cs = if matches!(label.as_str(), "utf-8" | "utf8") {
            Charset::Utf8
        } else if LATIN1.contains(&label.as_str()) {
            Charset::Latin1
        } else if WINDOWS_1252.contains(&label.as_str()) {
            Charset::Windows1252
        } else {
            Charset::Other(label.clone())
        };
        if found.as_ref().is_some_and(|f| *f != cs) {
            return Err(MaskError::Charset(format!("{ct:?} (two charsets)")));
        }
        found = Some(cs);
    }
    Ok(found.unwrap_or(Charset::Utf8))
}

/// `Err` when the body starts with a UTF-16 or UTF-32 byte order mark: clients decode it
/// by that mark whatever the Content-Type says.
pub fn byte_order_mark(body: &[u8]) -> Result<(), MaskError> {
    let wide = body.starts_with(&[0, 0, 0xFE, 0xFF])
        || body.starts_with(&[0xFF, 0xFE])
        || body.starts_with(&[0xFE, 0xFF]);
    if wide {
        return Err(MaskError::Charset("UTF-16/UTF-32 (byte order mark)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ascii_compatible_charsets_pass() {
        for ok in [
            None,
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("application/json;charset=\"UTF-8\""),
            Some("text/csv; charset=ISO-8859-15"),
            Some("text/html; charset=windows-1252"),
            Some("text/plain; format=flowed"),
        ] {
            assert!(declared(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "text/plain; charset=utf-16",
            "text/csv; charset=UTF-32",
            "text/plain; charset=utf-16le",
            "application/json; charset=ucs-2",
            "text/plain; charset=utf-7",
            "text/plain; charset=ibm037",
            "text/plain; charset=iso-8859-x",
            "text/plain; charset=utf-8; charset=utf-16",
        ] {
            assert!(
                matches!(declared(Some(bad)), Err(MaskError::Charset(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn wide_byte_order_marks_are_refused() {
        assert!(byte_order_mark(b"\xFF\xFEa\0").is_err());
        assert!(byte_order_mark(b"\xFE\xFF\0a").is_err());
        assert!(byte_order_mark(b"\0\0\xFE\xFF").is_err());
        assert!(
            byte_order_mark(b"\xEF\xBB\xBF{}").is_ok(),
            "UTF-8's is fine"
        );
        assert!(byte_order_mark(b"plain").is_ok());
    }

    fn text_mask(
        m: &crate::masking::Masker,
    ) -> impl Fn(&[u8]) -> Result<(Option<Bytes>, u64), MaskError> + '_ {
        move |b| {
            crate::protocols::http::mask::mask_body(m, &[], super::super::mask::BodyKind::Text, b)
        }
    }

    fn masker() -> crate::masking::Masker {
        let doc: crate::masking::MaskingDoc =
            serde_yaml::from_str("detectors: [{kind: all, strategy: redact}]").unwrap();
        crate::masking::Masker::new(&doc, vec![7; 32]).unwrap()
    }

    #[test]
    fn single_byte_charsets_are_decoded_and_encoded_back() {
        let m = masker();
        let ct = |c: &str| declared(Some(&format!("text/plain; charset={c}"))).unwrap();
        // "Café – “bob@example.org” ±€" in windows-1252, 0x81 (unassigned) kept as it came.
        let body = b"Caf\xe9 \x96 \x93bob@example.org\x94 \xb1\x80\x81";
        let (out, n, relabel) = ct("windows-1252").mask(body, text_mask(&m)).unwrap();
        assert_eq!((n, relabel), (1, false));
        assert_eq!(
            &out.unwrap()[..],
            b"Caf\xe9 \x96 \x93[REDACTED:email]\x94 \xb1\x80\x81"
        );
        for label in ["ISO-8859-1", "latin1", "us-ascii"] {
            let body = b"\xc9milie: 123-45-6789 \xff";
            let (out, n, relabel) = ct(label).mask(body, text_mask(&m)).unwrap();
            assert_eq!((n, relabel), (1, false), "{label}");
            assert_eq!(&out.unwrap()[..], b"\xc9milie: [REDACTED:us_ssn] \xff");
        }
        // Unchanged: the body goes on as it came.
        let (out, n, _) = ct("latin1").mask(b"caf\xe9", text_mask(&m)).unwrap();
        assert_eq!((out, n), (None, 0));
        assert_eq!(
            Charset::Windows1252.decode(b"\x80\x9f\xa0"),
            "\u{20ac}\u{178}\u{a0}"
        );
    }

    #[test]
    fn what_does_not_fit_goes_as_utf8_and_other_charsets_only_as_ascii() {
        let m = masker();
        // JSON with an escape: the re-serialised text has a character Latin-1 lacks.
        let json = |b: &[u8]| {
            crate::protocols::http::mask::mask_body(&m, &[], super::super::mask::BodyKind::Json, b)
        };
        let body = b"{\"n\":\"\\u4e2d \xe9 a@example.org\"}";
        let (out, n, relabel) = Charset::Latin1.mask(body, json).unwrap();
        assert_eq!((n, relabel), (1, true));
        assert_eq!(
            std::str::from_utf8(&out.unwrap()).unwrap(),
            "{\"n\":\"\u{4e2d} \u{e9} [REDACTED:email]\"}"
        );
        assert_eq!(
            utf8_content_type("application/json; Charset=\"ISO-8859-1\"; q=1"),
            "application/json; charset=utf-8; q=1"
        );
        // Another single- or multi-byte charset: ASCII only, else withheld.
        let koi8 = declared(Some("text/plain; charset=koi8-r")).unwrap();
        assert_eq!(koi8, Charset::Other("koi8-r".into()));
        let (out, n, relabel) = koi8.mask(b"x a@example.org", text_mask(&m)).unwrap();
        assert_eq!(
            (&out.unwrap()[..], n, relabel),
            (&b"x [REDACTED:email]"[..], 1, false)
        );
        assert_eq!(
            koi8.mask(b"\xf0\xd2\xc9 a@example.org", text_mask(&m)),
            Err(MaskError::NotDecoded("koi8-r".into()))
        );
        assert!(declared(Some("text/plain; charset=latin1; charset=utf-8")).is_err());
        assert_eq!(declared(Some("text/plain")), Ok(Charset::Utf8));
        // Bytes over 0x7F are text in a declared single-byte charset.
        assert!(Charset::Latin1.looks_binary(b"\0x"));
        assert!(!Charset::Latin1.looks_binary(b"caf\xe9"));
        assert!(Charset::Utf8.looks_binary(b"caf\xe9 ok"));
    }
}
