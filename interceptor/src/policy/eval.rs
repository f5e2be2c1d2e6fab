//! The pure evaluator: `evaluate(policy, request) -> Decision`, first match wins.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::load::{Policy, Target};
use super::model::Identity;

/// Who is connecting, as seen by the proxy (kernel record + /proc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// cgroup v2 path relative to the cgroup2 mount root, e.g. "/interceptor/run-42".
    pub cgroup: Option<&'a str>,
    pub uid: u32,
    pub gid: u32,
    /// Executable path (/proc/PID/exe); `None` when it could not be read.
    pub exe: Option<&'a str>,
    /// Process name (comm), at most 15 bytes.
    pub comm: &'a str,
    /// The agent's token bound to its cgroup (`run --token`), if any.
    pub token: Option<&'a AgentToken>,
}

/// What the daemon knows of the token bound to an agent's cgroup. `expired` is computed
/// by the caller (the evaluators read no clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentToken {
    /// The `sub` claim.
    pub subject: String,
    pub groups: Vec<String>,
    pub expired: bool,
}

/// Reason given to everything an agent with an expired token tries.
pub const TOKEN_EXPIRED_REASON: &str =
    "token expired: the agent's identity token is no longer valid; supply a fresh one (`interceptor token set`)";

impl Subject<'_> {
    /// The denial for an agent whose bound token has expired.
    pub fn token_expired(&self) -> bool {
        self.token.is_some_and(|t| t.expired)
    }
}

/// One intercepted connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRequest<'a> {
    pub subject: Subject<'a>,
    /// The original destination of the connect.
    pub dst: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
    /// Wait for a human decision (approvals); only SQL and HTTP rules hold.
    Hold,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Hold => "hold",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<super::scalars::Action> for Verdict {
    fn from(a: super::scalars::Action) -> Verdict {
        match a {
            super::scalars::Action::Allow => Verdict::Allow,
            super::scalars::Action::Deny => Verdict::Deny,
        }
    }
}

/// The outcome for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Name of the rule that matched; `None` when the default applied (or
    /// for decisions the caller makes itself, e.g. `Decision::own_listener`).
    pub rule: Option<String>,
    /// Human-readable reason, logged with the decision.
    pub reason: String,
}

/// Reason used by `Decision::own_listener`.
pub const OWN_LISTENER_REASON: &str = "destination is the interceptor's own listener";

impl Decision {
    /// The decision for a connection to the interceptor's own listener, which
    /// is always denied (it would loop). The evaluator cannot know the
    /// listener address, so the caller checks this before `evaluate`.
    pub fn own_listener() -> Decision {
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: OWN_LISTENER_REASON.to_owned(),
        }
    }

    pub fn is_allow(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Decides one connection: the first rule (in document order) whose identity
/// matches the subject and one of whose destinations matches `dst` decides;
/// otherwise the policy default. Pure: no I/O, no DNS, no clock. DNS names
/// match the addresses recorded by the last `Policy::resolve_names`.
pub fn evaluate(policy: &Policy, req: &ConnRequest) -> Decision {
    if req.subject.token_expired() {
        return Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: TOKEN_EXPIRED_REASON.to_owned(),
        };
    }
    let ip = req.dst.ip().to_canonical();
    let port = req.dst.port();
    for rule in &policy.rules {
        if let Some(ids) = &rule.identities {
            if !ids
                .iter()
                .any(|&i| policy.identities[i].1.matches(&req.subject))
            {
                continue;
            }
        }
        if let Some(dest) = rule.to.iter().find(|d| {
            d.ports.as_ref().is_none_or(|p| p.contains(port))
                && target_matches(policy, &d.target, &ip)
        }) {
            return Decision {
                verdict: rule.verdict,
                rule: Some(rule.name.clone()),
                reason: dest.reason.clone(),
            };
        }
    }
    Decision {
        verdict: policy.default,
        rule: None,
        reason: format!("no rule matched; default {}", policy.default),
    }
}

fn target_matches(policy: &Policy, target: &Target, ip: &IpAddr) -> bool {
    match target {
        Target::Any => true,
        Target::Cidr(c) => c.contains(ip),
        Target::Host(h) => policy.hosts[*h].addrs.contains(ip),
    }
}

impl Identity {
    /// Whether every selector given in this identity matches `s`.
    pub fn matches(&self, s: &Subject) -> bool {
        fn opt<T>(sel: &Option<T>, f: impl FnOnce(&T) -> bool) -> bool {
            sel.as_ref().is_none_or(f)
        }
        opt(&self.uid, |u| u.contains(s.uid))
            && opt(&self.gid, |g| g.contains(s.gid))
            && opt(&self.comm, |c| c.is_match(s.comm))
            && opt(&self.cgroup, |c| s.cgroup.is_some_and(|cg| c.is_match(cg)))
            && opt(&self.exe, |e| s.exe.is_some_and(|x| e.is_match(x)))
            && opt(&self.subject, |p| {
                s.token
                    .is_some_and(|t| !t.expired && p.is_match(&t.subject))
            })
            && opt(&self.groups, |gs| {
                s.token
                    .is_some_and(|t| !t.expired && t.groups.iter().any(|g| gs.contains(g)))
            })
    }
}
