//! The policy document as written in YAML (`PolicyDoc` and its parts), with serde and JSON-schema derives.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;

use schemars::gen::SchemaGenerator;
use schemars::schema::{
    ArrayValidation, InstanceType, Metadata, Schema, SchemaObject, SubschemaValidation,
};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::de::{check_name, checked_list, identity_map, Checked};
use super::glob::{CommPattern, Pattern};
use super::net::{string_schema, Cidr, HostName, StrVisitor};
use super::ports::PortSet;

/// Default for `dns_refresh_secs`.
pub const DEFAULT_DNS_REFRESH_SECS: u64 = 60;

/// An egress policy for the interceptor: who may connect where.
///
/// Rules are evaluated in order and the first rule whose identity and
/// destination both match decides; when none matches, `default` decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Interceptor egress policy")]
pub struct PolicyDoc {
    /// Format version; must be 1.
    pub version: Version,
    /// How often DNS names used in `host:` destinations are re-resolved, in
    /// seconds (default 60).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "refresh_secs"
    )]
    pub dns_refresh_secs: Option<NonZeroU64>,
    /// Named selectors of the calling process, referenced by rules.
    /// Names use a-z, 0-9, '_', '.', '-'.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "identity_map"
    )]
    pub identities: BTreeMap<String, Identity>,
    /// Rules, evaluated in order; the first match wins.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "checked_list"
    )]
    pub rules: Vec<Rule>,
    /// What happens to a connection no rule matches (default: deny).
    #[serde(default)]
    pub default: Action,
    /// Protected resources (PostgreSQL databases), by name. Connections to a resource's
    /// address and port are spoken to in its protocol; they still need an `allow` rule.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::de::resource_map"
    )]
    pub resources: BTreeMap<String, super::pg::Resource>,
    /// Rules for the statements sent to resources, evaluated in order; the first match
    /// wins; a statement no rule matches is denied.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "checked_list"
    )]
    pub sql_rules: Vec<super::pg::SqlRule>,
    /// Raw and packet sockets, and UDP destinations (kernel-enforced). Absent: all denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<super::sockets::Sockets>,
    /// DNS resolvers the agent may use through the DNS proxy, and the names it may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<super::sockets::Dns>,
    /// Token issuers (OIDC/JWT) for agent identities and approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::approvals::AuthDoc>,
    /// Who decides commands held by `hold` rules, and how long they wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<super::approvals::ApprovalsDoc>,
    /// HTTP(S) services, by name. Connections to a service's address and port are spoken
    /// to in HTTP; they still need an `allow` rule.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::de::service_map"
    )]
    pub http_services: BTreeMap<String, super::http::HttpService>,
    /// Rules for the requests sent to HTTP services, evaluated in order; the first match
    /// wins; a request no rule matches is denied.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "checked_list"
    )]
    pub http_rules: Vec<super::http::HttpRule>,
}

impl Checked for PolicyDoc {
    const EXPECTING: &'static str =
        "a policy mapping with `version: 1` and optionally `identities`, `rules`, `default`, `resources`, `sql_rules`, `http_services`, `http_rules`, `sockets`, `dns`, `auth`, `approvals`";
}

/// Selects calling processes. Every field given must match; a field left
/// out matches anything, so an empty identity (`{}`) matches every process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Glob on the cgroup v2 path relative to the cgroup2 mount root, e.g.
    /// "/interceptor/**" matches "/interceptor/run-1234". Must start with
    /// '/' (or a wildcard). Does not match when the cgroup is unknown.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "path_pattern"
    )]
    pub cgroup: Option<Pattern>,
    /// User id(s) of the process: a number or a list (any of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<IdList>,
    /// Group id(s) of the process: a number or a list (any of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<IdList>,
    /// Glob on the executable path (/proc/PID/exe), e.g. "/usr/bin/python3*".
    /// Must start with '/' (or a wildcard). Does not match when the
    /// executable could not be read.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "path_pattern"
    )]
    pub exe: Option<Pattern>,
    /// Glob on the process name (comm, at most 15 bytes), e.g. "python3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<CommPattern>,
    /// Glob on the subject (`sub` claim) of the agent's token (`run --token`). Does not
    /// match when the agent has no valid token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Pattern>,
    /// Groups (any of) the agent's token must carry. Does not match without a valid token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// One rule: if the caller matches `identity` and the destination matches
/// one of `to`, apply `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique rule name (a-z, 0-9, '_', '.', '-'); logged with every decision.
    pub name: Name,
    /// Identity name or list of names (any of). Absent: any process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityRef>,
    /// What to do with a matching connection.
    pub action: Action,
    /// Destinations; the rule matches if any entry matches. At least one.
    #[serde(deserialize_with = "checked_list")]
    #[schemars(length(min = 1))]
    pub to: Vec<Destination>,
    /// Free text logged with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Checked for Rule {
    const EXPECTING: &'static str = "a rule mapping (name, identity, action, to, reason)";
    const EXPECTING_LIST: &'static str = "a list of rules";
    const LIST: &'static str = "rules";

    fn unique_key(&self) -> Option<(&'static str, &str)> {
        Some(("rule name", &self.name.0))
    }
}

