//! `PortSet`: destination ports of a rule, parsed from "7000-7010,8080", 443 or [80, "8000-8100"].

use std::fmt;

use schemars::gen::SchemaGenerator;
use schemars::schema::{
    ArrayValidation, InstanceType, Metadata, NumberValidation, Schema, SchemaObject,
    StringValidation, SubschemaValidation,
};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A non-empty set of TCP ports (1..=65535), kept as sorted, merged,
/// inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

/// Regex (for the JSON schema) of the string form.
const PORT_LIST_PATTERN: &str = r"^\s*[0-9]+(\s*-\s*[0-9]+)?(\s*,\s*[0-9]+(\s*-\s*[0-9]+)?)*\s*$";

impl PortSet {
    /// Parses a comma separated list of ports and inclusive ranges, e.g.
    /// `"7000-7010, 8080"`. Whitespace around items is ignored.
    pub fn parse(text: &str) -> Result<PortSet, String> {
        let mut set = PortSet { ranges: Vec::new() };
        set.add_str(text)?;
        set.normalize();
        Ok(set)
    }

    /// A set holding exactly the given ports and ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> Result<PortSet, String> {
        let mut set = PortSet { ranges: Vec::new() };
        for (lo, hi) in ranges {
            set.add_range(u64::from(lo), u64::from(hi))?;
        }
        if set.ranges.is_empty() {
            return Err(EMPTY.to_owned());
        }
        set.normalize();
        Ok(set)
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        // Ranges are sorted and disjoint: find the last range starting <= port.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= port);
        i > 0 && port <= self.ranges[i - 1].1
    }

    /// The sorted, merged inclusive ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    fn add_str(&mut self, text: &str) -> Result<(), String> {
        let bad = |why: String| format!("invalid port list {text:?}: {why}");
        if text.trim().is_empty() {
            return Err(bad(EMPTY.to_owned()));
        }
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(bad("empty item (stray comma?)".to_owned()));
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (number(lo.trim()), number(hi.trim())),
                None => (number(item), number(item)),
            };
            let lo = lo.map_err(&bad)?;
            let hi = hi.map_err(&bad)?;
            self.add_range(lo, hi).map_err(&bad)?;
        }
        Ok(())
    }

    fn add_port(&mut self, port: i128) -> Result<(), String> {
        if port < 0 {
            return Err(format!("port {port} is out of range (ports are 1..=65535)"));
        }
        let port = u64::try_from(port).unwrap_or(u64::MAX);
        self.add_range(port, port)
    }

    fn add_range(&mut self, lo: u64, hi: u64) -> Result<(), String> {
        for p in [lo, hi] {
            if p == 0 {
                return Err("port 0 is not allowed (ports are 1..=65535)".to_owned());
            }
            if p > 65535 {
                return Err(format!("port {p} is out of range (ports are 1..=65535)"));
            }
        }
        if lo > hi {
            return Err(format!(
                "port range {lo}-{hi} is reversed (write {hi}-{lo})"
            ));
        }
        // Both fit in u16: checked above.
        self.ranges.push((lo as u16, hi as u16));
        Ok(())
    }

    fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(self.ranges.len());
        for &(lo, hi) in &self.ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.ranges = merged;
    }
}

const EMPTY: &str = "empty port list (omit `ports` to match every port)";

fn number(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("missing port number in range".to_owned());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port number"));
    }
    // All digits: the only possible failure is overflow, which is out of range anyway.
    Ok(s.parse::<u64>().unwrap_or(u64::MAX))
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for PortSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PortSet::parse(s)
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// Validation happens in the visitor methods, i.e. while serde_yaml still
// knows which scalar is being read, so errors carry its line and column.
impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortSetVisitor)
    }
}

struct PortSetVisitor;

