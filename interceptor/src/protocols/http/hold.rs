//! An HTTP request held by a `hold` rule: it is parked (the agent simply waits for its
//! response) until an approver decides or the rule's timeout passes. Approved, it goes on
//! with the rule's effects (injection, masking); otherwise the agent gets the 403 with the
//! reason and who decided. An agent that hangs up (or resets its HTTP/2 stream) while it
//! waits withdraws the request: it never goes upstream. Nor does an approved request whose
//! agent token expired (or was replaced by another subject's) while it waited.
//!
//! A standing approval (`--for`) covers later requests with the same method, host, path
//! and query from the same identity — and only requests without a body: the body is not
//! read before the decision, so it cannot be shown nor compared, and a request with one is
//! approved once at most (approvers see its length).

use hyper::body::{Body as _, Incoming};
use hyper::Request;

use super::Ctx;
use crate::approvals::{HoldRequest, Opened};
use crate::policy::{HttpDecision, Verdict};

/// How approvers see the body of `req`: `None` when it has none.
fn body_note(req: &Request<Incoming>) -> Option<String> {
    if req.body().is_end_stream() {
        return None;
    }
    Some(match req.body().size_hint().exact() {
        Some(n) => format!(" (body: {n} bytes, not shown)"),
        None => " (body of unknown length, not shown)".into(),
    })
}

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
    let body = body_note(req);
    let command = format!(
        "{} {}{path}{query}{}",
        req.method(),
        host.unwrap_or("-"),
        body.as_deref().unwrap_or("")
    );
    let agent_subject = ctx.token.as_ref().map(|t| t.claims().subject);
    // Empty (never covered by, nor recording, a standing grant) for a request with a body.
    let fingerprint = match body {
        Some(_) => String::new(),
        None => format!(
            "{}|{}|{}|{} {}{path}{query}",
            agent_subject.as_deref().unwrap_or(""),
            ctx.identity.uid,
            ctx.service,
            req.method(),
            host.unwrap_or("-")
        ),
    };
    let hold = HoldRequest {
        protocol: "http",
        session: ctx.session.clone(),
        identity: serde_json::to_value(ctx.who()).unwrap_or_default(),
        agent_subject: agent_subject.clone(),
        resource: ctx.service.clone(),
        command: command.clone(),
        classification: format!("{} request", req.method()),
        rule: rule.clone(),
        reason: d.reason.clone(),
        fingerprint,
    };
    let timeout = ctx.policy().hold_timeout(&rule);
    let (id, outcome) = match ctx.approvals.open(hold, timeout) {
        Opened::Granted(o) => (o.grant_use().map(str::to_owned), o),
        Opened::Waiting(t) => {
            tracing::info!(session = %ctx.session, request = %t.id, %command, "HTTP request held for approval");
            let id = Some(t.id.clone());
            let gone = crate::approvals::gone::hung_up(ctx.agent_fd);
            (id, ctx.approvals.wait_or(t, gone).await)
        }
    };
    let (verdict, reason) = outcome.verdict(id.as_deref());
    // Approved maybe long after it was asked: the agent's token must still hold.
    let token_now = ctx.token_view();
    if let (Verdict::Allow, Some(why)) = (
        verdict,
        crate::approvals::token_recheck(agent_subject.as_deref(), token_now.as_ref()),
    ) {
        tracing::info!(session = %ctx.session, request = id.as_deref().unwrap_or(""), %why, "approved HTTP request not sent");
        return (Verdict::Deny, format!("{reason}, but {why}"));
    }
    if verdict == Verdict::Allow {
        ctx.approvals
            .executed(id.as_deref().unwrap_or_default(), &command);
    }
    (verdict, reason)
}
