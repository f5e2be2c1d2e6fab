//! JSON field paths (`$.users[*].email`, `users.*.email`, `$..email`) and how the walk of
//! `json_text` matches them, one step (object key or array index) at a time.

use std::fmt;
use std::str::FromStr;

use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::FieldRule;
use super::MaskingError;

/// A parsed JSON field path.
///
/// Syntax: an optional leading `$`, then segments: `.name` (or a bare
/// `name` first), `.*` or `[*]` (any member or element), `[3]` (one array
/// element), `['odd.name']` / `["odd.name"]`, and `..name` / `..*`
/// (at any depth below). Examples: `$.users[*].email`, `users.*.email`,
/// `$..ssn`, `$.items[0].card`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Any,
    Index(usize),
    /// The next segment may match at any depth.
    Descend,
}

impl FieldPath {
    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for FieldPath {
    type Err = MaskingError;

    fn from_str(text: &str) -> Result<FieldPath, MaskingError> {
        let err = |reason: &str| MaskingError::FieldPath {
            path: text.to_owned(),
            reason: reason.to_owned(),
        };
        let b = text.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        let mut first = true;
        if b.first() == Some(&b'$') {
            i = 1;
            first = false;
        }
        while i < b.len() {
            let name_expected = match b[i] {
                b'.' if b.get(i + 1) == Some(&b'.') => {
                    segs.push(Seg::Descend);
                    i += 2;
                    true
                }
                b'.' => {
                    i += 1;
                    true
                }
                b'[' => {
                    let close = text[i..].find(']').ok_or_else(|| err("`[` without `]`"))? + i;
                    let inner = &text[i + 1..close];
                    let seg = if inner == "*" {
                        Seg::Any
                    } else if let Ok(n) = inner.parse::<usize>() {
                        Seg::Index(n)
                    } else if inner.len() >= 2
                        && (inner.starts_with('\'') && inner.ends_with('\'')
                            || inner.starts_with('"') && inner.ends_with('"'))
                    {
                        Seg::Key(inner[1..inner.len() - 1].to_owned())
                    } else {
                        return Err(err("inside `[...]` write `*`, an index or a quoted name"));
                    };
                    segs.push(seg);
                    i = close + 1;
                    false
                }
                _ if first => true,
                _ => return Err(err("expected `.`, `..` or `[` between segments")),
            };
            first = false;
            if name_expected {
                let len = text[i..].find(['.', '[']).unwrap_or(text.len() - i);
                let name = &text[i..i + len];
                if name.is_empty() {
                    if segs.last() == Some(&Seg::Descend) && b.get(i) == Some(&b'[') {
                        continue;
                    }
                    return Err(err("empty name"));
                }
                segs.push(if name == "*" {
                    Seg::Any
                } else {
                    Seg::Key(name.to_owned())
                });
                i += len;
            }
        }
        if segs.is_empty() {
            return Err(err("a path needs at least one segment"));
        }
        if segs.last() == Some(&Seg::Descend) {
            return Err(err("`..` must be followed by a name"));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segs,
        })
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for FieldPath {
    fn schema_name() -> String {
        "FieldPath".to_owned()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        String::json_schema(gen)
    }
}

/// A child step of the walk.
#[derive(Clone, Copy)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `(rule, segment)`: rule `rule` has `segs[segment..]` left to match.
pub(crate) type State = (usize, usize);

/// The rule whose path ends at the value reached in `states` (the first one listed, when
/// several do).
pub(crate) fn ruled(rules: &[FieldRule], states: &[State]) -> Option<usize> {
    states
        .iter()
        .filter(|&&(r, i)| i == rules[r].path.segs.len())
        .map(|&(r, _)| r)
        .min()
}

/// Names match ASCII case-insensitively (`$..ssn` masks `"SSN"`), as column
/// globs do.
fn seg_matches(seg: &Seg, step: Step<'_>) -> bool {
    match (seg, step) {
        (Seg::Any, _) => true,
        (Seg::Key(k), Step::Key(s)) => k.eq_ignore_ascii_case(s),
        (Seg::Index(n), Step::Index(i)) => *n == i,
        _ => false,
    }
}

/// The states after one more `step` down from those in `states`.
pub(crate) fn advance(rules: &[FieldRule], states: &[State], step: Step<'_>, out: &mut Vec<State>) {
    out.clear();
    let push = |s: State, out: &mut Vec<State>| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for &(r, i) in states {
        let segs = &rules[r].path.segs;
        match segs.get(i) {
            None => {}
            Some(Seg::Descend) => {
                push((r, i), out);
                if seg_matches(&segs[i + 1], step) {
                    push((r, i + 2), out);
                }
            }
            Some(seg) if seg_matches(seg, step) => push((r, i + 1), out),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<Seg> {
        p.parse::<FieldPath>().unwrap().segs
    }

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_owned())
    }

    #[test]
    fn parse_paths() {
        assert_eq!(
            segs("$.users[*].email"),
            [key("users"), Seg::Any, key("email")]
        );
        assert_eq!(
            segs("users.*.email"),
            [key("users"), Seg::Any, key("email")]
        );
        assert_eq!(segs("$..email"), [Seg::Descend, key("email")]);
        assert_eq!(segs("$..[*]"), [Seg::Descend, Seg::Any]);
        assert_eq!(
            segs("$.items[0].card"),
            [key("items"), Seg::Index(0), key("card")]
        );
        assert_eq!(segs("$['a.b'][\"c\"]"), [key("a.b"), key("c")]);
        assert_eq!(segs("email"), [key("email")]);
        assert_eq!(segs("[*]"), [Seg::Any]);
    }

    #[test]
    fn bad_paths() {
        for p in [
            "", "$", "$.", "a..", "$.a[", "$.a[x]", "a.b$c[", "$.a.", "$a",
        ] {
            assert!(p.parse::<FieldPath>().is_err(), "{p:?}");
        }
    }
}
