//! A statement held by a `hold` rule: the agent gets a NoticeResponse naming the approval
//! request, the session waits for the decision (other sessions are unaffected), and the
//! statement then runs (approved) or fails with SQLSTATE 42501 naming who denied it, that
//! nobody decided in time, or that the agent gave up (cancelled it, hung up) — a withdrawn
//! statement never runs.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::backend;
use super::enforce::Checked;
use crate::approvals::{HoldRequest, Opened, Registry};
use crate::masking::Masker;
use crate::policy::Policy;

/// Facts about the session the request shows.
pub struct Who<'a> {
    pub session: &'a str,
    pub identity: serde_json::Value,
    pub agent_subject: Option<String>,
    pub resource: &'a str,
}

/// The waiting agent: where its notice goes, and `gone`, which resolves (with the reason)
/// when it gives up.
pub struct Agent<'a, W, G> {
    pub client: &'a tokio::sync::Mutex<W>,
    pub gone: G,
}

/// Resolves a held `checked` into an allowed or denied one.
pub async fn resolve<W: AsyncWrite + Unpin, G: std::future::Future<Output = String>>(
    registry: &Registry,
    policy: &Policy,
    masker: Option<&Masker>,
    who: Who<'_>,
    sql: &str,
    mut checked: Checked,
    agent: Agent<'_, W, G>,
) -> (Checked, Option<String>) {
    let rule = checked.decision.rule.clone().unwrap_or_default();
    // The statement as approvers see it: personal data in literals masked like results.
    let command = match masker.and_then(|m| m.mask_text(sql)) {
        Some((masked, _)) => masked,
        None => sql.to_owned(),
    };
    let fingerprint = format!(
        "{}|{}|{}|{}",
        who.agent_subject.as_deref().unwrap_or(""),
        who.identity
            .get("uid")
            .map(|v| v.to_string())
            .unwrap_or_default(),
        who.resource,
        super::shape::literal_shape(sql).map_or_else(|| sql.to_owned(), |s| s.into_owned())
    );
    let timeout = policy.hold_timeout(&rule);
    let req = HoldRequest {
        protocol: "postgres",
        session: who.session.to_owned(),
        identity: who.identity,
        agent_subject: who.agent_subject,
        resource: who.resource.to_owned(),
        command,
        classification: checked.summary.clone(),
        rule: rule.clone(),
        reason: checked.decision.reason.clone(),
        fingerprint,
    };
    let (id, outcome) = match registry.open(req, timeout) {
        Opened::Granted(o) => (o.grant_use().map(str::to_owned), o),
        Opened::Waiting(ticket) => {
            let msg = format!(
                "interceptor: statement held for approval by rule {rule}; request {} waits up to {}s (an approver runs `interceptor approvals approve {}`)",
                ticket.id,
                timeout.as_secs(),
                ticket.id
            );
            let mut n = backend::error("NOTICE", "01000", &msg, None, None);
            n.tag = backend::NOTICE;
            let _ = agent.client.lock().await.write_all(&n.to_bytes()).await;
            let id = Some(ticket.id.clone());
            (id, registry.wait_or(ticket, agent.gone).await)
        }
    };
    let (verdict, reason) = outcome.verdict(id.as_deref());
    checked.decision.verdict = verdict;
    checked.decision.reason = reason;
    (checked, id)
}
