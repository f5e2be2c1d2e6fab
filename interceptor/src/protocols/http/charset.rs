//! Whether a body that must be masked is in an encoding the detectors can read. They
//! match ASCII patterns (`alice@example.com`, `123-45-6789`) in the bytes, so any
//! ASCII-compatible encoding works; in UTF-16 or UTF-32 every other byte is NUL and nothing
//! matches, while a client that honours the charset (or the byte order mark) reads it
//! all. Such a body is withheld rather than passed on unmasked.

use super::mask::MaskError;

/// ASCII-compatible charsets (lower case): the detectors see their ASCII as it is.
const ASCII_COMPATIBLE: &[&str] = &[
    "utf-8",
    "utf8",
    "us-ascii",
    "ascii",
    "latin1",
    "latin-1",
    "l1",
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

/// `Err` when the Content-Type names a charset that is not known to be ASCII-compatible
/// (`utf-16`, `utf-32`, `ucs-2`, `utf-7`, EBCDIC code pages, …).
pub fn declared(content_type: Option<&str>) -> Result<(), MaskError> {
    let Some(ct) = content_type else {
        return Ok(());
    };
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
    }
    Ok(())
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
            assert_eq!(declared(ok), Ok(()), "{ok:?}");
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
}
