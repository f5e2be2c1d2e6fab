//! Text that agents control (statements, process names, executable paths, cgroups, error
//! messages) made safe to print on a terminal: CLI commands that show it to an operator
//! pass every such field through [`printable`], so an agent cannot move the cursor, erase
//! or recolour lines, or forge lines of its own. JSON output is left as JSON.

use std::{borrow::Cow, fmt::Write};

/// Whether `c` must not reach a terminal as is: C0 controls, DEL, C1 controls, and the
/// Unicode characters that reorder or break displayed text (bidirectional overrides and
/// isolates, line and paragraph separators).
fn unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}'
        | '\u{61c}' | '\u{2028}' | '\u{2029}')
}

/// `text` with each control character written as a visible escape: `\n`, `\r`, `\t`,
/// `\x1b` for the other C0 controls and DEL, `\u{9b}` for C1 controls and the other
/// characters of [`unsafe_char`]. Everything else, ordinary Unicode included, is kept.
/// Borrows when there is nothing to escape.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c <= '\u{7f}' && unsafe_char(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_every_control_character_and_keeps_unicode() {
        assert_eq!(printable("SELECT 'é' -- 日本"), "SELECT 'é' -- 日本");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            printable("a\rb\nc\td\x1b[2K\x07\x7f\u{9b}31m\u{202e}z"),
            "a\\rb\\nc\\td\\x1b[2K\\x07\\x7f\\u{9b}31m\\u{202e}z"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let s = char::from_u32(c).unwrap().to_string();
            let p = printable(&s);
            assert!(p.chars().all(|c| !c.is_control()), "{c:#x} -> {p:?}");
        }
    }
}
