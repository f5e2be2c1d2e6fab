//! `Policy`: a parsed, validated and compiled policy; loading and DNS resolution.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::de::checked;
use super::error::PolicyError;
use super::eval::Verdict;
use super::glob::Pattern;
use super::locate::Locator;
use super::model::{Identity, PolicyDoc, DEFAULT_DNS_REFRESH_SECS};
use super::net::{Cidr, HostName};
use super::pg::{PostgresResource, SqlAction, SqlOperation};
use super::ports::PortSet;

/// A compiled policy, ready for `evaluate`. Cheap to clone, so a refresher
/// can clone it, `resolve_names` on the copy (blocking) and swap it in.
#[derive(Debug, Clone)]
pub struct Policy {
    origin: String,
    doc: PolicyDoc,
    /// In `doc.identities` order (sorted by name).
    pub(super) identities: Vec<(String, Identity)>,
    pub(super) rules: Vec<CompiledRule>,
    /// Distinct `host:` names, in order of first use.
    pub(super) hosts: Vec<HostEntry>,
    pub(super) default: Verdict,
    dns_refresh: Duration,
    /// PostgreSQL resources by name (sorted by name).
    pub(super) pg_resources: Vec<(String, PostgresResource)>,
    pub(super) sql_rules: Vec<CompiledSqlRule>,
    pub(super) issuers: crate::auth::Issuers,
    pub(super) approvals: Option<super::approvals::CompiledApprovals>,
    /// hold rule name → its own `timeout_secs`.
    pub(super) hold_timeouts: HashMap<String, u64>,
    /// HTTP services by name (sorted by name) and HTTP rules.
    pub(super) http_services: Vec<(String, super::http::HttpService)>,
    pub(super) http_rules: Vec<super::http_eval::CompiledHttpRule>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledSqlRule {
    pub(super) name: String,
    pub(super) action: SqlAction,
    /// Indexes into `Policy::identities` (any of); `None` = any process.
    pub(super) identities: Option<Vec<usize>>,
    /// Resource names (any of); `None` = every resource.
    pub(super) resources: Option<Vec<String>>,
    pub(super) operations: Option<BTreeSet<SqlOperation>>,
    pub(super) tables: Option<Vec<Pattern>>,
    pub(super) functions: Option<Vec<Pattern>>,
    pub(super) row_limit: Option<u64>,
    pub(super) reason: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledRule {
    pub(super) name: String,
    pub(super) verdict: Verdict,
    /// Indexes into `Policy::identities` (any of); `None` = any process.
    pub(super) identities: Option<Vec<usize>>,
    pub(super) to: Vec<CompiledDest>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledDest {
    pub(super) target: Target,
    pub(super) ports: Option<PortSet>,
    /// Decision reason when this entry matches (precomputed).
    pub(super) reason: String,
}

#[derive(Debug, Clone)]
pub(super) enum Target {
    Cidr(Cidr),
    /// Index into `Policy::hosts`.
    Host(usize),
    Any,
}

#[derive(Debug, Clone)]
pub(super) struct HostEntry {
    pub(super) name: HostName,
    /// Canonical (IPv4-mapped turned into IPv4), sorted, deduplicated.
    /// Empty until resolved, or when the last resolution failed.
    pub(super) addrs: Vec<IpAddr>,
}

/// The outcome of resolving one `host:` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameResolution {
    pub name: String,
    /// The addresses the name now matches, or why it matches nothing.
    pub result: Result<Vec<IpAddr>, String>,
}

impl Policy {
    /// Parses and validates a policy. `origin` names it in errors (usually
    /// the file path). DNS names are left unresolved: they match nothing
    /// until `resolve_names` is called.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        if is_blank(text) {
            return Err(PolicyError::invalid(
                origin,
                None,
                "the policy is empty; it needs at least `version: 1` \
                 (and `rules`, or `default: deny` to deny everything)"
                    .to_owned(),
            ));
        }
        let doc: PolicyDoc = checked(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| relocate(PolicyError::from_yaml(origin, &e), text))?;
        Policy::compile(doc, Some(text), origin)
    }

    /// Compiles an already deserialized document (errors found here have no
    /// line numbers since there is no source text).
    pub fn from_doc(doc: PolicyDoc, origin: &str) -> Result<Policy, PolicyError> {
        Policy::compile(doc, None, origin)
    }

