//! Serde helpers that validate *inside* deserialization, so serde_yaml puts a line and column on the error.
//!
//! serde_yaml attaches the location of the value being deserialized to any
//! error raised while its `deserialize_*` call is still running (including
//! errors raised by our visitors). Checks done after `T::deserialize` has
//! returned would only get the location of some enclosing value, so the
//! helpers here run them from within `visit_map`/`visit_seq`/key seeds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A mapping type with checks beyond what its derived `Deserialize` does.
pub(crate) trait Checked: for<'de> Deserialize<'de> {
    /// Shown in "invalid type: ..., expected EXPECTING".
    const EXPECTING: &'static str;
    /// Same, for a list of these.
    const EXPECTING_LIST: &'static str = "a list";
    /// Name of the list holding these values (for duplicate messages), e.g. "rules".
    const LIST: &'static str = "list";
    /// Error for an empty list, when an empty list is not allowed.
    const EMPTY_LIST: Option<&'static str> = None;

    /// Checks the value as a whole (e.g. "exactly one of ...").
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// A key that must be unique within the list: (what, key), e.g. ("rule name", "allow-x").
    fn unique_key(&self) -> Option<(&'static str, &str)> {
        None
    }
}

/// Deserializes one checked mapping.
pub(crate) fn checked<'de, D: Deserializer<'de>, T: Checked>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(MapVisitor::<T> {
        seen: None,
        index: 0,
        _t: PhantomData,
    })
}

/// Deserializes a list of checked mappings, each checked where it stands;
/// enforces `T::unique_key` and `T::EMPTY_LIST`.
pub(crate) fn checked_list<'de, D: Deserializer<'de>, T: Checked>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(ListVisitor::<T>(PhantomData))
}

struct MapVisitor<'s, T> {
    seen: Option<&'s mut HashMap<String, usize>>,
    index: usize,
    _t: PhantomData<T>,
}

impl<'de, T: Checked> Visitor<'de> for MapVisitor<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let value = T::deserialize(MapAccessDeserializer::new(map))?;
        value.check().map_err(de::Error::custom)?;
        if let (Some(seen), Some((what, key))) = (self.seen, value.unique_key()) {
            if let Some(first) = seen.get(key) {
                return Err(de::Error::custom(format!(
                    "duplicate {what} {key:?} (already used by {}[{first}]); {what}s must be unique",
                    T::LIST
                )));
            }
            seen.insert(key.to_owned(), self.index);
        }
        Ok(value)
    }
}

impl<'de, T: Checked> DeserializeSeed<'de> for MapVisitor<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Checked> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING_LIST)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        loop {
            let seed = MapVisitor::<T> {
                seen: Some(&mut seen),
                index: out.len(),
                _t: PhantomData,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        if out.is_empty() {
            if let Some(msg) = T::EMPTY_LIST {
                return Err(de::Error::custom(msg));
            }
        }
        Ok(out)
    }
}

/// Checks a name: non-empty, only `[a-z0-9_.-]`.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
    {
        return Err(format!(
            "{what} {name:?} contains {c:?}; names may only use a-z, 0-9, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// Deserializes the `identities` mapping `name -> V`, rejecting bad and
/// duplicate names (YAML would otherwise let the last one win silently). Keys
/// are checked in a key seed, so the error points at the offending key.
pub(crate) fn identity_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    d.deserialize_map(NamedMapVisitor::<V>(IDENTITY_NAME, PhantomData))
}

/// Deserializes the `resources` mapping `name -> V` like `identity_map`.
pub(crate) fn resource_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    d.deserialize_map(NamedMapVisitor::<V>("resource name", PhantomData))
}

/// Deserializes the `http_services` mapping `name -> V` like `identity_map`; each service
/// is checked where it stands.
pub(crate) fn service_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Checked,
{
    d.deserialize_map(NamedMapVisitor::<CheckedValue<V>>(
        "service name",
        PhantomData,
    ))
    .map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// A value deserialized with `checked`.
struct CheckedValue<V>(V);

impl<'de, V: Checked> Deserialize<'de> for CheckedValue<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d).map(CheckedValue)
    }
}

const IDENTITY_NAME: &str = "identity name";

struct NamedMapVisitor<V>(&'static str, PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for NamedMapVisitor<V> {
    type Value = BTreeMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a mapping from {} to its definition", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            seen: &out,
            what: self.0,
        })? {
            let value = map.next_value::<V>()?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

struct KeySeed<'s, V> {
    seen: &'s BTreeMap<String, V>,
    what: &'static str,
}

impl<'de, V> DeserializeSeed<'de> for KeySeed<'_, V> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, V> Visitor<'de> for KeySeed<'_, V> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let article = if self.what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        write!(f, "{article} {}", self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        let what = self.what;
        check_name(what, v).map_err(E::custom)?;
        if self.seen.contains_key(v) {
            return Err(E::custom(format!(
                "duplicate {what} {v:?}; {what}s must be unique"
            )));
        }
        Ok(v.to_owned())
    }
}
