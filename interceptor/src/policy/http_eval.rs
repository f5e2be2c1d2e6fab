//! The pure HTTP evaluator: `evaluate_http(policy, request) -> HttpDecision`, and the
//! compilation of `http_services` / `http_rules`.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::error::PolicyError;
use super::eval::{Subject, Verdict};
use super::glob::Pattern;
use super::http::{HttpService, InjectHeader};
use super::load::Policy;
use super::locate::Locator;
use super::model::{Identity, PolicyDoc};
use super::pg::SqlAction;
use crate::masking::FieldRule;

/// What an allowing rule does to the request and its response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpEffects {
    pub inject: Vec<InjectHeader>,
    /// Run the service's detectors over the response body.
    pub mask: bool,
    pub mask_fields: Vec<FieldRule>,
    pub allow_upgrade: bool,
}

impl HttpEffects {
    /// Whether the response body must be inspected.
    pub fn masks(&self) -> bool {
        self.mask || !self.mask_fields.is_empty()
    }
}

#[derive(Debug, Clone)]
pub(super) struct CompiledHttpRule {
    name: String,
    action: SqlAction,
    identities: Option<Vec<usize>>,
    services: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    paths: Option<Vec<Pattern>>,
    /// (lower-case name, value glob); the glob in lower case for rules that do not allow
    /// (`loose_headers`).
    headers: Vec<(String, Option<Pattern>)>,
    effects: HttpEffects,
    reason: Option<String>,
}

impl CompiledHttpRule {
    /// Whether a header value condition matches loosely: for deny and hold rules, any
    /// comma-separated element of a value (trimmed), or the whole value, in any case — a
    /// rule against `X-Role: admin` must not be sidestepped with `user, admin` or `Admin`.
    /// Allow rules match the whole value exactly (fail closed).
    fn loose_headers(&self) -> bool {
        self.action != SqlAction::Allow
    }

    fn header_matches(&self, glob: &Pattern, v: &http::HeaderValue) -> bool {
        if !self.loose_headers() {
            return v.to_str().is_ok_and(|v| glob.is_match(v));
        }
        let v = String::from_utf8_lossy(v.as_bytes()).to_lowercase();
        glob.is_match(v.trim()) || v.split(',').any(|e| glob.is_match(e.trim()))
    }

    /// Whether the rule looks inside requests (so it cannot decide on an SNI alone).
    fn inspects(&self) -> bool {
        self.methods.is_some()
            || self.paths.is_some()
            || !self.headers.is_empty()
            || self.effects != HttpEffects::default()
    }
}

/// One HTTP request (or, for TLS passthrough, one connection known by its SNI only).
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub subject: Subject<'a>,
    /// The service the original destination belongs to.
    pub service: &'a str,
    /// The host the agent names: the `Host` header (port removed), else the SNI.
    pub host: Option<&'a str>,
    /// The TLS SNI, when the agent sent one.
    pub sni: Option<&'a str>,
    /// `None` for TLS passthrough: only rules that do not look inside requests match.
    pub method: Option<&'a str>,
    /// Path without the query string.
    pub path: Option<&'a str>,
    pub headers: Option<&'a http::HeaderMap>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDecision<'p> {
    pub verdict: Verdict,
    /// The deciding rule; `None` for a forged host or when no rule matched.
    pub rule: Option<&'p str>,
    pub reason: String,
    /// Effects of the allowing rule (empty for a denial).
    pub effects: Option<&'p HttpEffects>,
}

impl HttpDecision<'_> {
    fn deny(reason: String) -> Self {
        HttpDecision {
            verdict: Verdict::Deny,
            rule: None,
            reason,
            effects: None,
        }
    }
}