    /// Reads, parses and validates the file, then resolves its DNS names
    /// (blocking; unresolvable names match nothing and are not an error).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::load_resolved(path).map(|(p, _)| p)
    }

    /// `load`, also returning the per-name resolutions so they can be logged.
    pub fn load_resolved(path: &Path) -> Result<(Policy, Vec<NameResolution>), PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        let mut policy = Policy::from_str(&text, &origin)?;
        let resolutions = policy.resolve_names();
        Ok((policy, resolutions))
    }

    /// Resolves every `host:` name with the system resolver (blocking; run it
    /// off the async runtime). Each name then matches exactly the addresses
    /// it resolved to; a name that fails to resolve matches nothing until a
    /// later call succeeds (fail closed). Returns one entry per distinct name.
    pub fn resolve_names(&mut self) -> Vec<NameResolution> {
        self.resolve_names_with(system_resolve)
    }

    /// `resolve_names` with a custom resolver (for tests, or an async
    /// resolver's results).
    pub fn resolve_names_with(
        &mut self,
        mut resolve: impl FnMut(&str) -> Result<Vec<IpAddr>, String>,
    ) -> Vec<NameResolution> {
        let mut out = Vec::with_capacity(self.hosts.len());
        for host in &mut self.hosts {
            let result = resolve(host.name.as_str()).and_then(|addrs| {
                let mut addrs: Vec<IpAddr> = addrs.iter().map(IpAddr::to_canonical).collect();
                addrs.sort_unstable();
                addrs.dedup();
                if addrs.is_empty() {
                    Err("resolved to no addresses".to_owned())
                } else {
                    Ok(addrs)
                }
            });
            host.addrs = result.clone().unwrap_or_default();
            out.push(NameResolution {
                name: host.name.to_string(),
                result,
            });
        }
        out
    }

    /// The distinct DNS names used in `host:` entries, in order of first use.
    pub fn host_names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    /// The addresses `name` currently matches (`None` if not a `host:` of this policy).
    pub fn host_addrs(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts
            .iter()
            .find(|h| h.name.as_str() == name)
            .map(|h| h.addrs.as_slice())
    }

    /// How often DNS names should be re-resolved.
    pub fn dns_refresh(&self) -> Duration {
        self.dns_refresh
    }

    /// One line, e.g. "2 identities, 3 rules, default deny".
    pub fn summary(&self) -> String {
        let n = self.identities.len();
        let m = self.rules.len();
        format!(
            "{n} {}, {m} {}, default {}",
            if n == 1 { "identity" } else { "identities" },
            if m == 1 { "rule" } else { "rules" },
            self.default
        )
    }

    /// Where the policy came from (file path or the `origin` given to `from_str`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The document the policy was compiled from.
    /// The `sockets:` section (defaults when absent).
    pub fn sockets(&self) -> super::sockets::Sockets {
        self.doc.sockets.clone().unwrap_or_default()
    }

    /// The `dns:` section (no resolvers when absent).
    pub fn dns(&self) -> super::sockets::Dns {
        self.doc.dns.clone().unwrap_or_default()
    }

    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    /// The verdict when no rule matches.
    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    /// Rule names in evaluation order.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    fn compile(doc: PolicyDoc, src: Option<&str>, origin: &str) -> Result<Policy, PolicyError> {
        let identities: Vec<(String, Identity)> = doc
            .identities
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let index: HashMap<&str, usize> = identities
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.as_str(), i))
            .collect();
        let locator = src.map(Locator::new);

        let mut hosts: Vec<HostEntry> = Vec::new();
        let mut rules = Vec::with_capacity(doc.rules.len());
        for (ri, rule) in doc.rules.iter().enumerate() {
            // Cross-reference check: done here, after parsing, because
            // `identities` may come after `rules` in the file. Located by
            // searching the text (see locate.rs).
            let ids = match &rule.identity {
                None => None,
                Some(refs) => {
                    let mut ids = Vec::with_capacity(refs.0.len());
                    for name in &refs.0 {
                        match index.get(name.as_str()) {
                            Some(&i) => ids.push(i),
                            None => {
                                let pos = locator
                                    .as_ref()
                                    .and_then(|l| l.in_rule(rule.name.as_str(), "identity", name));
                                return Err(PolicyError::invalid(
                                    origin,
                                    pos,
                                    format!(
                                        "rules[{ri}].identity: unknown identity {name:?} in rule {:?} ({})",
                                        rule.name.as_str(),
                                        known(&identities)
                                    ),
                                ));
                            }
                        }
                    }
                    Some(ids)
                }
            };
            let verdict = Verdict::from(rule.action);
            let to = rule
                .to
                .iter()
                .map(|d| {
                    let target = match (&d.cidr, &d.host) {
                        (Some(c), _) => Target::Cidr(*c),
                        (None, Some(h)) => {
                            let i = match hosts.iter().position(|e| &e.name == h) {
                                Some(i) => i,
                                None => {
                                    hosts.push(HostEntry {
                                        name: h.clone(),
                                        addrs: Vec::new(),
                                    });
                                    hosts.len() - 1
                                }
                            };
                            Target::Host(i)
                        }
                        // Validated while parsing: exactly one of cidr/host/any: true.
                        (None, None) => Target::Any,
                    };
                    let reason = match &rule.reason {
                        Some(r) => r.clone(),
                        None => format!("matched rule {} ({verdict} {d})", rule.name),
                    };
                    CompiledDest {
                        target,
                        ports: d.ports.clone(),
                        reason,
                    }
                })
                .collect();
            rules.push(CompiledRule {
                name: rule.name.as_str().to_owned(),
                verdict,
                identities: ids,
                to,
            });
        }
        let (pg_resources, sql_rules) =
            compile_sql(&doc, &index, &identities, locator.as_ref(), origin)?;
        if let Some(s) = &doc.sockets {
            super::sockets::udp_entries(s).map_err(|e| {
                let pos = locator.as_ref().and_then(|l| l.section("sockets"));
                PolicyError::invalid(origin, pos, format!("sockets.udp: {e}"))
            })?;
        }
        let holds = doc
            .sql_rules
            .iter()
            .map(|r| (r.name.as_str(), r.action, r.timeout_secs))
            .chain(
                doc.http_rules
                    .iter()
                    .map(|r| (r.name.as_str(), r.action, r.timeout_secs)),
            )
            .filter(|(_, a, _)| *a == SqlAction::Hold);
        let hold_rules: Vec<&str> = holds.clone().map(|(n, _, _)| n).collect();
        let hold_timeouts = holds
            .filter_map(|(n, _, t)| Some((n.to_owned(), t?.get())))
            .collect();
        let (issuers, approvals) = super::approvals::compile(
            doc.auth.as_ref(),
            doc.approvals.as_ref(),
            &hold_rules,
            Path::new(origin).parent().filter(|d| d.is_dir()),
        )
        .map_err(|e| {
            let key = if e.starts_with("auth") {
                "auth"
            } else {
                "approvals"
            };
            let pos = locator.as_ref().and_then(|l| l.top_key(key));
            PolicyError::invalid(origin, pos, e)
        })?;
        let (http_services, http_rules) =
            super::http_eval::compile_http(&doc, &index, &identities, locator.as_ref(), origin)?;
        let dns_refresh = Duration::from_secs(
            doc.dns_refresh_secs
                .map_or(DEFAULT_DNS_REFRESH_SECS, |n| n.get()),
        );
        Ok(Policy {
            origin: origin.to_owned(),
            default: Verdict::from(doc.default),
            doc,
            identities,
            rules,
            hosts,
            dns_refresh,
            pg_resources,
            sql_rules,
            issuers,
            approvals,
            hold_timeouts,
            http_services,
            http_rules,
        })
    }

    /// Token issuers (`auth.issuers`), with their keys.
    pub fn issuers(&self) -> &crate::auth::Issuers {
        &self.issuers
    }

    /// The compiled `approvals` section, if any.
    pub fn approvals(&self) -> Option<&super::approvals::CompiledApprovals> {
        self.approvals.as_ref()
    }

    /// How long a statement held by `rule` waits for a decision.
    pub fn hold_timeout(&self, rule: &str) -> Duration {
        let secs = self.hold_timeouts.get(rule).copied().unwrap_or_else(|| {
            self.approvals
                .as_ref()
                .map_or(super::approvals::DEFAULT_HOLD_TIMEOUT_SECS, |a| {
                    a.timeout_secs
                })
        });
        Duration::from_secs(secs)
    }

    /// The PostgreSQL resource at this destination, if any: (name, resource).
    pub fn postgres_resource(&self, dst: SocketAddr) -> Option<(&str, &PostgresResource)> {
        let ip = dst.ip().to_canonical();
        self.pg_resources
            .iter()
            .find(|(_, r)| r.address.to_canonical() == ip && r.port == dst.port())
            .map(|(n, r)| (n.as_str(), r))
    }

    /// Every PostgreSQL resource: (name, resource), sorted by name.
    pub fn postgres_resources(&self) -> impl Iterator<Item = (&str, &PostgresResource)> {
        self.pg_resources.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// SQL rule names in evaluation order.
    pub fn sql_rule_names(&self) -> Vec<&str> {
        self.sql_rules.iter().map(|r| r.name.as_str()).collect()
    }
}

