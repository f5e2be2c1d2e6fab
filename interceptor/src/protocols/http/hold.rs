//! An HTTP request held by a `hold` rule: it is parked (the agent simply waits for its
//! response) until an approver decides or the rule's timeout passes. Approved, it goes on
//! with the rule's effects (injection, masking); otherwise the agent gets the 403 with the
//! reason and who decided. An agent that hangs up (or resets its HTTP/2 stream) while it
//! waits withdraws the request: it never goes upstream. Nor does an approved request whose
//! agent token expired (or was replaced by another subject's) while it waited.
//!
//! A request with a body has it read whole first (`held_body`: at most the service's
//! `max_held_body_bytes`, within its `header_timeout_secs`; else 413 / 408, audited as
//! denied), and approvers see it in the command under the request line: as text when it is
//! UTF-8 (a `gzip` or `deflate` body decoded first), else as its length and SHA-256. The
//! approved request sends exactly those bytes. The body appears nowhere else: not in the
//! `http` audit record, nor in the daemon's log.
//!
//! A standing approval (`--for`) covers later requests with the same method, host, path and
//! query from the same identity, with no body or a byte-identical one (same SHA-256, same
//! `Content-Type` and `Content-Encoding`, same trailers). A body approvers could not see (an
//! encoding that is not decoded here, or that does not decode) is approved once at most.

use std::fmt::Write as _;

use http::{header, HeaderMap, Request};

use super::held_body::{HeldBodyError, ReqBody};
use super::inflate::{self, Inflater};
use super::Ctx;
use crate::approvals::limits::{sha256_hex, MAX_COMMAND};
use crate::approvals::{HoldRequest, Opened};
use crate::policy::{HttpDecision, Verdict};

/// What approvers are shown of a body.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    /// ` (body: …)` after the request line.
    note: String,
    /// The body as text, for the lines under the request line.
    text: Option<String>,
    /// What the fingerprint adds for it; `None`: approvers could not see it, so no
    /// standing grant covers it.
    key: Option<String>,
}

/// Longest `Content-Type` shown (the agent chooses it).
const MAX_TYPE: usize = 100;

/// How approvers see body `raw` (with `trailers`) of a request with `headers`: decoded
/// within `limit` bytes; `room`: the bytes of the command left for it (a longer body is cut
/// there, so its SHA-256 is shown too).
fn show_body(
    raw: &[u8],
    trailers: Option<&HeaderMap>,
    headers: &HeaderMap,
    limit: u64,
    room: usize,
) -> Shown {
    let sha = sha256_hex(raw);
    let mut note = format!(" (body: {} bytes", raw.len());
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(t) = &ctype {
        let cut: String = t.chars().take(MAX_TYPE).collect();
        let _ = write!(
            note,
            ", {cut}{}",
            if cut.len() < t.len() { "…" } else { "" }
        );
    }
    let encoding = super::masked::content_encoding(headers);
    let decoded = match inflate::coding(encoding.as_deref()) {
        Ok(c) => match Inflater::new(c) {
            None => Ok(raw.to_vec()),
            Some(mut z) => {
                let name = encoding.as_deref().unwrap_or_default().trim();
                let _ = write!(note, ", {name}-encoded");
                z.push(raw, limit)
                    .and_then(|mut out| {
                        let rest = z.finish(limit.saturating_sub(out.len() as u64))?;
                        out.extend(rest);
                        Ok(out)
                    })
                    .map_err(|e| match e {
                        super::mask::MaskError::TooLarge(_) => {
                            format!("decodes to more than {limit} bytes")
                        }
                        super::mask::MaskError::Corrupt(why) => format!("does not decode: {why}"),
                        other => other.to_string(),
                    })
                    .inspect(|out| {
                        let _ = write!(note, ", {} bytes decoded", out.len());
                    })
            }
        },
        Err(_) => {
            let name = encoding.as_deref().unwrap_or_default().trim();
            let _ = write!(note, ", {name}-encoded");
            Err("not decoded here".to_owned())
        }
    };
    if let Some(t) = trailers {
        let names: Vec<&str> = t.keys().map(|k| k.as_str()).collect();
        let _ = write!(note, ", trailers: {}", names.join(", "));
    }
    let mut key = format!(
        "body {sha} type {:?} encoding {:?}",
        ctype.as_deref().unwrap_or(""),
        encoding.as_deref().unwrap_or("")
    );
    if let Some(t) = trailers {
        for (k, v) in t {
            let _ = write!(
                key,
                " trailer {k}={:?}",
                String::from_utf8_lossy(v.as_bytes())
            );
        }
    }
    match decoded {
        Ok(d) => match String::from_utf8(d) {
            Ok(text) => {
                // A body cut in the command is named by its own digest too.
                if text.len() + note.len() + 1 > room {
                    let _ = write!(note, ", sha256 {sha}");
                }
                note.push(')');
                Shown {
                    note,
                    text: Some(text),
                    key: Some(key),
                }
            }
            Err(_) => {
                let _ = write!(note, ", binary, sha256 {sha})");
                Shown {
                    note,
                    text: None,
                    key: Some(key),
                }
            }
        },
        Err(why) => {
            let _ = write!(note, ", {why}; not shown, sha256 {sha})");
            Shown {
                note,
                text: None,
                key: None,
            }
        }
    }
}

/// The verdict and reason after the approval round; `Err` when the body could not be read
/// for approvers (the request is refused with the error's status).
pub async fn settle(
    ctx: &Ctx,
    req: &mut Request<ReqBody>,
    host: Option<&str>,
    path: &str,
    d: &HttpDecision<'_>,
) -> Result<(Verdict, String), HeldBodyError> {
    let rule = d.rule.unwrap_or_default().to_owned();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let limit = ctx.svc.max_held_body_bytes();
    if !hyper::body::Body::is_end_stream(req.body()) {
        req.body_mut()
            .read_whole(limit, ctx.svc.header_timeout())
            .await?;
    }
    // A chunked body that turned out empty counts as none.
    let line = format!("{} {}{path}{query}", req.method(), host.unwrap_or("-"));
    let room = MAX_COMMAND.saturating_sub(line.len());
    let shown = req
        .body()
        .held()
        .filter(|h| !h.bytes().is_empty() || h.trailers().is_some())
        .map(|h| show_body(h.bytes(), h.trailers(), req.headers(), limit, room));
    let mut command = line.clone();
    if let Some(s) = &shown {
        command.push_str(&s.note);
        if let Some(t) = &s.text {
            command.push('\n');
            command.push_str(t);
        }
    }
    let agent_subject = ctx.token.as_ref().map(|t| t.claims().subject);
    // Empty (never covered by, nor recording, a standing grant) for a body not shown.
    let fingerprint = match shown.as_ref().map(|s| s.key.as_deref()) {
        Some(None) => String::new(),
        body => format!(
            "{}|{}|{}|{line}{}",
            agent_subject.as_deref().unwrap_or(""),
            ctx.identity.uid,
            ctx.service,
            body.flatten().map(|k| format!("|{k}")).unwrap_or_default()
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
            // The request line only: the body goes to approvers, never to the log.
            tracing::info!(session = %ctx.session, request = %t.id, command = %line, "HTTP request held for approval");
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
        return Ok((Verdict::Deny, format!("{reason}, but {why}")));
    }
    if verdict == Verdict::Allow {
        ctx.approvals
            .executed(id.as_deref().unwrap_or_default(), &command);
    }
    Ok((verdict, reason))
}

#[cfg(test)]
#[path = "hold_tests.rs"]
mod tests;
