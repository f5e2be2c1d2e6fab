//! Policy sections for just-in-time approvals and token-bound identities:
//! `auth.issuers` (OIDC/JWT issuers whose tokens the daemon accepts, for agents and for
//! approvers) and `approvals` (who may approve which held rules, timeouts, webhook).

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::de::{checked_list, Checked};
use super::glob::Pattern;
use super::scalars::Name;

/// Default time a held command waits for a decision.
pub const DEFAULT_HOLD_TIMEOUT_SECS: u64 = 300;
/// Default clock skew allowed when checking `exp`/`nbf` of tokens.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// `auth:` — token issuers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthDoc {
    /// Issuers whose JWTs are accepted (agent tokens of `run --token` and approver tokens).
    #[serde(default, deserialize_with = "checked_list")]
    pub issuers: Vec<Issuer>,
}

/// One OIDC/JWT issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// Name used by `approvals.approvers[].issuer` (a-z, 0-9, '_', '.', '-').
    pub name: Name,
    /// Expected `iss` claim, exactly.
    pub issuer: String,
    /// Expected `aud` claim (one of the token's audiences).
    pub audience: String,
    /// JSON Web Key Set file (read when the policy is loaded; a relative path is relative
    /// to the policy file). One of `jwks_file`, `jwks_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// JSON Web Key Set URL (`http://` or `https://`), fetched when the policy is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Allowed clock skew for `exp` and `nbf`, in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway_secs: Option<u64>,
    /// Claim holding the token's groups (a list of strings or one string; default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
}

impl Checked for Issuer {
    const EXPECTING: &'static str =
        "an issuer mapping (name, issuer, audience, jwks_file or jwks_url, leeway_secs, groups_claim)";
    const EXPECTING_LIST: &'static str = "a list of issuers";
    const LIST: &'static str = "issuers";

    fn unique_key(&self) -> Option<(&'static str, &str)> {
        Some(("issuer name", self.name.as_str()))
    }

    fn check(&self) -> Result<(), String> {
        match (&self.jwks_file, &self.jwks_url) {
            (Some(_), Some(_)) => Err("give one of `jwks_file` and `jwks_url`, not both".into()),
            (None, None) => {
                Err("an issuer needs `jwks_file` or `jwks_url` (its public keys)".into())
            }
            (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(
                format!("jwks_url {u:?} must start with http:// or https://"),
            ),
            _ if self.issuer.is_empty() => Err("`issuer` must not be empty".into()),
            _ if self.audience.is_empty() => Err("`audience` must not be empty".into()),
            _ => Ok(()),
        }
    }
}

/// `approvals:` — how held commands are decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsDoc {
    /// How long a held command waits for a decision before it is denied, in seconds
    /// (default 300). A rule's `timeout_secs` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Who may approve: each entry grants the token holders of `issuer` with one of
    /// `groups` the right to decide requests held by the rules matching `rules`.
    #[serde(default, deserialize_with = "checked_list")]
    pub approvers: Vec<Approver>,
    /// POSTed a JSON event when a request is created and when it is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// One grant of approval rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// Name (a-z, 0-9, '_', '.', '-'), recorded with decisions.
    pub name: Name,
    /// Issuer name (`auth.issuers[].name`) whose tokens count.
    pub issuer: String,
    /// Groups (any of) the approver's token must carry.
    pub groups: Vec<String>,
    /// Globs on held rule names this grant covers. Absent: every held rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Pattern>>,
}

impl Checked for Approver {
    const EXPECTING: &'static str = "an approver mapping (name, issuer, groups, rules)";
    const EXPECTING_LIST: &'static str = "a list of approvers";
    const LIST: &'static str = "approvers";

    fn unique_key(&self) -> Option<(&'static str, &str)> {
        Some(("approver name", self.name.as_str()))
    }

    fn check(&self) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("`groups` must name at least one group".into());
        }
        if self.rules.as_ref().is_some_and(Vec::is_empty) {
            return Err("empty `rules` list matches nothing; omit it to cover every rule".into());
        }
        Ok(())
    }
}

/// Where approval events are POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host[:port]/path` or `https://…` (the server verified against the system
    /// roots plus `ca_file`).
    pub url: String,
    /// PEM file of extra CA certificates trusted for an https `url` (relative paths are
    /// relative to the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// File (readable by the daemon) holding the HMAC-SHA256 key that signs each body
    /// (`X-Interceptor-Signature: sha256=<hex>`). One of `secret_file`, `secret_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Environment variable of the daemon holding the signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Attempts per event (default 4), with exponential back-off from 0.5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl Webhook {
    pub fn check(&self) -> Result<(), String> {
        let url = crate::http_client::Url::parse(&self.url).map_err(|e| e.to_string())?;
        if self.ca_file.is_some() && !url.tls {
            return Err("`ca_file` is for an https:// url".into());
        }
        match (&self.secret_file, &self.secret_env) {
            (Some(_), Some(_)) => {
                Err("give one of `secret_file` and `secret_env`, not both".into())
            }
            (None, None) => {
                Err("the webhook needs `secret_file` or `secret_env` to sign its events".into())
            }
            _ => Ok(()),
        }
    }
}

