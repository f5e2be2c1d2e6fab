//! The policy's scalar values with hand-written serde and JSON-schema forms: `Action`,
//! `Version`, `Name`, `IdentityRef`, `IdList` (one value or a list of them).

use std::fmt;

use schemars::gen::SchemaGenerator;
use schemars::schema::{
    ArrayValidation, InstanceType, Metadata, Schema, SchemaObject, SubschemaValidation,
};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::de::check_name;
use super::net::{string_schema, StrVisitor};

/// `allow` or `deny` (`hold` exists for `sql_rules` only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    #[default]
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        "hold" => Err(
            "action `hold` applies to statements and requests (`sql_rules`), not to \
             connections; use `allow` or `deny`"
                .to_owned(),
        ),
        other => Err(format!(
            "unknown action {other:?}, expected `allow` or `deny`"
        )),
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("`allow` or `deny`", parse_action))
    }
}

impl JsonSchema for Action {
    fn schema_name() -> String {
        "Action".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "allow: connect to the destination; deny: refuse the connection.".to_owned(),
                ),
                ..Default::default()
            })),
            instance_type: Some(InstanceType::String.into()),
            enum_values: Some(vec!["allow".into(), "deny".into()]),
            ..Default::default()
        }
        .into()
    }
}

/// The format version. Only 1 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version;

impl Version {
    pub const CURRENT: u64 = 1;
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(Version::CURRENT)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the version number 1")
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Version, E> {
                Err(E::custom(format!(
                    "unsupported policy version {v} (this interceptor understands version 1)"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                if v == Version::CURRENT {
                    Ok(Version)
                } else {
                    Err(E::custom(format!(
                        "unsupported policy version {v} (this interceptor understands version 1)"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "unsupported policy version {v} (this interceptor understands version 1)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Version {
    fn schema_name() -> String {
        "Version".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some("Policy format version; only 1 exists.".to_owned()),
                ..Default::default()
            })),
            instance_type: Some(InstanceType::Integer.into()),
            enum_values: Some(vec![1.into()]),
            ..Default::default()
        }
        .into()
    }
}

/// A rule name: non-empty, a-z, 0-9, '_', '.', '-'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(pub(crate) String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, String> {
        check_name("rule name", s)?;
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("a rule name", Name::parse))
    }
}

pub(super) const NAME_PATTERN: &str = "^[a-z0-9_.-]+$";

impl JsonSchema for Name {
    fn schema_name() -> String {
        "Name".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        string_schema("A name: a-z, 0-9, '_', '.', '-'.", Some(NAME_PATTERN))
    }
}

/// One identity name or a non-empty list of names (any of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRef(pub Vec<String>);

impl Serialize for IdentityRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for IdentityRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdentityRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an identity name or a list of identity names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdentityRef, E> {
                check_name("identity name", v).map_err(E::custom)?;
                Ok(IdentityRef(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdentityRef, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<IdentityName>()? {
                    if !names.contains(&n.0) {
                        names.push(n.0);
                    }
                }
                if names.is_empty() {
                    return Err(de::Error::custom(
                        "empty identity list (omit `identity` to match any process)",
                    ));
                }
                Ok(IdentityRef(names))
            }
        }
        d.deserialize_any(V)
    }
}

struct IdentityName(String);

impl<'de> Deserialize<'de> for IdentityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn parse(s: &str) -> Result<IdentityName, String> {
            check_name("identity name", s)?;
            Ok(IdentityName(s.to_owned()))
        }
        d.deserialize_str(StrVisitor("an identity name", parse))
    }
}

impl JsonSchema for IdentityRef {
    fn schema_name() -> String {
        "IdentityRef".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        let name = || string_schema("Name of an entry of `identities`.", Some(NAME_PATTERN));
        one_or_many(
            "An identity name, or a list of names (any of).",
            name(),
            name(),
        )
    }
}

/// A user or group id, or a non-empty list of them (any of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<u32>);

impl IdList {
    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }
}

impl Serialize for IdList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_u32(*one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id (0..=4294967295) or a list of ids")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdList, E> {
                u32::try_from(v)
                    .map(|v| IdList(vec![v]))
                    .map_err(|_| E::custom(format!("id {v} is out of range (0..=4294967295)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdList, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "id {v} is out of range (0..=4294967295)"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdList, A::Error> {
                let mut ids = Vec::new();
                while let Some(one) = seq.next_element::<IdList>()? {
                    ids.extend(one.0);
                }
                if ids.is_empty() {
                    return Err(de::Error::custom(
                        "empty id list (omit the field to match any id)",
                    ));
                }
                ids.sort_unstable();
                ids.dedup();
                Ok(IdList(ids))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for IdList {
    fn schema_name() -> String {
        "IdList".to_owned()
    }

    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        one_or_many(
            "A numeric id, or a list of ids (any of).",
            gen.subschema_for::<u32>(),
            gen.subschema_for::<u32>(),
        )
    }
}

fn one_or_many(description: &str, one: Schema, item: Schema) -> Schema {
    let many: Schema = SchemaObject {
        instance_type: Some(InstanceType::Array.into()),
        array: Some(Box::new(ArrayValidation {
            items: Some(item.into()),
            min_items: Some(1),
            ..Default::default()
        })),
        ..Default::default()
    }
    .into();
    SchemaObject {
        metadata: Some(Box::new(Metadata {
            description: Some(description.to_owned()),
            ..Default::default()
        })),
        subschemas: Some(Box::new(SubschemaValidation {
            any_of: Some(vec![one, many]),
            ..Default::default()
        })),
        ..Default::default()
    }
    .into()
}