type SqlParts = (Vec<(String, PostgresResource)>, Vec<CompiledSqlRule>);

fn compile_sql(
    doc: &PolicyDoc,
    index: &HashMap<&str, usize>,
    identities: &[(String, Identity)],
    locator: Option<&Locator>,
    origin: &str,
) -> Result<SqlParts, PolicyError> {
    let mut pg_resources: Vec<(String, PostgresResource)> = Vec::new();
    for (name, r) in &doc.resources {
        let r = &r.postgres;
        if let Some((other, _)) = pg_resources
            .iter()
            .find(|(_, o)| o.address.to_canonical() == r.address.to_canonical() && o.port == r.port)
        {
            return Err(PolicyError::invalid(
                origin,
                locator.and_then(|l| l.in_item("resources", name, "address", &r.address.to_string())),
                format!(
                    "resources.{name}: {}:{} is already resource {other:?}; one destination can be only one resource",
                    r.address, r.port
                ),
            ));
        }
        pg_resources.push((name.clone(), r.clone()));
    }
    let mut rules = Vec::with_capacity(doc.sql_rules.len());
    for (ri, rule) in doc.sql_rules.iter().enumerate() {
        let rname = rule.name.as_str();
        let ids = match &rule.identity {
            None => None,
            Some(refs) => {
                let mut ids = Vec::new();
                for name in &refs.0 {
                    match index.get(name.as_str()) {
                        Some(&i) => ids.push(i),
                        None => {
                            return Err(PolicyError::invalid(
                                origin,
                                locator.and_then(|l| l.in_item("sql_rules", rname, "identity", name)),
                                format!(
                                    "sql_rules[{ri}].identity: unknown identity {name:?} in SQL rule {rname:?} ({})",
                                    known(identities)
                                ),
                            ))
                        }
                    }
                }
                Some(ids)
            }
        };
        let resources = match &rule.resource {
            None => None,
            Some(refs) => {
                for name in refs.names() {
                    if !doc.resources.contains_key(name) {
                        let defined: Vec<&str> = doc.resources.keys().map(String::as_str).collect();
                        return Err(PolicyError::invalid(
                            origin,
                            locator.and_then(|l| l.in_item("sql_rules", rname, "resource", name)),
                            format!(
                                "sql_rules[{ri}].resource: unknown resource {name:?} in SQL rule {rname:?} ({})",
                                if defined.is_empty() {
                                    "no resources are defined; add it under `resources:`".to_owned()
                                } else {
                                    format!("defined resources: {}", defined.join(", "))
                                }
                            ),
                        ));
                    }
                }
                Some(refs.names().into_iter().map(str::to_owned).collect())
            }
        };
        rules.push(CompiledSqlRule {
            name: rname.to_owned(),
            action: rule.action,
            identities: ids,
            resources,
            operations: rule
                .operations
                .as_ref()
                .map(|o| o.iter().copied().collect()),
            tables: rule.tables.clone(),
            functions: rule.functions.clone(),
            row_limit: rule.row_limit.map(|n| n.get()),
            reason: rule.reason.clone(),
        });
    }
    Ok((pg_resources, rules))
}