/// `approvals`, compiled.
#[derive(Debug, Clone)]
pub struct CompiledApprovals {
    pub timeout_secs: u64,
    pub approvers: Vec<Approver>,
    pub webhook: Option<Webhook>,
}

impl CompiledApprovals {
    /// Approver grants that let a token of `issuer` with `groups` decide a request held
    /// by `rule`.
    pub fn grants<'a>(
        &'a self,
        issuer: &'a str,
        groups: &'a [String],
        rule: &'a str,
    ) -> impl Iterator<Item = &'a Approver> + 'a {
        self.approvers.iter().filter(move |a| {
            a.issuer == issuer
                && a.groups.iter().any(|g| groups.contains(g))
                && a.rules
                    .as_ref()
                    .is_none_or(|ps| ps.iter().any(|p| p.is_match(rule)))
        })
    }
}

/// Compiles `auth` and `approvals` (loads JWKS files, fetches JWKS URLs) and checks that
/// every hold rule can be decided by someone. `hold_rules` are the names of the SQL rules
/// whose action is `hold`. A relative `jwks_file` is relative to `base` (the policy
/// file's directory).
pub(super) fn compile(
    auth: Option<&AuthDoc>,
    approvals: Option<&ApprovalsDoc>,
    hold_rules: &[&str],
    base: Option<&std::path::Path>,
) -> Result<(crate::auth::Issuers, Option<CompiledApprovals>), String> {
    let mut issuers = Vec::new();
    for (i, doc) in auth
        .map(|a| a.issuers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let keys = match (&doc.jwks_file, &doc.jwks_url) {
            (Some(f), _) => crate::auth::jwks::from_file(&match base {
                Some(b) if f.is_relative() => b.join(f),
                _ => f.clone(),
            }),
            (None, Some(u)) => crate::auth::jwks::fetch(u),
            (None, None) => Err("no jwks_file or jwks_url".into()),
        }
        .map_err(|e| format!("auth.issuers[{i}] ({}): {e}", doc.name.as_str()))?;
        issuers.push(crate::auth::jwt::Issuer {
            name: doc.name.as_str().to_owned(),
            iss: doc.issuer.clone(),
            audience: doc.audience.clone(),
            keys,
            leeway: doc.leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS),
            groups_claim: doc.groups_claim.clone().unwrap_or_else(|| "groups".into()),
        });
    }
    let issuers = crate::auth::Issuers(issuers);
    let Some(doc) = approvals else {
        if let Some(r) = hold_rules.first() {
            return Err(format!(
                "rule {r:?} holds statements or requests for approval, but the policy has no \
                 `approvals` section naming who may approve them"
            ));
        }
        return Ok((issuers, None));
    };
    for (i, a) in doc.approvers.iter().enumerate() {
        if issuers.get(&a.issuer).is_none() {
            let known: Vec<&str> = issuers.0.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "approvals.approvers[{i}] ({}): unknown issuer {:?} (defined in auth.issuers: {})",
                a.name.as_str(),
                a.issuer,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    if let Some(w) = &doc.webhook {
        w.check().map_err(|e| format!("approvals.webhook: {e}"))?;
    }
    if doc.timeout_secs == Some(0) {
        return Err("approvals.timeout_secs must be at least 1".into());
    }
    let compiled = CompiledApprovals {
        timeout_secs: doc.timeout_secs.unwrap_or(DEFAULT_HOLD_TIMEOUT_SECS),
        approvers: doc.approvers.clone(),
        webhook: doc
            .webhook
            .as_ref()
            .map(|w| webhook_with_ca(w, base))
            .transpose()?,
    };
    for r in hold_rules {
        if !compiled.approvers.iter().any(|a| {
            a.rules
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.is_match(r)))
        }) {
            return Err(format!(
                "rule {r:?} holds statements or requests for approval, but no approver in \
                 `approvals.approvers` covers it (check their `rules` globs)"
            ));
        }
    }
    Ok((issuers, Some(compiled)))
}

/// The webhook with its `ca_file` resolved against the policy's directory and loaded once
/// (a missing or empty file is a policy error now, not a failed delivery later).
fn webhook_with_ca(w: &Webhook, base: Option<&Path>) -> Result<Webhook, String> {
    let mut w = w.clone();
    if let Some(f) = &w.ca_file {
        let f = match base {
            Some(b) if f.is_relative() => b.join(f),
            _ => f.clone(),
        };
        crate::protocols::http::tls::client_config("webhook", Some(&f))
            .map_err(|e| format!("approvals.webhook.ca_file: {e}"))?;
        w.ca_file = Some(f);
    }
    Ok(w)
}
