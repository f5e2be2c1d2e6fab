//! PostgreSQL resources and SQL rules: the `resources:` and `sql_rules:` sections.
//!
//! A resource names an upstream database (address, port, database, login and where its
//! secret comes from). Connections to a resource's address and port are spoken to in the
//! PostgreSQL protocol (they still need an L4 `allow` in `rules:`), and every statement is
//! decided by `sql_rules` (first match wins, default deny).

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::path::PathBuf;

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::de::{check_name, Checked};
use super::glob::Pattern;
use super::net::StrVisitor;
use super::scalars::{IdentityRef, Name};

/// Default upstream port.
pub const DEFAULT_PG_PORT: u16 = 5432;

/// A protected resource. Only PostgreSQL exists today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// A PostgreSQL server: the proxy speaks its protocol on both sides.
    #[serde(deserialize_with = "super::de::checked")]
    pub postgres: PostgresResource,
}

impl Checked for PostgresResource {
    const EXPECTING: &'static str = "a PostgreSQL resource mapping (address, port, database, user, password_file or password_env, tls, …)";

    fn check(&self) -> Result<(), String> {
        PostgresResource::check(self)
    }
}

/// An upstream PostgreSQL database and how the proxy logs in to it (the agent's own
/// user name and password are ignored: the agent is identified by the kernel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresResource {
    /// IP address (v4 or v6) the agent connects to; also where the proxy connects.
    pub address: IpAddr,
    /// Port (default 5432).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Upstream database. The database the agent asks for is ignored and replaced by this.
    pub database: String,
    /// Upstream login role.
    pub user: String,
    /// File (readable by the daemon) holding the password; one trailing newline is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable of the daemon holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Upstream TLS: disable, prefer (TLS when offered, unverified), require (TLS,
    /// unverified) or verify-full (TLS, certificate and name verified; the default).
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of CA certificates trusted for verify-full (default: the system's roots
    /// and the Mozilla roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name checked against the server certificate (default: the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Default row limit per statement when the deciding rule sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_limit: Option<NonZeroU64>,
    /// Largest message accepted from the agent, in bytes (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<NonZeroU64>,
    /// Longest query text the interceptor classifies, in bytes (default 128 KiB); a longer
    /// one is denied. Parsing takes memory in proportion (up to ~1 KB per byte of dense SQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_query_bytes: Option<NonZeroU64>,
    /// Idle upstream connections kept for reuse (default 8; 0 disables reuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// Seconds an idle upstream connection is kept (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_idle_secs: Option<NonZeroU64>,
    /// Masking of result values before the agent sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<crate::masking::MaskingDoc>,
    /// Volatile functions defined in the database that do not change data
    /// (`uuid_generate_v4`, `gen_random_bytes`): calling them does not make a statement a
    /// `write`. Globs matched like the `functions` of SQL rules: with a `.` against
    /// `schema.function`, without against the bare name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only_functions: Vec<Pattern>,
}

fn default_port() -> u16 {
    DEFAULT_PG_PORT
}

impl PostgresResource {
    /// Whether `qualified` (`schema.function`) is listed in `read_only_functions`.
    pub fn trusts_function(&self, qualified: &str) -> bool {
        self.read_only_functions
            .iter()
            .any(|p| super::sql_eval::name_matches(p, qualified))
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("port 0 is not a valid port".into());
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err("give at most one of `password_file` and `password_env`".into());
        }
        if self.database.is_empty() || self.user.is_empty() {
            return Err("`database` and `user` must not be empty".into());
        }
        if self.ca_file.is_some() && self.tls != TlsMode::VerifyFull {
            return Err(format!(
                "`ca_file` is only used with `tls: verify-full`, not `tls: {}`",
                self.tls
            ));
        }
        Ok(())
    }
}

/// Upstream TLS mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without verification; plain otherwise.
    Prefer,
    /// TLS, without verifying the certificate.
    Require,
    /// TLS; the certificate chain and the server name are verified.
    #[default]
    VerifyFull,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        })
    }
}

/// What a statement does, as classified by the SQL parser.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SqlOperation {
    /// Reads rows (SELECT, COPY TO, …).
    Read,
    /// Changes rows (INSERT, UPDATE, DELETE, MERGE, COPY FROM, …).
    Write,
    /// Changes the schema (CREATE, ALTER, DROP, …).
    Ddl,
    /// Roles, grants, server-side files and programs, superuser functions, …
    Privileged,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, …
    Transaction,
    /// SET, RESET, SHOW, DISCARD, …
    Session,
    /// Everything else that is harmless (EXPLAIN without ANALYZE, LISTEN, …).
    Utility,
}