/// Decides one request. First the host: it must be served by the service of the
/// original destination (forged `Host` or SNI → deny), and `Host` must agree with the SNI.
/// Then the first matching HTTP rule; none → deny. Pure: no I/O.
pub fn evaluate_http<'p>(policy: &'p Policy, req: &HttpRequest) -> HttpDecision<'p> {
    if req.subject.token_expired() {
        return HttpDecision::deny(super::eval::TOKEN_EXPIRED_REASON.to_owned());
    }
    let Some(svc) = policy.http_service_named(req.service) else {
        return HttpDecision::deny(format!("unknown HTTP service {:?}", req.service));
    };
    for (what, name) in [("SNI", req.sni), ("Host", req.host)] {
        if let Some(name) = name {
            if !svc.serves(name) {
                return HttpDecision::deny(format!(
                    "forged host: {what} {name:?} is not served at {}:{} (service {} serves {})",
                    svc.address,
                    svc.port,
                    req.service,
                    svc.hosts.join(", ")
                ));
            }
        }
    }
    if let (Some(sni), Some(host)) = (req.sni, req.host) {
        if !sni
            .trim_end_matches('.')
            .eq_ignore_ascii_case(host.trim_end_matches('.'))
        {
            return HttpDecision::deny(format!(
                "Host {host:?} differs from the TLS SNI {sni:?}; one connection serves one host"
            ));
        }
    }
    if req.host.is_none() && req.method.is_some() {
        return HttpDecision::deny("request without a Host header".into());
    }
    let Some(method) = req.method else {
        // Passthrough: only a rule that needs nothing from inside the request decides.
        return match matching_rule(policy, req, None) {
            Some(rule) => decided(rule, "SNI", req.sni.unwrap_or("-")),
            None => HttpDecision::deny(format!(
                "TLS passthrough to service {}: no HTTP rule without methods/paths/headers/effects allows it; default deny",
                req.service
            )),
        };
    };
    let path = req.path.unwrap_or("/");
    let rule = matching_rule(policy, req, Some((method, path)));
    if let Some(bare) = without_path_parameters(path) {
        // Servers such as Tomcat, Jetty and Spring drop `;parameters` from each segment
        // (and then read `..;` as `..`); others keep them. If the two readings are decided
        // by different rules, the outcome would depend on the upstream: refuse.
        let other = matching_rule(policy, req, Some((method, &bare)));
        let ptr = |r: Option<&CompiledHttpRule>| r.map(std::ptr::from_ref);
        if ptr(rule) != ptr(other) {
            let name = |r: Option<&CompiledHttpRule>| {
                r.map_or("the default deny".to_owned(), |r| {
                    format!("rule {}", r.name)
                })
            };
            return HttpDecision::deny(format!(
                "path {path} reads as {bare} on servers that drop ';' path parameters, and {} decides one reading while {} decides the other; send the path without ';' parameters",
                name(rule),
                name(other)
            ));
        }
    }
    match rule {
        Some(rule) => decided(rule, method, path),
        None => HttpDecision::deny(format!(
            "no HTTP rule allows {method} {path} on service {}; default deny",
            req.service
        )),
    }
}

/// The first rule that matches `req`; `target` is `(method, path)`, `None` for TLS
/// passthrough (then only rules that do not look inside requests match).
fn matching_rule<'p>(
    policy: &'p Policy,
    req: &HttpRequest,
    target: Option<(&str, &str)>,
) -> Option<&'p CompiledHttpRule> {
    policy.http_rules.iter().find(|rule| {
        if let Some(ids) = &rule.identities {
            if !ids
                .iter()
                .any(|&i| policy.identities[i].1.matches(&req.subject))
            {
                return false;
            }
        }
        if rule
            .services
            .as_ref()
            .is_some_and(|s| !s.iter().any(|s| s == req.service))
        {
            return false;
        }
        let Some((method, path)) = target else {
            return !rule.inspects();
        };
        if rule
            .methods
            .as_ref()
            .is_some_and(|m| !m.iter().any(|m| m == method))
        {
            return false;
        }
        if let Some(paths) = &rule.paths {
            // Deny and hold rules match in any case (their patterns are lower case): an
            // upstream that reads paths case-insensitively must not get `/ADMIN` past a
            // rule on `/admin`.
            let folded = (rule.action != SqlAction::Allow).then(|| path.to_lowercase());
            let path = folded.as_deref().unwrap_or(path);
            if !paths.iter().any(|p| p.is_match(path)) {
                return false;
            }
        }
        rule.headers.iter().all(|(name, glob)| {
            req.headers.is_some_and(|h| {
                h.get_all(name.as_str())
                    .iter()
                    .any(|v| glob.as_ref().is_none_or(|g| rule.header_matches(g, v)))
            })
        })
    })
}

