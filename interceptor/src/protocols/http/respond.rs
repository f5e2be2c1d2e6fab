//! Responses the proxy writes itself (denials, errors), and the body type it sends.

use bytes::Bytes;
use http::{header, Response, StatusCode};

use super::audit::HttpRecord;
use super::counting::Finish;
use crate::policy::Verdict;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// The error that ends a body early (upstream failure, a record that cannot be masked).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response sent to the agent (and of every request sent upstream).
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// `body`, keeping `keep` alive until the body has been sent or dropped (a memory
/// reservation, an open-stream count).
pub fn keeping<K: Send + Sync + Unpin + 'static>(body: Body, keep: K) -> Body {
    Keeping { body, _keep: keep }.boxed()
}

struct Keeping<K> {
    body: Body,
    _keep: K,
}

impl<K: Unpin> hyper::body::Body for Keeping<K> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A JSON error answer: `{"error": …, "rule": …, "reason": …}`, marked as ours with
/// `x-interceptor-decision`.
pub fn json_error(
    status: StatusCode,
    error: &str,
    rule: Option<&str>,
    reason: &str,
    close: bool,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": error,
        "rule": rule,
        "reason": reason,
        "by": "interceptor",
    });
    let mut b = serde_json::to_vec(&body).expect("JSON");
    b.push(b'\n');
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, b.len())
        .header(
            "x-interceptor-decision",
            if status == StatusCode::FORBIDDEN {
                "deny"
            } else {
                "error"
            },
        );
    if close {
        r = r.header(header::CONNECTION, "close");
    }
    r.body(full(b)).expect("valid response")
}

/// The raw bytes of a 408 written on the socket after hyper gave up waiting for a request
/// head (hyper itself just closes).
pub const REQUEST_TIMEOUT_RAW: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\nx-interceptor-decision: error\r\ncontent-length: 97\r\n\r\n{\"error\":\"request timeout\",\"reason\":\"the request head did not arrive in time\",\"by\":\"interceptor\"}";

/// The answer to a request the interceptor refuses (403, 405): a JSON error naming the rule
/// and the record's reason; the record becomes a denial with that status.
pub(super) fn denied(
    mut rec: HttpRecord,
    mut fin: Finish,
    status: StatusCode,
    error: &str,
    close: bool,
) -> Response<Body> {
    rec.decision = Verdict::Deny;
    rec.status = status.as_u16();
    tracing::info!(session = %rec.session, service = %rec.service, method = ?rec.method, path = ?rec.path, rule = ?rec.rule, reason = %rec.reason, "HTTP request refused");
    let r = json_error(status, error, rec.rule.as_deref(), &rec.reason, close);
    fin.rec = Some(rec);
    r
}

/// The answer to an allowed request that could not be carried out (502, 503): a JSON error
/// naming the rule and `why`; the record keeps its decision and gets the status and `why`.
pub(super) fn fail(
    mut rec: HttpRecord,
    mut fin: Finish,
    status: StatusCode,
    error: &str,
    why: String,
    close: bool,
) -> Response<Body> {
    rec.status = status.as_u16();
    let r = json_error(status, error, rec.rule.as_deref(), &why, close);
    rec.error = Some(why);
    fin.rec = Some(rec);
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_408_length_is_right() {
        let raw = std::str::from_utf8(super::REQUEST_TIMEOUT_RAW).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
