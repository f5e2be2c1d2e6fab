//! The audit record of one HTTP request (or one TLS passthrough connection). It never
//! holds header values or bodies: injected secrets cannot reach the log.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::policy::Verdict;

#[derive(Debug, Clone, Serialize)]
pub struct HttpRecord {
    pub time: String,
    /// `http_request`, or `http_passthrough` for a TLS connection decided on its SNI.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: Arc<str>,
    pub instance: Arc<str>,
    /// The connection's `Who` (see `postgres::audit`), serialised once per connection.
    pub identity: Arc<RawValue>,
    pub service: Arc<str>,
    /// `plain`, `intercept` or `passthrough`.
    pub tls: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The query string as sent upstream (after `?`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Status sent to the agent (0 when none was sent).
    pub status: u16,
    pub decision: Verdict,
    pub rule: Option<String>,
    pub reason: String,
    /// Names of the injected headers (never their values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub injected: Vec<String>,
    /// Request and response body bytes (the whole connection for passthrough).
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub fields_masked: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The parts of every record of one connection, made once.
#[derive(Debug, Clone)]
pub struct RecordBase {
    pub session: Arc<str>,
    pub instance: Arc<str>,
    pub identity: Arc<RawValue>,
    pub service: Arc<str>,
}

impl RecordBase {
    pub fn new(
        session: &str,
        instance: &str,
        identity: &crate::identity::Identity,
        service: &str,
    ) -> Self {
        RecordBase {
            session: session.into(),
            instance: instance.into(),
            identity: crate::protocols::postgres::audit::Who::of(identity)
                .to_raw()
                .into(),
            service: service.into(),
        }
    }
}

/// Written (durably) before a request is forwarded: what is about to be sent. Never the
/// injected secret, never a body.
#[derive(Debug, Serialize)]
pub struct HttpCommand<'a> {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: &'a str,
    pub instance: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<&'a str>,
    pub rule: Option<&'a str>,
}
