//! HTTP services and HTTP rules: the `http_services:` and `http_rules:` sections.
//!
//! A service names an upstream HTTP(S) server by address, port and the host names it
//! serves. Connections to a service's address and port are spoken to in HTTP (they still
//! need an L4 `allow` in `rules:`): the `Host` header (and the TLS SNI) must be one of the
//! service's names, so a forged `Host` cannot reach another server through an allowed
//! address. Every request is decided by `http_rules` (first match wins, default deny);
//! see `http_eval` for the evaluator.

use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::de::Checked;
use super::glob::Pattern;
use super::pg::{ResourceRef, SqlAction};
use super::scalars::{IdentityRef, Name};
use crate::masking::{FieldRule, MaskingDoc};

/// Default largest request head (request line + headers) accepted from the agent.
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Default largest response body buffered for masking.
pub const DEFAULT_MAX_MASK_BYTES: u64 = 8 * 1024 * 1024;
/// Default largest body of a request held for approval (read before approvers are asked).
pub const DEFAULT_MAX_HELD_BODY_BYTES: u64 = 1024 * 1024;
/// The most `max_held_body_bytes` may be: a held body stays in memory while it waits.
pub const MAX_HELD_BODY_BYTES_CAP: u64 = 64 * 1024 * 1024;

/// An upstream HTTP(S) server the proxy speaks HTTP to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpService {
    /// IP address (v4 or v6) the agent connects to; also where the proxy connects.
    pub address: IpAddr,
    /// Port (e.g. 80 or 443).
    pub port: u16,
    /// Host names served there (case-insensitive, exact). A request's `Host` (and the
    /// TLS SNI) must be one of these or the address itself; anything else is refused as a
    /// forged host.
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
    /// What the upstream speaks and what to do with TLS from the agent: `intercept`
    /// (terminate with a certificate of the local CA, enforce every request, re-encrypt
    /// upstream verifying the real server; what an absent `tls` does with TLS),
    /// `passthrough` (decide on the SNI only and pipe the bytes through untouched) or
    /// `plain` (the upstream speaks plain HTTP; TLS from the agent is refused). Plain HTTP
    /// from the agent is refused (400) by an `intercept` or `passthrough` service; with no
    /// `tls` it goes upstream in plain HTTP, but never with injected headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsHandling>,
    /// Extra PEM CA certificates trusted (besides the system roots) when verifying the
    /// upstream server of an intercepted connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Largest request head from the agent in bytes (default 16384, at least 8192);
    /// larger gets 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u32>,
    /// Seconds the agent has to send a complete request head (default 10), and the whole
    /// body of a request held for approval; slower clients get 408 and are disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout_secs: Option<std::num::NonZeroU64>,
    /// Largest response body buffered for masking in bytes (default 8 MiB); a larger body
    /// that needs masking is refused with 502.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mask_bytes: Option<u64>,
    /// Largest body of a request held by a `hold` rule in bytes (default 1 MiB): the body
    /// is read before approvers are asked, so they see what would be sent (it must arrive
    /// within `header_timeout_secs`); a larger body is refused with 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_held_body_bytes: Option<u64>,
    /// Value detectors (and the hash key) applied to JSON string values and text bodies
    /// of responses of rules that ask for masking (`mask: true` or `mask_fields`).
    /// `columns:` is not used for HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<MaskingDoc>,
}

impl Checked for HttpService {
    const EXPECTING: &'static str =
        "an HTTP service mapping (address, port, hosts, tls, ca_file, masking, …)";

    fn check(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("port 0 is not a valid port".into());
        }
        if self.hosts.is_empty() {
            return Err("`hosts` must name at least one host name served at the address".into());
        }
        for h in &self.hosts {
            if h.is_empty() || h.contains(['/', ' ', ':', '*']) {
                return Err(format!(
                    "host {h:?} is not a plain host name (no port, scheme, path or wildcard)"
                ));
            }
        }
        if self.tls == Some(TlsHandling::Plain) && self.ca_file.is_some() {
            return Err("`ca_file` verifies the TLS upstream of an intercepted service; a `tls: plain` service has none (remove one of them)".into());
        }
        if let Some(m) = self.max_header_bytes {
            if m < 8192 {
                return Err("`max_header_bytes` must be at least 8192".into());
            }
        }
        if self
            .max_held_body_bytes
            .is_some_and(|m| m > MAX_HELD_BODY_BYTES_CAP)
        {
            return Err(format!(
                "`max_held_body_bytes` may be at most {MAX_HELD_BODY_BYTES_CAP} (64 MiB): a held body stays in memory while it waits for an approver"
            ));
        }
        if self.masking.as_ref().is_some_and(|m| !m.columns.is_empty()) {
            return Err("`masking.columns` is for PostgreSQL; for JSON bodies use `mask_fields` in http_rules".into());
        }
        Ok(())
    }
}

impl HttpService {
    /// Whether `host` (without port, any case, at most one trailing dot) names this service.
    pub fn serves(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical() == self.address.to_canonical())
    }

    /// What is done with TLS from the agent (`intercept` when `tls` is absent).
    pub fn tls_handling(&self) -> TlsHandling {
        self.tls.unwrap_or_default()
    }

    pub fn max_header_bytes(&self) -> usize {
        self.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES) as usize
    }

    pub fn header_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_timeout_secs.map_or(10, |n| n.get()))
    }

    pub fn max_mask_bytes(&self) -> u64 {
        self.max_mask_bytes.unwrap_or(DEFAULT_MAX_MASK_BYTES)
    }

    pub fn max_held_body_bytes(&self) -> u64 {
        self.max_held_body_bytes
            .unwrap_or(DEFAULT_MAX_HELD_BODY_BYTES)
    }
}

