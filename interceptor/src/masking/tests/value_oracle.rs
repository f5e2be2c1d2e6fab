//! The former masking of JSON, kept as the reference of the text-based one: the document
//! parsed into a `serde_json::Value` (numbers through `f64`, keys sorted, the last duplicate
//! kept), walked, and written out again. `old_mask` is what `Masker::mask_json(&mut Value)`
//! and the HTTP callers did until JSON was masked in place.

use serde_json::{Map, Value};

use super::super::json::{advance, ruled, State, Step};
use super::super::replace::{self, HmacSha256};
use super::super::{columns, FieldRule, Masker, Strategy};

/// The former `Masker::mask_json`.
pub(crate) fn old_mask_json(m: &Masker, value: &mut Value, field_rules: &[FieldRule]) -> usize {
    let detect = |s: &str| m.mask_text(s);
    let mut walk = Walk {
        rules: field_rules,
        mac: &m.mac,
        detect: &detect,
        count: 0,
    };
    walk.run(value);
    walk.count
}

/// The former HTTP masking of a JSON body: `Err` when it does not parse, `Ok(None)` when
/// nothing was masked and no key was duplicated, else the body written out again.
pub(crate) fn old_mask(
    m: &Masker,
    text: &[u8],
    field_rules: &[FieldRule],
) -> Result<Option<(Vec<u8>, usize)>, String> {
    let (mut v, dup) = parse_json(text).map_err(|e| e.to_string())?;
    let n = old_mask_json(m, &mut v, field_rules);
    if n == 0 && !dup {
        return Ok(None);
    }
    serde_json::to_vec(&v)
        .map(|out| Some((out, n)))
        .map_err(|e| e.to_string())
}

/// `serde_json::from_slice`, and whether an object had a duplicate key.
fn parse_json(body: &[u8]) -> serde_json::Result<(Value, bool)> {
    use serde::de::DeserializeSeed;
    let dup = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = JsonSeed(&dup).deserialize(&mut de)?;
    de.end()?;
    Ok((v, dup.get()))
}

#[derive(Clone, Copy)]
struct JsonSeed<'a>(&'a std::cell::Cell<bool>);

impl<'de> serde::de::DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            if out.insert(k, v).is_some() {
                self.0.set(true);
            }
        }
        Ok(Value::Object(out))
    }
}

/// The walk of the former `Masker::mask_json`, unchanged but for `ruled`.
struct Walk<'a> {
    pub rules: &'a [FieldRule],
    pub mac: &'a HmacSha256,
    pub detect: &'a dyn Fn(&str) -> Option<(String, usize)>,
    pub count: usize,
}

impl Walk<'_> {
    fn run(&mut self, v: &mut Value) {
        let states: Vec<State> = (0..self.rules.len()).map(|r| (r, 0)).collect();
        self.node(v, None, &states);
    }

    fn node(&mut self, v: &mut Value, key: Option<&str>, states: &[State]) {
        if let Some(r) = ruled(self.rules, states) {
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
        let prefix = columns::hash_prefix(key.unwrap_or(""));
        let mut out = Vec::with_capacity(text.len() + 8);
        replace::push_whole(&mut out, strategy, self.mac, &prefix, text.as_bytes());
        *v = Value::String(
            String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        );
        true
    }
}
