//! Masking JSON text in place: one pass over the document's bytes that tracks the path
//! (object keys, array indexes), masks what the field rules and detectors select, and
//! copies every other byte as it came.
//!
//! Nothing is parsed into a tree and written out again, so what is not masked keeps its
//! exact text: numbers of any size or precision (`12345678901234567890123`, `1e2`, `-0`,
//! `0.1000000000000000055`), the order of keys, whitespace, escapes, and duplicate keys
//! (each occurrence is masked on its own).
//!
//! What is masked, per value:
//! - a value at a path of a field rule (the first rule that matches wins) is replaced whole
//!   by a JSON string: the strategy applied to a string's decoded text, or to the text of a
//!   number or boolean as written; an object or array becomes `"[REDACTED]"` (`redact`,
//!   `partial`) or the hash of its compact JSON form with sorted keys (`hash`); `null`
//!   stays `null` and is not counted;
//! - every other string is scanned by the detectors (on its decoded text, so escapes such
//!   as `\u0040` hide nothing) and, with a hit, written again as a JSON string;
//! - every object key is scanned too: a key with a hit becomes its masked text, with
//!   `#2`, `#3`… added when that text is another key of the object, so two members never
//!   merge (occurrences of one duplicated key keep one name). Field rules see the keys as
//!   they came.
//!
//! The count is one per value or key changed. The document must be JSON as RFC 8259
//! writes it — what `serde_json` accepts, except that a number too large for an `f64`
//! (`1e400`) is accepted, since it is copied and never converted — nested at most
//! `MAX_DEPTH` deep, as `serde_json`'s recursion limit; anything else is a
//! `JsonTextError`.

mod keys;

use std::borrow::Cow;

use super::json::{advance, ruled, State, Step};
use super::model::{FieldRule, Strategy};
use super::replace::{self, HmacSha256};
use keys::Renamed;

/// The deepest nesting of objects and arrays accepted: one less than `serde_json`'s
/// default recursion limit (128), which refuses the 128th level.
pub const MAX_DEPTH: usize = 127;

/// Why a text is not a JSON document that can be masked. The messages follow `serde_json`'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonTextError {
    /// Not JSON: `what` at that place (1-based line, column in bytes).
    #[error("{what} at line {line} column {column}")]
    Syntax {
        what: &'static str,
        line: usize,
        column: usize,
    },
    /// Objects and arrays nested deeper than `MAX_DEPTH`.
    #[error("recursion limit exceeded at line {line} column {column}")]
    TooDeep { line: usize, column: usize },
}

/// What the walk applies: the field rules, the hash key and the detectors (decoded text in;
/// `None` when nothing was found, else the masked text).
pub(crate) struct Ctx<'a> {
    pub rules: &'a [FieldRule],
    pub mac: &'a HmacSha256,
    pub detect: &'a dyn Fn(&str) -> Option<(String, usize)>,
}

/// Masks the JSON document `text` (whitespace around it allowed). `Ok(None)`: nothing was
/// masked, the text goes on as it came; else the new text and the number of values and
/// keys masked.
pub(crate) fn mask(ctx: &Ctx<'_>, text: &[u8]) -> Result<Option<(Vec<u8>, usize)>, JsonTextError> {
    let src = utf8(text)?;
    let mut w = Walker::new(src, Some(ctx));
    let states: Vec<State> = (0..ctx.rules.len()).map(|r| (r, 0)).collect();
    w.document(&states)?;
    if w.count == 0 {
        return Ok(None);
    }
    let mut out = w.out;
    out.extend_from_slice(src.as_bytes().get(w.copied..).unwrap_or_default());
    Ok(Some((out, w.count)))
}

/// Checks that `text` is a JSON document `mask` takes, without masking anything.
pub fn check(text: &[u8]) -> Result<(), JsonTextError> {
    Walker::new(utf8(text)?, None).document(&[])
}

fn utf8(text: &[u8]) -> Result<&str, JsonTextError> {
    std::str::from_utf8(text)
        .map_err(|e| error_at(text, e.valid_up_to(), "invalid unicode code point"))
}

fn position(text: &[u8], at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let column = match before.iter().rposition(|&c| c == b'\n') {
        Some(nl) => at - nl,
        None => at + 1,
    };
    (line, column)
}

