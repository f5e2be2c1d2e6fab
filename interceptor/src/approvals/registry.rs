//! The registry of held commands of one daemon instance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use super::outcome::Outcome;
use super::webhook::Notifier;
use crate::audit::{now_rfc3339, AuditLog};
use crate::auth::Claims;
use crate::policy::CompiledApprovals;

/// What a session asks to hold.
#[derive(Debug, Clone, Serialize)]
pub struct HoldRequest {
    /// "postgres" or "http".
    pub protocol: &'static str,
    pub session: String,
    /// pid, uid, comm, exe, cgroup of the agent process.
    pub identity: serde_json::Value,
    /// Token subject of the agent (`run --token`), if bound.
    pub agent_subject: Option<String>,
    pub resource: String,
    /// The exact command (statement text, or `METHOD host/path`), masked where masking
    /// rules apply.
    pub command: String,
    pub classification: String,
    pub rule: String,
    pub reason: String,
    /// Identity + command shape, for `--for` grants. Empty: no standing grant ever covers
    /// this command, and approving it `--for` a while approves it once only (an HTTP
    /// request whose body approvers could not see: an encoding not decoded).
    pub fingerprint: String,
}

/// A request as shown to approvers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestView {
    pub id: String,
    pub state: String,
    pub created: String,
    pub expires: String,
    pub protocol: String,
    pub session: String,
    pub identity: serde_json::Value,
    #[serde(default)]
    pub agent_subject: Option<String>,
    pub resource: String,
    pub command: String,
    pub classification: String,
    pub rule: String,
    pub reason: String,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decision_reason: Option<String>,
}

/// Who acts, as authenticated by the caller of `decide`.
#[derive(Debug, Clone)]
pub struct Approver {
    pub claims: Claims,
    /// The caller runs inside the agents' cgroup (known for control-socket peers).
    pub inside_agent_cgroup: bool,
}

/// Scope of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This command, once.
    Once,
    /// Also every command with the same fingerprint from the same identity, for a while.
    For(Duration),
}

/// The longest standing approval (`--for`): a day.
pub const MAX_FOR: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecideError {
    /// The call itself is wrong (a `--for` beyond `MAX_FOR`).
    #[error("{0}")]
    Invalid(String),
    #[error("no pending approval request {0} (it may have been decided or expired; see `interceptor approvals list`)")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("approvals are not configured in this daemon's policy (add an `approvals` section)")]
    NotConfigured,
}

/// What `open` gives.
pub enum Opened {
    /// Decided at once: a standing grant approved it, or it was refused (too many requests
    /// wait already).
    Granted(Outcome),
    Waiting(Ticket),
}

/// A registered request being waited for.
pub struct Ticket {
    pub id: String,
    rx: oneshot::Receiver<Outcome>,
    timeout: Duration,
}

/// Result of a decision, for the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decided {
    pub request: RequestView,
    pub approver: String,
    /// What the decision did not do as asked (a `--for` that recorded no grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

struct Entry {
    view: RequestView,
    req: HoldRequest,
    tx: Option<oneshot::Sender<Outcome>>,
}

struct Grant {
    fingerprint: String,
    until: Instant,
    by: String,
    /// The request whose approval made it.
    from: String,
}

#[derive(Default)]
struct Inner {
    pending: BTreeMap<String, Entry>,
    grants: Vec<Grant>,
    recent: VecDeque<RequestView>,
}

/// Audit record of one approval step.
#[derive(Serialize)]
struct ApprovalRecord<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'a str,
    instance: &'a str,
    request: &'a RequestView,
}

pub struct Registry {
    instance: String,
    prefix: String,
    next: AtomicU64,
    inner: Mutex<Inner>,
    audit: AuditLog,
    notifier: Mutex<Option<Arc<Notifier>>>,
}

const RECENT: usize = 200;

