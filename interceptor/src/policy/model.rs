//! The policy document as written in YAML (`PolicyDoc` and its parts), with serde and JSON-schema derives.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;

use schemars::schema::{Schema, SchemaObject};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::de::{checked_list, identity_map, Checked};
use super::glob::{CommPattern, Pattern};
use super::net::{string_schema, Cidr, HostName, StrVisitor};
use super::ports::PortSet;
use super::scalars::{Action, IdList, IdentityRef, Name, Version, NAME_PATTERN};

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