/// serde reports a duplicate field at the start of its mapping; point at the
/// duplicate instead (found in the text, see locate.rs).
fn relocate(err: PolicyError, text: &str) -> PolicyError {
    let PolicyError::Invalid {
        origin,
        line: Some(line),
        column: Some(column),
        message,
    } = err
    else {
        return err;
    };
    let key = message
        .split_once("duplicate field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| key);
    let pos = key.and_then(|k| Locator::new(text).duplicate_key((line, column), k));
    let (line, column) = pos.unwrap_or((line, column));
    PolicyError::Invalid {
        origin,
        line: Some(line),
        column: Some(column),
        message,
    }
}

fn known(identities: &[(String, Identity)]) -> String {
    if identities.is_empty() {
        "no identities are defined; add it under `identities:`".to_owned()
    } else {
        let names: Vec<&str> = identities.iter().map(|(k, _)| k.as_str()).collect();
        format!("defined identities: {}", names.join(", "))
    }
}

/// Whether the text holds no YAML content (only blank lines, comments and
/// document markers).
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn system_resolve(name: &str) -> Result<Vec<IpAddr>, String> {
    (name, 0u16)
        .to_socket_addrs()
        .map(|it| it.map(|sa| sa.ip()).collect())
        .map_err(|e| e.to_string())
}