/// TLS handling of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsHandling {
    /// Terminate TLS with a certificate minted by the local CA; enforce every request.
    #[default]
    Intercept,
    /// Decide on the SNI only; bytes are piped through untouched.
    Passthrough,
    /// The upstream speaks plain HTTP (injected headers may go there); TLS is refused.
    Plain,
}

impl TlsHandling {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsHandling::Intercept => "intercept",
            TlsHandling::Passthrough => "passthrough",
            TlsHandling::Plain => "plain",
        }
    }
}

/// A header added to (or replacing one of) the requests a rule allows, from a secret
/// held by the daemon. The agent's own copy of the header is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectHeader {
    /// Header name, e.g. `Authorization`.
    pub header: String,
    /// Text put before the secret, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// File (readable by the daemon) holding the secret; one trailing newline is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Environment variable of the daemon holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

impl InjectHeader {
    fn check(&self) -> Result<(), String> {
        if http::HeaderName::from_bytes(self.header.as_bytes()).is_err() {
            return Err(format!("{:?} is not a valid header name", self.header));
        }
        if http::HeaderValue::from_str(&self.prefix).is_err() {
            return Err(format!(
                "prefix {:?} is not a valid header value",
                self.prefix
            ));
        }
        match (&self.secret_file, &self.secret_env) {
            (Some(_), Some(_)) => Err("give one of `secret_file` and `secret_env`, not both".into()),
            (None, None) => Err(format!(
                "header {:?}: give `secret_file` or `secret_env` (where the daemon reads the secret)",
                self.header
            )),
            _ => Ok(()),
        }
    }
}

/// One HTTP rule: for requests of `identity` to `service`, matching the selectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// Unique name (a-z, 0-9, '_', '.', '-'); shown in denials and audit records.
    pub name: Name,
    /// Identity name or list of names (any of). Absent: any process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityRef>,
    /// Service name or list of names (any of). Absent: every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ResourceRef>,
    /// allow, deny, or hold (park the request until an approver decides; needs an
    /// `approvals` section and TLS interception or plain HTTP).
    pub action: SqlAction,
    /// Methods (upper case, e.g. GET, POST; any of). Absent: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Path globs (any of), matched against the path without the query string; `*` stays
    /// within one segment, `**` crosses them (`/v1/**`). Absent: any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<Pattern>>,
    /// Request headers that must be present with a value matching the glob (all of);
    /// names are case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// allow only: headers set from the daemon's secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<InjectHeader>,
    /// allow only: run the service's `masking.detectors` over the response body (JSON
    /// string values, or text bodies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mask: bool,
    /// allow only: JSON field paths of the response masked whole (implies `mask`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask_fields: Vec<FieldRule>,
    /// allow only: let `Upgrade` requests (e.g. WebSocket) through. Refused otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_upgrade: bool,
    /// Free text; shown in denials instead of the generated reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// hold: seconds to wait for a decision before refusing (default:
    /// `approvals.timeout_secs`, else 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<std::num::NonZeroU64>,
}

/// A header selector: `name` present with a value matching `value` (a glob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Glob on the value (`*` matches anything). Absent: any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Pattern>,
}

impl Checked for HttpRule {
    const EXPECTING: &'static str = "an HTTP rule mapping (name, identity, service, action, methods, paths, headers, inject, mask, mask_fields, allow_upgrade, reason, timeout_secs)";
    const EXPECTING_LIST: &'static str = "a list of HTTP rules";
    const LIST: &'static str = "http_rules";

    fn unique_key(&self) -> Option<(&'static str, &str)> {
        Some(("HTTP rule name", self.name.as_str()))
    }

    fn check(&self) -> Result<(), String> {
        if let Some(m) = &self.methods {
            if m.is_empty() {
                return Err("empty `methods` list matches nothing; omit it to match any".into());
            }
            if let Some(bad) = m
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(format!(
                    "method {bad:?} must be upper-case letters, e.g. GET, POST, DELETE"
                ));
            }
        }
        if self.paths.as_ref().is_some_and(Vec::is_empty) {
            return Err("empty `paths` list matches nothing; omit it to match any".into());
        }
        if let Some(p) = self
            .paths
            .iter()
            .flatten()
            .find(|p| !p.as_str().starts_with(['/', '*']))
        {
            return Err(format!("path glob {:?} must start with '/'", p.as_str()));
        }
        for h in &self.headers {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                return Err(format!("{:?} is not a valid header name", h.name));
            }
        }
        if self.action == SqlAction::Deny
            && (!self.inject.is_empty()
                || self.mask
                || !self.mask_fields.is_empty()
                || self.allow_upgrade)
        {
            return Err(
                "`inject`, `mask`, `mask_fields` and `allow_upgrade` only apply to `allow` rules"
                    .into(),
            );
        }
        if self.action != SqlAction::Hold && self.timeout_secs.is_some() {
            return Err("`timeout_secs` only applies to `hold` rules".into());
        }
        let mut seen = std::collections::HashSet::new();
        for i in &self.inject {
            i.check()?;
            if !seen.insert(i.header.to_ascii_lowercase()) {
                return Err(format!("header {:?} is injected twice", i.header));
            }
        }
        Ok(())
    }
}