/// A destination: exactly one of `cidr`, `host` or `any: true`, optionally
/// restricted to `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// IPv4 or IPv6 network; a bare address means /32 or /128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// DNS name; matches the addresses it resolves to (re-resolved every
    /// dns_refresh_secs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// `true` matches every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    /// Ports this entry is limited to. Absent: all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortSet>,
}

impl Checked for Destination {
    const EXPECTING: &'static str =
        "a destination mapping (cidr, host or any, with optional ports)";
    const EXPECTING_LIST: &'static str =
        "a list of destinations (mappings with cidr, host or any, and optional ports)";
    const LIST: &'static str = "to";
    const EMPTY_LIST: Option<&'static str> = Some(
        "a rule needs at least one destination in `to` (use `- any: true` to match every destination)",
    );

    fn check(&self) -> Result<(), String> {
        if self.any == Some(false) {
            return Err("`any: false` matches nothing; remove it or use `any: true`".to_owned());
        }
        let given: Vec<&str> = [
            ("cidr", self.cidr.is_some()),
            ("host", self.host.is_some()),
            ("any", self.any.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        match given.len() {
            1 => Ok(()),
            0 => Err("a destination needs one of `cidr`, `host` or `any: true`".to_owned()),
            _ => Err(format!(
                "a destination takes exactly one of `cidr`, `host` or `any`, found {} \
                 (use separate `to` entries)",
                given.join(" and ")
            )),
        }
    }
}

impl fmt::Display for Destination {
    /// e.g. "127.0.0.2/32 ports 7000-7010", "host localhost ports 443", "any address all ports".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.cidr, &self.host) {
            (Some(c), _) => write!(f, "{c}")?,
            (None, Some(h)) => write!(f, "host {h}")?,
            (None, None) => f.write_str("any address")?,
        }
        match &self.ports {
            Some(p) => write!(f, " ports {p}"),
            None => f.write_str(" all ports"),
        }
    }
}

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

const NAME_PATTERN: &str = "^[a-z0-9_.-]+$";

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

/// `deserialize_with` for `dns_refresh_secs`: a positive number of seconds.
fn refresh_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroU64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<NonZeroU64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a positive number of seconds")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match NonZeroU64::new(v) {
                Some(n) => Ok(Some(n)),
                None => Err(E::custom("dns_refresh_secs must be at least 1")),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "dns_refresh_secs must be at least 1, not {v}"
                ))),
            }
        }
    }
    d.deserialize_any(V)
}

/// `deserialize_with` for a required path glob (e.g. `sockets.cgroups[].cgroup`).
pub(super) fn path_glob<'de, D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
    path_pattern(d).map(|p| p.expect("path_pattern returns Some"))
}

/// `deserialize_with` for `cgroup` and `exe`: a glob on an absolute path.
fn path_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Pattern>, D::Error> {
    fn parse(s: &str) -> Result<Pattern, String> {
        if !s.starts_with(['/', '*', '?', '[', '{']) {
            return Err(format!(
                "path glob {s:?} must start with '/' (paths are absolute; cgroup paths are \
                 relative to the cgroup2 mount root, e.g. \"/interceptor/**\")"
            ));
        }
        Pattern::parse(s)
    }
    d.deserialize_str(StrVisitor("a glob on an absolute path", parse))
        .map(Some)
}

/// Adds to the derived schema what the derives cannot express: a destination
/// has exactly one of `cidr`, `host`, `any` (and `any` can only be `true`),
/// and identity names follow the name pattern.
pub(crate) fn refine_schema(
    mut root: schemars::schema::RootSchema,
) -> schemars::schema::RootSchema {
    use schemars::schema::ObjectValidation;
    let required = |key: &str| -> Schema {
        SchemaObject {
            object: Some(Box::new(ObjectValidation {
                required: [key.to_owned()].into(),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    };
    if let Some(Schema::Object(dest)) = root.definitions.get_mut("Destination") {
        dest.subschemas().one_of = Some(vec![required("cidr"), required("host"), required("any")]);
        if let Some(Schema::Object(any)) = dest.object().properties.get_mut("any") {
            any.enum_values = Some(vec![true.into()]);
        }
    }
    if let Some(Schema::Object(ids)) = root.schema.object().properties.get_mut("identities") {
        ids.object().property_names = Some(Box::new(string_schema(
            "An identity name: a-z, 0-9, '_', '.', '-'.",
            Some(NAME_PATTERN),
        )));
    }
    root
}
