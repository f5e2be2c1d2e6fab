//! JSON field paths (`$.users[*].email`, `users.*.email`, `$..email`) and the in-place walk of `Masker::mask_json`.

use std::fmt;
use std::str::FromStr;

use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::model::{FieldRule, Strategy};
use super::replace::{self, HmacSha256};
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
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `(rule, segment)`: rule `rule` has `segs[segment..]` left to match.
type State = (usize, usize);

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

fn advance(rules: &[FieldRule], states: &[State], step: Step<'_>, out: &mut Vec<State>) {
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

/// The walk of `Masker::mask_json`.
pub(crate) struct Walk<'a> {
    pub rules: &'a [FieldRule],
    pub mac: &'a HmacSha256,
    pub detect: &'a dyn Fn(&str) -> Option<(String, usize)>,
    pub count: usize,
}

impl Walk<'_> {
    pub(crate) fn run(&mut self, v: &mut Value) {
        let states: Vec<State> = (0..self.rules.len()).map(|r| (r, 0)).collect();
        self.node(v, None, &states);
    }

    fn node(&mut self, v: &mut Value, key: Option<&str>, states: &[State]) {
        if let Some(&(r, _)) = states
            .iter()
            .filter(|&&(r, i)| i == self.rules[r].path.segs.len())
            .min()
        {
            if self.apply(v, key, self.rules[r].strategy) {
                self.count += 1;
            }
            return;
        }
        match v {
            Value::String(s) => {
                if let Some((masked, _)) = (self.detect)(s) {
                    *s = masked;
                    self.count += 1;
                }
            }
            Value::Array(items) => {
                let mut next = Vec::new();
                for (i, item) in items.iter_mut().enumerate() {
                    advance(self.rules, states, Step::Index(i), &mut next);
                    self.node(item, key, &next);
                }
            }
            Value::Object(map) => {
                let mut next = Vec::new();
                for (k, item) in map.iter_mut() {
                    advance(self.rules, states, Step::Key(k), &mut next);
                    self.node(item, Some(k), &next);
                }
                self.keys(map);
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Runs the detectors on the keys of `map` (after its values were
    /// walked under their original keys): a key with a hit is replaced by
    /// its masked text, with `#2`, `#3`… added when that text is already a
    /// key (two members never merge).
    fn keys(&mut self, map: &mut Map<String, Value>) {
        let renamed: Vec<(String, String)> = map
            .keys()
            .filter_map(|k| (self.detect)(k).map(|(masked, _)| (k.clone(), masked)))
            .collect();
        if renamed.is_empty() {
            return;
        }
        self.count += renamed.len();
        let moved: Vec<(String, Value)> = renamed
            .into_iter()
            .filter_map(|(old, new)| map.remove(&old).map(|v| (new, v)))
            .collect();
        for (new, v) in moved {
            let mut key = new.clone();
            let mut n = 2;
            while map.contains_key(&key) {
                key = format!("{new}#{n}");
                n += 1;
            }
            map.insert(key, v);
        }
    }

    /// Replaces `v` whole; false for `null` (left as is).
    fn apply(&self, v: &mut Value, key: Option<&str>, strategy: Strategy) -> bool {
        let text = match v {
            Value::Null => return false,
            Value::String(s) => std::mem::take(s),
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            Value::Array(_) | Value::Object(_) => match strategy {
                Strategy::Hash => v.to_string(),
                _ => {
                    *v = Value::String(String::from_utf8_lossy(replace::REDACTED).into_owned());
                    return true;
                }
            },
        };
        let prefix = super::columns::hash_prefix(key.unwrap_or(""));
        let mut out = Vec::with_capacity(text.len() + 8);
        replace::push_whole(&mut out, strategy, self.mac, &prefix, text.as_bytes());
        *v = Value::String(
            String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        );
        true
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