impl<'de> Visitor<'de> for PortSetVisitor {
    type Value = PortSet;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port (443), a port list string (\"7000-7010,8080\") or a list of those")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSet, E> {
        self.visit_i128(i128::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSet, E> {
        self.visit_i128(i128::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<PortSet, E> {
        let mut set = PortSet { ranges: Vec::new() };
        set.add_port(v).map_err(E::custom)?;
        Ok(set)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSet, E> {
        PortSet::parse(v).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortSet, A::Error> {
        let mut set = PortSet { ranges: Vec::new() };
        while let Some(item) = seq.next_element::<PortSet>()? {
            set.ranges.extend(item.ranges);
        }
        if set.ranges.is_empty() {
            return Err(de::Error::custom(EMPTY));
        }
        set.normalize();
        Ok(set)
    }
}

impl JsonSchema for PortSet {
    fn schema_name() -> String {
        "PortSet".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        let port = || -> Schema {
            SchemaObject {
                instance_type: Some(InstanceType::Integer.into()),
                number: Some(Box::new(NumberValidation {
                    minimum: Some(1.0),
                    maximum: Some(65535.0),
                    ..Default::default()
                })),
                ..Default::default()
            }
            .into()
        };
        let list = || -> Schema {
            SchemaObject {
                instance_type: Some(InstanceType::String.into()),
                string: Some(Box::new(StringValidation {
                    pattern: Some(PORT_LIST_PATTERN.to_owned()),
                    ..Default::default()
                })),
                ..Default::default()
            }
            .into()
        };
        let item = || -> Schema {
            SchemaObject {
                subschemas: Some(Box::new(SubschemaValidation {
                    any_of: Some(vec![port(), list()]),
                    ..Default::default()
                })),
                ..Default::default()
            }
            .into()
        };
        let array: Schema = SchemaObject {
            instance_type: Some(InstanceType::Array.into()),
            array: Some(Box::new(ArrayValidation {
                items: Some(item().into()),
                min_items: Some(1),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into();
        SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "Destination ports: a port number (443), a string of ports and inclusive \
                     ranges (\"7000-7010,8080\"), or a list of numbers/strings. Ports are 1..=65535."
                        .to_owned(),
                ),
                ..Default::default()
            })),
            subschemas: Some(Box::new(SubschemaValidation {
                any_of: Some(vec![port(), list(), array]),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Result<PortSet, String> {
        serde_yaml::from_str::<PortSet>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_strings() {
        let p = PortSet::parse("7000-7010,8080").unwrap();
        assert_eq!(p.ranges(), &[(7000, 7010), (8080, 8080)]);
        assert_eq!(p.to_string(), "7000-7010,8080");
        let p = PortSet::parse(" 443 , 80 ,81-82, 1 - 3 ").unwrap();
        assert_eq!(p.to_string(), "1-3,80-82,443");
        assert_eq!(PortSet::parse("65535").unwrap().ranges(), &[(65535, 65535)]);
        assert_eq!(PortSet::parse("1-65535").unwrap().to_string(), "1-65535");
    }

    #[test]
    fn merges_overlaps() {
        let p = PortSet::parse("10-20,15-30,31,5").unwrap();
        assert_eq!(p.ranges(), &[(5, 5), (10, 31)]);
        let p = PortSet::from_ranges([(8, 9), (1, 2)]).unwrap();
        assert_eq!(p.to_string(), "1-2,8-9");
    }

    #[test]
    fn contains() {
        let p = PortSet::parse("7000-7010,8080,22").unwrap();
        for port in [22, 7000, 7005, 7010, 8080] {
            assert!(p.contains(port), "{port}");
        }
        for port in [1, 21, 23, 6999, 7011, 8079, 8081, 65535] {
            assert!(!p.contains(port), "{port}");
        }
    }

    #[test]
    fn rejects_bad_strings() {
        let cases = [
            ("0", "port 0 is not allowed"),
            ("65536", "port 65536 is out of range"),
            ("99999999999999999999999", "out of range"),
            (
                "8000-7000",
                "port range 8000-7000 is reversed (write 7000-8000)",
            ),
            ("80,,443", "empty item"),
            ("80,", "empty item"),
            ("", "empty port list"),
            ("  ", "empty port list"),
            ("http", "\"http\" is not a port number"),
            ("-5", "missing port number"),
            ("7000-", "missing port number"),
            ("1-2-3", "\"2-3\" is not a port number"),
            ("+80", "is not a port number"),
        ];
        for (text, want) in cases {
            let err = PortSet::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(
                err.starts_with(&format!("invalid port list {text:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn deserializes_all_forms() {
        assert_eq!(yaml("443").unwrap().to_string(), "443");
        assert_eq!(
            yaml("\"7000-7010,8080\"").unwrap().to_string(),
            "7000-7010,8080"
        );
        assert_eq!(yaml("7000-7010").unwrap().to_string(), "7000-7010");
        assert_eq!(
            yaml("[443, 80, \"8000-8002\"]").unwrap().to_string(),
            "80,443,8000-8002"
        );
        assert_eq!(yaml("- 22\n- 2222\n").unwrap().to_string(), "22,2222");
    }

    #[test]
    fn deserialize_errors_have_locations() {
        let err = yaml("[80, 0]").unwrap_err();
        assert!(err.contains("port 0 is not allowed"), "{err}");
        assert!(err.contains("line 1 column 6"), "{err}");
        assert!(yaml("70000")
            .unwrap_err()
            .contains("port 70000 is out of range"));
        assert!(yaml("-1").unwrap_err().contains("port -1 is out of range"));
        assert!(yaml("[]").unwrap_err().contains("empty port list"));
        assert!(yaml("1.5").unwrap_err().contains("invalid type"));
        assert!(yaml("{a: 1}").unwrap_err().contains("invalid type"));
    }
}
