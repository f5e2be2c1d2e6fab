//! An HTTP request held by a `hold` rule: it is parked (the agent simply waits for its
//! response) until an approver decides or the rule's timeout passes. Approved, it goes on
//! with the rule's effects (injection, masking); otherwise the agent gets the 403 with the
//! reason and who decided. An agent that hangs up (or resets its HTTP/2 stream) while it
//! waits withdraws the request: it never goes upstream.

use hyper::body::Incoming;
use hyper::Request;

use super::Ctx;
use crate::approvals::{HoldRequest, Opened};
use crate::policy::{HttpDecision, Verdict};

/// The verdict and reason after the approval round.
pub async fn settle(
    ctx: &Ctx,
    req: &Request<Incoming>,
    host: Option<&str>,
    path: &str,
    d: &HttpDecision<'_>,
) -> (Verdict, String) {
    let rule = d.rule.unwrap_or_default().to_owned();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let command = format!("{} {}{path}{query}", req.method(), host.unwrap_or("-"));
    let agent_subject = ctx.token.as_ref().map(|t| t.claims().subject);
    let fingerprint = format!(
        "{}|{}|{}|{} {}{path}",
        agent_subject.as_deref().unwrap_or(""),
        ctx.identity.uid,
        ctx.service,
        req.method(),
        host.unwrap_or("-")
    );
    let hold = HoldRequest {
        protocol: "http",
        session: ctx.session.clone(),
        identity: serde_json::to_value(ctx.who()).unwrap_or_default(),
        agent_subject,
        resource: ctx.service.clone(),
        command: command.clone(),
        classification: format!("{} request", req.method()),
        rule: rule.clone(),
        reason: d.reason.clone(),
        fingerprint,
    };
    let timeout = ctx.policy().hold_timeout(&rule);
    let mut id = None;
    let outcome = match ctx.approvals.open(hold, timeout) {
        Opened::Granted(o) => o,
        Opened::Waiting(t) => {
            tracing::info!(session = %ctx.session, request = %t.id, %command, "HTTP request held for approval");
            id = Some(t.id.clone());
            let gone = crate::approvals::gone::hung_up(ctx.agent_fd);
            ctx.approvals.wait_or(t, gone).await
        }
    };
    let (verdict, reason) = outcome.verdict(id.as_deref());
    if verdict == Verdict::Allow {
        ctx.approvals
            .executed(id.as_deref().unwrap_or("(standing grant)"), &command);
    }
    (verdict, reason)
}