impl SqlOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlOperation::Read => "read",
            SqlOperation::Write => "write",
            SqlOperation::Ddl => "ddl",
            SqlOperation::Privileged => "privileged",
            SqlOperation::Transaction => "transaction",
            SqlOperation::Session => "session",
            SqlOperation::Utility => "utility",
        }
    }
}

/// One SQL rule: for statements of `identity` on `resource`, matching the selectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRule {
    /// Unique name (a-z, 0-9, '_', '.', '-'); shown in denials and audit records.
    pub name: Name,
    /// Identity name or list of names (any of). Absent: any process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityRef>,
    /// Resource name or list of names (any of). Absent: every resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// allow, deny, or hold (wait for an approver; needs an `approvals` section).
    pub action: SqlAction,
    /// allow: every operation of the statement must be listed; deny: any listed one matches.
    /// Absent: any operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<SqlOperation>>,
    /// Table globs. allow: every table touched must match one; deny: any table matching
    /// one matches. A pattern without '.' is matched against the bare table name, one with
    /// '.' against `schema.table` (unqualified tables count as `public.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<Pattern>>,
    /// Function globs (bare lower-case names); same all/any logic as `tables`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<Pattern>>,
    /// Row limit for statements this rule allows (overrides the resource's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_limit: Option<NonZeroU64>,
    /// Free text; shown in denials instead of the generated reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// hold: seconds to wait for a decision before denying (default:
    /// `approvals.timeout_secs`, else 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<NonZeroU64>,
}

impl Checked for SqlRule {
    const EXPECTING: &'static str = "an SQL rule mapping (name, identity, resource, action, operations, tables, functions, row_limit, reason, timeout_secs)";
    const EXPECTING_LIST: &'static str = "a list of SQL rules";
    const LIST: &'static str = "sql_rules";

    fn unique_key(&self) -> Option<(&'static str, &str)> {
        Some(("SQL rule name", self.name.as_str()))
    }

    fn check(&self) -> Result<(), String> {
        for (what, empty) in [
            (
                "operations",
                self.operations.as_ref().is_some_and(Vec::is_empty),
            ),
            ("tables", self.tables.as_ref().is_some_and(Vec::is_empty)),
            (
                "functions",
                self.functions.as_ref().is_some_and(Vec::is_empty),
            ),
        ] {
            if empty {
                return Err(format!(
                    "empty `{what}` list matches nothing; omit it to match any"
                ));
            }
        }
        if self.action == SqlAction::Deny && self.row_limit.is_some() {
            return Err("`row_limit` only applies to `allow` and `hold` rules".into());
        }
        if self.action != SqlAction::Hold && self.timeout_secs.is_some() {
            return Err("`timeout_secs` only applies to `hold` rules".into());
        }
        Ok(())
    }
}

/// `allow` or `deny` for SQL rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlAction {
    Allow,
    Deny,
    /// Park the statement until an approver decides (see `approvals`).
    Hold,
}

impl SqlAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlAction::Allow => "allow",
            SqlAction::Deny => "deny",
            SqlAction::Hold => "hold",
        }
    }
}

impl Serialize for SqlAction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn parse_sql_action(s: &str) -> Result<SqlAction, String> {
    match s {
        "allow" => Ok(SqlAction::Allow),
        "deny" => Ok(SqlAction::Deny),
        "hold" => Ok(SqlAction::Hold),
        other => Err(format!(
            "unknown action {other:?}, expected `allow`, `deny` or `hold`"
        )),
    }
}

impl<'de> Deserialize<'de> for SqlAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("`allow`, `deny` or `hold`", parse_sql_action))
    }
}

impl JsonSchema for SqlAction {
    fn schema_name() -> String {
        "SqlAction".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "allow: run the statement; deny: answer with an error (SQLSTATE 42501); \
                     hold: park it until an approver decides (approved: it runs; denied or \
                     timed out: SQLSTATE 42501)."
                        .to_owned(),
                ),
                ..Default::default()
            })),
            instance_type: Some(InstanceType::String.into()),
            enum_values: Some(vec!["allow".into(), "deny".into(), "hold".into()]),
            ..Default::default()
        }
        .into()
    }
}

/// One resource name or a non-empty list of names (any of).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ResourceRef {
    One(String),
    Many(Vec<String>),
}

impl ResourceRef {
    pub fn names(&self) -> Vec<&str> {
        match self {
            ResourceRef::One(s) => vec![s.as_str()],
            ResourceRef::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl<'de> Deserialize<'de> for ResourceRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ResourceRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource name or a list of resource names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ResourceRef, E> {
                check_name("resource name", v).map_err(E::custom)?;
                Ok(ResourceRef::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResourceRef, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    check_name("resource name", &s).map_err(serde::de::Error::custom)?;
                    out.push(s);
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom(
                        "empty resource list (omit `resource` to match every resource)",
                    ));
                }
                Ok(ResourceRef::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}
