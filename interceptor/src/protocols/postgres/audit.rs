//! Audit records of PostgreSQL sessions (written with `AuditLog::record_any`). They never
//! hold result values: only statement text, classification, counts and decisions.

use serde::Serialize;

use crate::policy::Verdict;

/// Who, compactly (the connection record has the full identity).
#[derive(Debug, Clone, Serialize)]
pub struct Who {
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl Who {
    pub fn of(i: &crate::identity::Identity) -> Who {
        Who {
            pid: i.pid,
            uid: i.uid,
            comm: i.comm.clone(),
            exe: i.exe.clone(),
            cgroup: i.cgroup.clone(),
        }
    }

    /// Serialised once, for the records of a session or connection.
    pub fn to_raw(&self) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(self).unwrap_or_else(|_| {
            serde_json::value::RawValue::from_string("null".into()).expect("valid JSON")
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionStart {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: String,
    pub instance: String,
    pub identity: Who,
    pub resource: String,
    /// What the agent asked for (ignored: the resource's database and user are used).
    pub client_user: Option<String>,
    pub client_database: Option<String>,
    pub database: String,
    pub user: String,
    /// A pooled upstream connection was reused (no new login).
    pub reused: bool,
    pub tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementRecord<'a> {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: &'a str,
    pub instance: &'a str,
    /// The session's `Who`, serialised once per session.
    pub identity: &'a serde_json::value::RawValue,
    pub resource: &'a str,
    /// "simple" (Query) or "extended" (Parse/Execute).
    pub protocol: &'static str,
    /// The statement's text as the agent sent it.
    pub statement: &'a str,
    /// The classifier's summary, e.g. `DeleteStmt write -> [orders]`.
    pub classification: &'a str,
    pub decision: Verdict,
    pub rule: Option<&'a str>,
    pub reason: &'a str,
    pub rows: u64,
    /// Rows not sent because of the row limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_withheld: u64,
    pub fields_masked: u64,
    pub duration_ms: f64,
    /// SQLSTATE of an upstream error (its message may quote data, so it is not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionEnd {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: String,
    pub instance: String,
    pub resource: String,
    pub statements: u64,
    pub denied: u64,
    /// The upstream connection went back to the pool.
    pub pooled: bool,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// (issue 6) A command about to be sent upstream: committed durably *before* it is
/// forwarded (write before forward); its outcome follows as a `statement` record.
#[derive(Debug, Clone, Serialize)]
pub struct CommandRecord<'a> {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: &'a str,
    pub instance: &'a str,
    pub resource: &'a str,
    /// "simple" (Query) or "extended" (Execute).
    pub protocol: &'static str,
    pub statement: &'a str,
    pub classification: &'a str,
    pub decision: Verdict,
    pub rule: Option<&'a str>,
}