impl Registry {
    pub fn new(instance: String, audit: AuditLog) -> Arc<Registry> {
        let prefix = format!(
            "{:x}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                & 0xffffff
        );
        Arc::new(Registry {
            instance,
            prefix,
            next: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
            audit,
            notifier: Mutex::new(None),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the webhook notifier (after each policy load).
    pub fn set_notifier(&self, n: Option<Arc<Notifier>>) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }

    fn record(&self, event: &str, view: &RequestView) {
        self.audit.record_any(&ApprovalRecord {
            time: now_rfc3339(),
            kind: "approval",
            event,
            instance: &self.instance,
            request: view,
        });
    }

    fn event(&self, event: &str, view: &RequestView) {
        self.record(event, view);
        let n = self
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(n) = n {
            if !n.send(event, view.clone()) {
                #[derive(Serialize)]
                struct Dropped<'a> {
                    time: String,
                    #[serde(rename = "type")]
                    kind: &'static str,
                    event: &'static str,
                    instance: &'a str,
                    request: &'a str,
                    dropped: &'a str,
                }
                self.audit.record_any(&Dropped {
                    time: now_rfc3339(),
                    kind: "approval",
                    event: "webhook_dropped",
                    instance: &self.instance,
                    request: &view.id,
                    dropped: event,
                });
            }
        }
    }

    /// Opens a request for `req`: either a standing `--for` grant covers it at once, or
    /// too many requests wait already (`limits`: it is refused at once, audited), or it is
    /// registered (and announced) and the caller `wait`s on the ticket.
    pub fn open(&self, mut req: HoldRequest, timeout: Duration) -> Opened {
        super::limits::shrink(&mut req);
        let mut inner = self.inner();
        let now = Instant::now();
        inner.grants.retain(|g| g.until > now);
        if let Some(g) = inner
            .grants
            .iter()
            .find(|g| !req.fingerprint.is_empty() && g.fingerprint == req.fingerprint)
        {
            let by = g.by.clone();
            let why = format!("standing approval (--for) given on request {}", g.from);
            drop(inner);
            let id = self.next_id();
            let mut view = self.view_of("approved", &req, timeout, Some(&by), Some(&why));
            view.id = id.clone();
            self.event("approved_by_grant", &view);
            self.remember(view);
            return Opened::Granted(Outcome::Approved {
                by,
                reason: Some(why),
                grant_use: Some(id),
            });
        }
        if let Some(why) = super::limits::too_many(inner.pending.values().map(|e| &e.req), &req) {
            drop(inner);
            let mut view = self.view_of("refused", &req, Duration::ZERO, None, Some(&why));
            view.id = self.next_id();
            // Audited, not announced: a flood must not flood the webhook too.
            self.record("refused", &view);
            tracing::warn!(session = %req.session, request = %view.id, "{why}");
            return Opened::Granted(Outcome::Refused { why });
        }
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let mut view = self.view_of("pending", &req, timeout, None, None);
        view.id = id.clone();
        inner.pending.insert(
            id.clone(),
            Entry {
                view: view.clone(),
                req,
                tx: Some(tx),
            },
        );
        drop(inner);
        self.event("created", &view);
        Opened::Waiting(Ticket { id, rx, timeout })
    }

    fn next_id(&self) -> String {
        format!("apr-{}-{:04}", self.prefix, self.next.fetch_add(1, Relaxed))
    }

    /// Waits for the decision on `t`, or its timeout.
    pub async fn wait(&self, t: Ticket) -> Outcome {
        self.wait_or(t, std::future::pending()).await
    }

    /// Waits for the decision on `t`, its timeout, or `gone`: the agent gave up (cancelled
    /// the command, hung up), with the reason. A wait dropped before it ends (the agent's
    /// HTTP/2 stream was reset, its session ended) withdraws the request too, so approvers
    /// never approve a command nobody waits for.
    pub async fn wait_or(
        &self,
        t: Ticket,
        gone: impl std::future::Future<Output = String>,
    ) -> Outcome {
        let Ticket { id, rx, timeout } = t;
        let mut guard = Withdraw {
            registry: self,
            id: Some(id),
        };
        let outcome = tokio::select! {
            // A decision already made wins over a hang-up noticed at the same time.
            biased;
            r = tokio::time::timeout(timeout, rx) => match r {
                Ok(Ok(o)) => o,
                Ok(Err(_)) => Outcome::Abandoned,
                Err(_) => Outcome::Expired { after: timeout },
            },
            why = gone => Outcome::Withdrawn { why },
        };
        let id = guard.id.take().expect("set above");
        let state = match &outcome {
            Outcome::Abandoned => "abandoned",
            Outcome::Expired { .. } => "expired",
            Outcome::Withdrawn { .. } => "withdrawn",
            Outcome::Approved { .. } | Outcome::Denied { .. } | Outcome::Refused { .. } => {
                return outcome
            }
        };
        let why = match &outcome {
            Outcome::Withdrawn { why } => Some(why.as_str()),
            _ => None,
        };
        self.end_pending(&id, state, why);
        outcome
    }

    /// Ends a request nobody decided: `state` on record (with `why`), then recently decided.
    fn end_pending(&self, id: &str, state: &str, why: Option<&str>) {
        let entry = self.inner().pending.remove(id);
        if let Some(mut e) = entry {
            e.view.state = state.into();
            if let Some(why) = why {
                e.view.decision_reason = Some(why.to_owned());
            }
            self.event(state, &e.view);
            self.remember(e.view);
        }
    }

    fn view_of(
        &self,
        state: &str,
        req: &HoldRequest,
        timeout: Duration,
        by: Option<&str>,
        why: Option<&str>,
    ) -> RequestView {
        let now = SystemTime::now();
        RequestView {
            id: String::new(),
            state: state.into(),
            created: humantime::format_rfc3339_seconds(now).to_string(),
            expires: humantime::format_rfc3339_seconds(now + timeout).to_string(),
            protocol: req.protocol.into(),
            session: req.session.clone(),
            identity: req.identity.clone(),
            agent_subject: req.agent_subject.clone(),
            resource: req.resource.clone(),
            command: req.command.clone(),
            classification: req.classification.clone(),
            rule: req.rule.clone(),
            reason: req.reason.clone(),
            decided_by: by.map(str::to_owned),
            decision_reason: why.map(str::to_owned),
        }
    }

    fn remember(&self, v: RequestView) {
        let mut inner = self.inner();
        inner.recent.push_front(v);
        inner.recent.truncate(RECENT);
    }

    /// Pending requests first (oldest first), then recently decided ones.
    pub fn list(&self) -> Vec<RequestView> {
        let inner = self.inner();
        inner
            .pending
            .values()
            .map(|e| e.view.clone())
            .chain(inner.recent.iter().cloned())
            .collect()
    }

    pub fn show(&self, id: &str) -> Option<RequestView> {
        let inner = self.inner();
        inner
            .pending
            .get(id)
            .map(|e| e.view.clone())
            .or_else(|| inner.recent.iter().find(|v| v.id == id).cloned())
    }

    /// An approver approves (`approve`) or denies request `id`. Checks the approver's
    /// rights under `config` (issuer and group grants covering the held rule), refuses
    /// self-approval (same token subject as the agent, or a caller inside the agent's
    /// cgroup), then wakes the waiting session.
    pub fn decide(
        &self,
        config: Option<&CompiledApprovals>,
        id: &str,
        who: &Approver,
        approve: bool,
        reason: Option<String>,
        scope: Scope,
    ) -> Result<Decided, DecideError> {
        let config = config.ok_or(DecideError::NotConfigured)?;
        if let Scope::For(d) = scope {
            if d > MAX_FOR {
                return Err(DecideError::Invalid(format!(
                    "a standing approval lasts at most 24 h ({} s); {} s asked",
                    MAX_FOR.as_secs(),
                    d.as_secs()
                )));
            }
        }
        let mut inner = self.inner();
        let entry = inner
            .pending
            .get(id)
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        let c = &who.claims;
        let grant = config
            .grants(&c.issuer, &c.groups, &entry.req.rule)
            .next()
            .ok_or_else(|| {
                DecideError::Forbidden(format!(
                    "{} (issuer {}, groups [{}]) may not decide requests held by rule {}: no approver grant in the policy covers it",
                    c.subject,
                    c.issuer,
                    c.groups.join(", "),
                    entry.req.rule
                ))
            })?;
        if entry.req.agent_subject.as_deref() == Some(c.subject.as_str()) {
            return Err(DecideError::Forbidden(format!(
                "{} may not approve its own request {id}",
                c.subject
            )));
        }
        if who.inside_agent_cgroup {
            return Err(DecideError::Forbidden(format!(
                "request {id} cannot be decided from inside the agent's own cgroup"
            )));
        }
        let by = format!("{} ({})", c.subject, grant.name.as_str());
        let mut e = inner.pending.remove(id).expect("found above");
        let mut note = None;
        if approve {
            if let Scope::For(d) = scope {
                if e.req.fingerprint.is_empty() {
                    note = Some(format!(
                        "approved once only: no standing grant covers a {} request like this one (an HTTP request whose body approvers could not see)",
                        e.req.protocol
                    ));
                } else {
                    inner.grants.push(Grant {
                        fingerprint: e.req.fingerprint.clone(),
                        until: Instant::now() + d,
                        by: by.clone(),
                        from: id.to_owned(),
                    });
                }
            }
        }
        drop(inner);
        e.view.state = if approve { "approved" } else { "denied" }.into();
        e.view.decided_by = Some(by.clone());
        e.view.decision_reason = reason.clone();
        self.event(&e.view.state.clone(), &e.view);
        if let Some(tx) = e.tx.take() {
            let o = if approve {
                Outcome::Approved {
                    by: by.clone(),
                    reason,
                    grant_use: None,
                }
            } else {
                Outcome::Denied {
                    by: by.clone(),
                    reason,
                }
            };
            let _ = tx.send(o);
        }
        let view = e.view.clone();
        self.remember(e.view);
        Ok(Decided {
            request: view,
            approver: by,
            note,
        })
    }

    /// Records that an approved command was sent upstream.
    pub fn executed(&self, id_or_session: &str, command: &str) {
        #[derive(Serialize)]
        struct Executed<'a> {
            time: String,
            #[serde(rename = "type")]
            kind: &'static str,
            event: &'static str,
            instance: &'a str,
            request: &'a str,
            command: &'a str,
        }
        self.audit.record_any(&Executed {
            time: now_rfc3339(),
            kind: "approval",
            event: "executed",
            instance: &self.instance,
            request: id_or_session,
            command: &super::limits::capped(command),
        });
    }

    /// Fails every waiting command (daemon stopping).
    pub fn abandon_all(&self) {
        let mut inner = self.inner();
        for e in inner.pending.values_mut() {
            if let Some(tx) = e.tx.take() {
                let _ = tx.send(Outcome::Abandoned);
            }
        }
    }
}

/// Withdraws a pending request whose waiter went away without an outcome.
struct Withdraw<'a> {
    registry: &'a Registry,
    id: Option<String>,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let why = "the agent's request went away before a decision";
            self.registry.end_pending(&id, "withdrawn", Some(why));
        }
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