fn error_at(text: &[u8], at: usize, what: &'static str) -> JsonTextError {
    let (line, column) = position(text, at);
    JsonTextError::Syntax { what, line, column }
}

struct Walker<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    /// `None`: only checking.
    ctx: Option<&'a Ctx<'a>>,
    /// The masked text up to `copied` (nothing until the first replacement).
    out: Vec<u8>,
    copied: usize,
    count: usize,
    depth: usize,
}

impl<'a> Walker<'a> {
    fn new(src: &'a str, ctx: Option<&'a Ctx<'a>>) -> Self {
        Walker {
            src,
            b: src.as_bytes(),
            pos: 0,
            ctx,
            out: Vec::new(),
            copied: 0,
            count: 0,
            depth: 0,
        }
    }

    fn err(&self, what: &'static str) -> JsonTextError {
        error_at(self.b, self.pos, what)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.src.get(from..to).unwrap_or_default()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn document(&mut self, states: &[State]) -> Result<(), JsonTextError> {
        self.ws();
        self.value(None, states, self.ctx.is_some())?;
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.err("trailing characters")),
        }
    }

    /// Writes `src[copied..from]`, then `write`'s replacement of `src[from..pos]`, and
    /// counts one masked value.
    fn replace(&mut self, from: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.out
            .extend_from_slice(self.b.get(self.copied..from).unwrap_or_default());
        write(&mut self.out);
        self.copied = self.pos;
        self.count += 1;
    }

    /// One value at `pos`. `key`: the nearest member name above it (hash prefixes);
    /// `live`: masking (false inside a value a field rule replaces, and when checking).
    fn value(
        &mut self,
        key: Option<&str>,
        states: &[State],
        live: bool,
    ) -> Result<(), JsonTextError> {
        let ctx = self.ctx.filter(|_| live);
        let rule = ctx.and_then(|c| ruled(c.rules, states).map(|r| (c, c.rules[r].strategy)));
        let start = self.pos;
        match self.peek() {
            Some(open @ (b'{' | b'[')) => {
                let live = ctx.is_some() && rule.is_none();
                if open == b'{' {
                    self.object(states, live)?;
                } else {
                    self.array(key, states, live)?;
                }
                if let Some((ctx, strategy)) = rule {
                    // `partial` cannot keep part of an object: redacted.
                    let new = match strategy {
                        Strategy::Hash => {
                            let text = self.slice(start, self.pos);
                            let compact = serde_json::from_str::<serde_json::Value>(text)
                                .map_or_else(|_| text.to_owned(), |v| v.to_string());
                            whole(ctx, strategy, key, compact.as_bytes())
                        }
                        _ => String::from_utf8_lossy(replace::REDACTED).into_owned(),
                    };
                    self.replace(start, |out| push_string(out, &new));
                }
                return Ok(());
            }
            Some(b'"') => {
                let s = self.string()?;
                let new = match (rule, ctx) {
                    (Some((ctx, strategy)), _) => Some(whole(ctx, strategy, key, s.as_bytes())),
                    (None, Some(ctx)) => (ctx.detect)(&s).map(|(masked, _)| masked),
                    (None, None) => None,
                };
                if let Some(new) = new {
                    self.replace(start, |out| push_string(out, &new));
                }
                return Ok(());
            }
            // `null` stays, even at a ruled path.
            Some(b'n') => return self.literal(b"null"),
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.err("expected value")),
            None => return Err(self.err("EOF while parsing a value")),
        }
        // A number or boolean at a ruled path: the strategy on its text as written.
        if let Some((ctx, strategy)) = rule {
            let new = whole(ctx, strategy, key, self.slice(start, self.pos).as_bytes());
            self.replace(start, |out| push_string(out, &new));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), JsonTextError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let (line, column) = position(self.b, self.pos);
            return Err(JsonTextError::TooDeep { line, column });
        }
        self.pos += 1;
        self.ws();
        Ok(())
    }

    fn array(
        &mut self,
        key: Option<&str>,
        states: &[State],
        live: bool,
    ) -> Result<(), JsonTextError> {
        self.enter()?;
        let mut next = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        for i in 0.. {
            if let (true, Some(ctx)) = (live, self.ctx) {
                advance(ctx.rules, states, Step::Index(i), &mut next);
            }
            self.value(key, &next, live)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        return Err(self.err("trailing comma"));
                    }
                }
                Some(b']') => break,
                Some(_) => return Err(self.err("expected `,` or `]`")),
                None => return Err(self.err("EOF while parsing a list")),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    fn object(&mut self, states: &[State], live: bool) -> Result<(), JsonTextError> {
        let open = self.pos;
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        let mut next = Vec::new();
        let mut renamed: Vec<Renamed> = Vec::new();
        for member in 0.. {
            match self.peek() {
                Some(b'"') => {}
                Some(_) => return Err(self.err("key must be a string")),
                None => return Err(self.err("EOF while parsing an object")),
            }
            let kstart = self.pos;
            let key = self.string()?;
            if let (true, Some(ctx)) = (live, self.ctx) {
                if let Some((masked, _)) = (ctx.detect)(&key) {
                    let mut quote_at = 0;
                    self.replace(kstart, |out| {
                        push_string(out, &masked);
                        quote_at = out.len().saturating_sub(1);
                    });
                    renamed.push(Renamed {
                        member,
                        key: key.clone().into_owned(),
                        masked,
                        quote_at,
                    });
                }
                advance(ctx.rules, states, Step::Key(&key), &mut next);
            }
            self.ws();
            if self.peek() != Some(b':') {
                return Err(match self.peek() {
                    None => self.err("EOF while parsing an object"),
                    Some(_) => self.err("expected `:`"),
                });
            }
            self.pos += 1;
            self.ws();
            self.value(Some(&key), &next, live)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        return Err(self.err("trailing comma"));
                    }
                }
                Some(b'}') => break,
                Some(_) => return Err(self.err("expected `,` or `}`")),
                None => return Err(self.err("EOF while parsing an object")),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        if !renamed.is_empty() {
            self.suffix_collisions(open, renamed)?;
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonTextError> {
        for &c in word {
            match self.peek() {
                Some(x) if x == c => self.pos += 1,
                Some(_) => return Err(self.err("expected ident")),
                None => return Err(self.err("EOF while parsing a value")),
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - from
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), JsonTextError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.err("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(())
    }

    /// The string at `pos` (a `"`), decoded; `pos` ends after its closing quote.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonTextError> {
        self.pos += 1;
        let start = self.pos;
        let mut run = start;
        let mut owned: Option<String> = None;
        loop {
            match self.peek() {
                None => return Err(self.err("EOF while parsing a string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let text = self.slice(run, self.pos);
                    self.pos += 1;
                    let c = self.escape()?;
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(text);
                    s.push(c);
                    run = self.pos;
                }
                Some(0..=0x1f) => {
                    return Err(self
                        .err("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                Some(_) => self.pos += 1,
            }
        }
        let end = self.pos;
        self.pos += 1;
        Ok(match owned {
            None => Cow::Borrowed(self.slice(start, end)),
            Some(mut s) => {
                s.push_str(self.slice(run, end));
                Cow::Owned(s)
            }
        })
    }

    /// The character of the escape after a `\` at `pos`.
    fn escape(&mut self) -> Result<char, JsonTextError> {
        let c = match self.peek() {
            None => return Err(self.err("EOF while parsing a string")),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let hi = self.hex4()?;
                return match hi {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(c).ok_or_else(|| self.err("invalid unicode code point"))
                    }
                    0xDC00..=0xDFFF => Err(self.err("lone trailing surrogate in hex escape")),
                    _ => char::from_u32(hi).ok_or_else(|| self.err("invalid unicode code point")),
                };
            }
            Some(_) => return Err(self.err("invalid escape")),
        };
        self.pos += 1;
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32, JsonTextError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                Some(_) => return Err(self.err("invalid escape")),
                None => return Err(self.err("EOF while parsing a string")),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }
}

/// The replacement of a whole value by a field rule: `strategy` on `text`, hashes named
/// after `key`.
fn whole(ctx: &Ctx<'_>, strategy: Strategy, key: Option<&str>, text: &[u8]) -> String {
    let prefix = super::columns::hash_prefix(key.unwrap_or(""));
    let mut out = Vec::with_capacity(text.len() + 8);
    replace::push_whole(&mut out, strategy, ctx.mac, &prefix, text);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes `s` as a JSON string, escaped as `serde_json` does (`"`, `\` and control
/// characters; everything else as it is).
pub(crate) fn push_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[run..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}