/// The path as a server that drops `;parameters` from every segment reads it (`/a;x=1/b`
/// → `/a/b`, `/public/..;/admin` → `/admin`), dot segments removed again; `None` when the
/// path has no `;`.
pub(super) fn without_path_parameters(path: &str) -> Option<String> {
    path.contains(';').then(|| {
        resolve_segments(
            path.trim_start_matches('/')
                .split('/')
                .map(|seg| seg.split(';').next().unwrap_or("")),
        )
    })
}

/// The path made of `segments` with dot segments resolved (RFC 3986 §5.2.4) and empty
/// ones dropped (`//` → `/`, as nginx does); it ends with `/` when the last segment was
/// empty or a dot segment. Shared with the proxy's `protocols::http::path::normalize`, so
/// the policy and the upstream read a path the same way.
pub fn resolve_segments<'a>(segments: impl IntoIterator<Item = &'a str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in segments {
        trailing = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path: String = out.iter().flat_map(|s| ["/", s]).collect();
    if trailing || out.is_empty() {
        path.push('/');
    }
    path
}

fn decided<'p>(rule: &'p CompiledHttpRule, what: &str, detail: &str) -> HttpDecision<'p> {
    let verdict = match rule.action {
        SqlAction::Allow => Verdict::Allow,
        SqlAction::Deny => Verdict::Deny,
        SqlAction::Hold => Verdict::Hold,
    };
    HttpDecision {
        verdict,
        rule: Some(&rule.name),
        reason: rule.reason.clone().unwrap_or_else(|| {
            format!(
                "matched HTTP rule {} ({} {what} {detail})",
                rule.name,
                verdict.as_str()
            )
        }),
        // A held request gets the rule's effects once approved.
        effects: (verdict != Verdict::Deny).then_some(&rule.effects),
    }
}

pub(super) type HttpParts = (Vec<(String, HttpService)>, Vec<CompiledHttpRule>);

