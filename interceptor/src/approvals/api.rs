//! The approvals API, shared by the control socket (`interceptor approvals …`) and the
//! daemon's HTTP listener (`--approvals-listen ADDR`, JSON):
//!
//! - `GET  /v1/approvals`                  pending, then recently decided requests
//! - `GET  /v1/approvals/{id}`             one request
//! - `POST /v1/approvals/{id}/approve`     body `{"reason": "...", "for_secs": 900}` (optional;
//!   `for_secs` at most 86400)
//! - `POST /v1/approvals/{id}/deny`        body `{"reason": "..."}` (optional)
//!
//! Every call carries an approver's JWT (`Authorization: Bearer …` over HTTP, `token` on
//! the control socket), checked against the policy's issuers; listing needs a token with at
//! least one approver grant and shows (like showing) only the requests whose rule one of its
//! grants covers; deciding needs such a grant too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::registry::{Approver, DecideError, Registry, Scope};
use crate::policy::Policy;

/// One approvals call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Call {
    List,
    Show {
        id: String,
    },
    Decide {
        id: String,
        approve: bool,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        for_secs: Option<u64>,
    },
}

/// A call with its credentials (control socket form).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authed {
    pub token: String,
    pub call: Call,
}

/// HTTP-like status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

fn err(status: u16, message: impl Into<String>) -> Answer {
    Answer {
        status,
        body: serde_json::json!({ "error": message.into() }),
    }
}

/// Carries out one call. `inside_agent_cgroup`: the caller is one of the agents.
pub fn handle(
    policy: &Policy,
    registry: &Registry,
    token: &str,
    call: Call,
    inside_agent_cgroup: bool,
) -> Answer {
    let Some(config) = policy.approvals() else {
        return err(404, DecideError::NotConfigured.to_string());
    };
    let claims = match policy.issuers().verify(token) {
        Ok(c) => c,
        Err(e) => return err(401, format!("approver token rejected: {e}")),
    };
    let any_grant = config
        .approvers
        .iter()
        .any(|a| a.issuer == claims.issuer && a.groups.iter().any(|g| claims.groups.contains(g)));
    // An approver sees only the requests it may decide.
    let covers = |v: &super::RequestView| {
        config
            .grants(&claims.issuer, &claims.groups, &v.rule)
            .next()
            .is_some()
    };
    match call {
        Call::List | Call::Show { .. } if !any_grant => err(
            403,
            format!(
                "{} (groups [{}]) is not an approver in this policy",
                claims.subject,
                claims.groups.join(", ")
            ),
        ),
        Call::List => {
            let mine: Vec<_> = registry.list().into_iter().filter(covers).collect();
            Answer {
                status: 200,
                body: serde_json::to_value(mine).unwrap_or_default(),
            }
        }
        Call::Show { id } => match registry.show(&id).filter(covers) {
            Some(v) => Answer {
                status: 200,
                body: serde_json::to_value(v).unwrap_or_default(),
            },
            None => err(404, DecideError::NotFound(id).to_string()),
        },
        Call::Decide {
            id,
            approve,
            reason,
            for_secs,
        } => {
            let scope = match for_secs {
                Some(s) if s > 0 && approve => Scope::For(Duration::from_secs(s)),
                _ => Scope::Once,
            };
            let who = Approver {
                claims,
                inside_agent_cgroup,
            };
            match registry.decide(Some(config), &id, &who, approve, reason, scope) {
                Ok(d) => Answer {
                    status: 200,
                    body: serde_json::to_value(d).unwrap_or_default(),
                },
                Err(e @ DecideError::Invalid(_)) => err(400, e.to_string()),
                Err(e @ DecideError::NotFound(_)) => err(404, e.to_string()),
                Err(e @ DecideError::NotConfigured) => err(404, e.to_string()),
                Err(e @ DecideError::Forbidden(_)) => err(403, e.to_string()),
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct DecideBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    for_secs: Option<u64>,
}

type PolicyFn = Arc<dyn Fn() -> Arc<Policy> + Send + Sync>;

/// Serves the HTTP API on `addr` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    policy: PolicyFn,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "approvals API listening");
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "approvals API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                let policy = policy.clone();
                async move { Ok::<_, Infallible>(route(req, &registry, &policy).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = conn.await;
        });
    }
}

async fn route(
    req: Request<Incoming>,
    registry: &Registry,
    policy: &PolicyFn,
) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(err(413, "request body too large or unreadable")),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let call = match (&method, parts.as_slice()) {
        (&Method::GET, ["v1", "approvals"]) => Call::List,
        (&Method::GET, ["v1", "approvals", id]) => Call::Show { id: (*id).to_owned() },
        (&Method::POST, ["v1", "approvals", id, action @ ("approve" | "deny")]) => {
            let b: DecideBody = if body.is_empty() {
                DecideBody::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(b) => b,
                    Err(e) => return reply(err(400, format!("body is not valid JSON ({{\"reason\", \"for_secs\"}}): {e}"))),
                }
            };
            Call::Decide {
                id: (*id).to_owned(),
                approve: *action == "approve",
                reason: b.reason,
                for_secs: b.for_secs,
            }
        }
        _ => {
            return reply(err(
                404,
                "unknown route; use GET /v1/approvals, GET /v1/approvals/ID, POST /v1/approvals/ID/approve|deny",
            ))
        }
    };
    let Some(token) = token else {
        return reply(err(401, "missing `Authorization: Bearer <approver JWT>`"));
    };
    let policy = policy();
    reply(handle(&policy, registry, &token, call, false))
}

fn reply(a: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(&a.body).unwrap_or_default(),
    )));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