/// Compiles the HTTP sections: destinations unique (also against PostgreSQL resources),
/// rule references resolved.
pub(super) fn compile_http(
    doc: &PolicyDoc,
    index: &HashMap<&str, usize>,
    identities: &[(String, Identity)],
    locator: Option<&Locator>,
    origin: &str,
) -> Result<HttpParts, PolicyError> {
    let mut services: Vec<(String, HttpService)> = Vec::new();
    for (name, s) in &doc.http_services {
        let same = |a: std::net::IpAddr, p: u16| {
            a.to_canonical() == s.address.to_canonical() && p == s.port
        };
        let clash = services
            .iter()
            .find(|(_, o)| same(o.address, o.port))
            .map(|(n, _)| format!("HTTP service {n:?}"))
            .or_else(|| {
                doc.resources
                    .iter()
                    .find(|(_, r)| same(r.postgres.address, r.postgres.port))
                    .map(|(n, _)| format!("PostgreSQL resource {n:?}"))
            });
        if let Some(other) = clash {
            return Err(PolicyError::invalid(
                origin,
                locator.and_then(|l| {
                    l.in_item("http_services", name, "address", &s.address.to_string())
                }),
                format!(
                    "http_services.{name}: {}:{} is already {other}; one destination can be only one service",
                    s.address, s.port
                ),
            ));
        }
        services.push((name.clone(), s.clone()));
    }
    let mut rules = Vec::with_capacity(doc.http_rules.len());
    for (ri, rule) in doc.http_rules.iter().enumerate() {
        let rname = rule.name.as_str();
        let bad = |key: &str, value: &str, msg: String| {
            PolicyError::invalid(
                origin,
                locator.and_then(|l| l.in_item("http_rules", rname, key, value)),
                format!("http_rules[{ri}].{key}: {msg}"),
            )
        };
        let identities_idx =
            match &rule.identity {
                None => None,
                Some(refs) => {
                    let mut ids = Vec::new();
                    for name in &refs.0 {
                        let Some(&i) = index.get(name.as_str()) else {
                            let known: Vec<&str> =
                                identities.iter().map(|(n, _)| n.as_str()).collect();
                            return Err(bad(
                                "identity",
                                name,
                                format!(
                                "unknown identity {name:?} in HTTP rule {rname:?} (defined: {})",
                                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                            ),
                            ));
                        };
                        ids.push(i);
                    }
                    Some(ids)
                }
            };
        let services_ref = match &rule.service {
            None => None,
            Some(refs) => {
                for name in refs.names() {
                    if !doc.http_services.contains_key(name) {
                        let defined: Vec<&str> =
                            doc.http_services.keys().map(String::as_str).collect();
                        return Err(bad(
                            "service",
                            name,
                            format!(
                                "unknown HTTP service {name:?} in HTTP rule {rname:?} ({})",
                                if defined.is_empty() {
                                    "no services are defined; add it under `http_services:`"
                                        .to_owned()
                                } else {
                                    format!("defined services: {}", defined.join(", "))
                                }
                            ),
                        ));
                    }
                }
                Some(refs.names().into_iter().map(str::to_owned).collect())
            }
        };
        rules.push(CompiledHttpRule {
            name: rname.to_owned(),
            action: rule.action,
            identities: identities_idx,
            services: services_ref,
            methods: rule.methods.clone(),
            paths: match (&rule.paths, rule.action) {
                (Some(ps), SqlAction::Deny | SqlAction::Hold) => Some(
                    ps.iter()
                        .map(|p| {
                            Pattern::parse(&p.as_str().to_lowercase())
                                .map_err(|e| bad("paths", p.as_str(), e.to_string()))
                        })
                        .collect::<Result<Vec<_>, PolicyError>>()?,
                ),
                (ps, _) => ps.clone(),
            },
            headers: rule
                .headers
                .iter()
                .map(|h| {
                    let value = match (&h.value, rule.action) {
                        (Some(g), SqlAction::Deny | SqlAction::Hold) => {
                            let lower = g.as_str().to_lowercase();
                            Some(Pattern::parse(&lower).map_err(|e| {
                                bad("headers", g.as_str(), format!("header {}: {e}", h.name))
                            })?)
                        }
                        (v, _) => v.clone(),
                    };
                    Ok((h.name.to_ascii_lowercase(), value))
                })
                .collect::<Result<_, PolicyError>>()?,
            effects: HttpEffects {
                inject: rule.inject.clone(),
                mask: rule.mask,
                mask_fields: rule.mask_fields.clone(),
                allow_upgrade: rule.allow_upgrade,
            },
            reason: rule.reason.clone(),
        });
    }
    Ok((services, rules))
}

impl Policy {
    /// The HTTP service at this destination, if any: (name, service).
    pub fn http_service(&self, dst: SocketAddr) -> Option<(&str, &HttpService)> {
        let ip = dst.ip().to_canonical();
        self.http_services
            .iter()
            .find(|(_, s)| s.address.to_canonical() == ip && s.port == dst.port())
            .map(|(n, s)| (n.as_str(), s))
    }

    /// The HTTP service called `name`.
    pub fn http_service_named(&self, name: &str) -> Option<&HttpService> {
        self.http_services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// Every HTTP service: (name, service), sorted by name.
    pub fn http_services(&self) -> impl Iterator<Item = (&str, &HttpService)> {
        self.http_services.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Whether any service intercepts TLS (then `run` hands the child the CA bundle).
    pub fn intercepts_tls(&self) -> bool {
        self.http_services
            .iter()
            .any(|(_, s)| s.tls_handling() == super::http::TlsHandling::Intercept)
    }

    /// Names of the daemon environment variables holding secrets (PostgreSQL passwords,
    /// masking keys, injected headers): `interceptor run` removes them from the child's
    /// environment, so the agent cannot read what the daemon injects for it.
    pub fn secret_env_vars(&self) -> Vec<String> {
        let doc = self.doc();
        let mut v: Vec<String> = Vec::new();
        for r in doc.resources.values() {
            v.extend(r.postgres.password_env.clone());
            v.extend(r.postgres.masking.as_ref().and_then(|m| m.key_env.clone()));
        }
        for s in doc.http_services.values() {
            v.extend(s.masking.as_ref().and_then(|m| m.key_env.clone()));
        }
        for r in &doc.http_rules {
            v.extend(r.inject.iter().filter_map(|i| i.secret_env.clone()));
        }
        v.sort();
        v.dedup();
        v
    }
}
