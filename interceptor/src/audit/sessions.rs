//! Sessions read back from the audit records: `interceptor sessions list|show|replay`.
//! A session is everything recorded under one `session` id: the connection (`connection_open`,
//! `connection`), and for protocol sessions their `session_start`, `command`, `statement`
//! and `session_end` records (and any other record type that names the session).

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use serde_json::Value;

use super::{segment::list_segments, verify::chain_dirs};

/// Reads every record under `path`: a chain directory, a directory of chains, or a plain
/// JSON-lines file. Lines that are not JSON (a torn tail) are skipped.
pub fn load(path: &Path) -> std::io::Result<Vec<Value>> {
    let mut files = Vec::new();
    if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        for d in chain_dirs(path)? {
            files.extend(list_segments(&d)?.into_iter().map(|(_, p)| p));
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    Ok(out)
}

fn time_of(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.get("time")?.as_str()?).ok()
}

fn ms(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// One command (statement or other request) of a session, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Command {
    /// When it started, relative to the session's start.
    pub offset_ms: f64,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub decision: String,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub classification: Option<String>,
    pub rows: Option<u64>,
    pub rows_withheld: Option<u64>,
    pub fields_masked: Option<u64>,
    pub duration_ms: f64,
    pub error: Option<String>,
    pub seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: String,
    pub instance: String,
    pub start: String,
    pub duration_ms: Option<f64>,
    pub pid: Option<u64>,
    pub uid: Option<u64>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub destination: Option<String>,
    pub resource: Option<String>,
    pub decision: Option<String>,
    pub commands: u64,
    pub denied: u64,
    pub ended: bool,
    #[serde(skip)]
    pub start_at: Option<SystemTime>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<Command>,
}

const SKIP: &[&str] = &[
    "connection_open",
    "connection",
    "session_start",
    "session_end",
    "command",
    "segment_open",
];

/// Groups records into sessions, in order of their start.
pub fn build(records: &[Value]) -> Vec<Session> {
    let mut by_id: BTreeMap<String, Session> = BTreeMap::new();
    for r in records {
        let Some(id) = r.get("session").and_then(Value::as_str) else {
            continue;
        };
        let kind = r.get("type").and_then(Value::as_str).unwrap_or("");
        let t = time_of(r);
        let s = by_id.entry(id.to_owned()).or_insert_with(|| Session {
            id: id.to_owned(),
            instance: r
                .get("instance")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            start: r
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            start_at: t,
            duration_ms: None,
            pid: None,
            uid: None,
            comm: None,
            exe: None,
            cgroup: None,
            destination: None,
            resource: None,
            decision: None,
            commands: 0,
            denied: 0,
            ended: false,
            log: Vec::new(),
        });
        if let (Some(t), Some(st)) = (t, s.start_at) {
            let began = t
                .checked_sub(Duration::from_secs_f64(ms(r, "duration_ms") / 1000.0))
                .unwrap_or(t);
            if began < st && matches!(kind, "connection" | "connection_open") {
                s.start_at = Some(began);
                s.start = humantime::format_rfc3339_millis(began).to_string();
            }
        }
        if let Some(id) = r.get("identity").filter(|v| v.is_object()) {
            s.pid = s.pid.or(id.get("pid").and_then(Value::as_u64));
            s.uid = s.uid.or(id.get("uid").and_then(Value::as_u64));
            s.comm = s
                .comm
                .clone()
                .or(id.get("comm").and_then(Value::as_str).map(str::to_owned));
            s.exe = s
                .exe
                .clone()
                .or(id.get("exe").and_then(Value::as_str).map(str::to_owned));
            s.cgroup = s
                .cgroup
                .clone()
                .or(id.get("cgroup").and_then(Value::as_str).map(str::to_owned));
        }
        if let Some(d) = r.get("destination").and_then(Value::as_str) {
            s.destination = Some(d.to_owned());
        }
        if let Some(res) = r.get("resource").and_then(Value::as_str) {
            s.resource = Some(res.to_owned());
        }
        match kind {
            "connection" => {
                s.ended = true;
                s.decision = r.get("decision").and_then(Value::as_str).map(str::to_owned);
                s.duration_ms = Some(ms(r, "duration_ms"));
            }
            "connection_open" => s.decision = Some("allow".into()),
            k if SKIP.contains(&k) => {}
            _ => push_command(s, r, kind, t),
        }
    }
    let mut v: Vec<Session> = by_id.into_values().collect();
    v.sort_by(|a, b| a.start_at.cmp(&b.start_at).then(a.id.cmp(&b.id)));
    v
}

fn push_command(s: &mut Session, r: &Value, kind: &str, t: Option<SystemTime>) {
    let dur = ms(r, "duration_ms");
    let began = t.map(|t| {
        t.checked_sub(Duration::from_secs_f64(dur / 1000.0))
            .unwrap_or(t)
    });
    let offset_ms = match (began, s.start_at) {
        (Some(b), Some(st)) => b
            .duration_since(st)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        _ => 0.0,
    };
    let text = ["statement", "request", "command", "path", "url"]
        .iter()
        .find_map(|k| r.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
        .or_else(|| {
            let m = r.get("method").and_then(Value::as_str)?;
            Some(format!(
                "{m} {}",
                r.get("target").and_then(Value::as_str).unwrap_or("")
            ))
        })
        .unwrap_or_default();
    let decision = r
        .get("decision")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let str_of = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    s.commands += 1;
    if decision == "deny" {
        s.denied += 1;
    }
    s.log.push(Command {
        offset_ms,
        kind: kind.to_owned(),
        text,
        decision,
        rule: str_of("rule"),
        reason: str_of("reason"),
        classification: str_of("classification"),
        rows: r.get("rows").and_then(Value::as_u64),
        rows_withheld: r.get("rows_withheld").and_then(Value::as_u64),
        fields_masked: r.get("fields_masked").and_then(Value::as_u64),
        duration_ms: dur,
        error: str_of("sqlstate").or_else(|| str_of("error")),
        seq: r.get("seq").and_then(Value::as_u64),
    });
    // Kept in log order (the order the commands completed). Sorting by `offset_ms` would
    // misorder commands less than a millisecond apart: record times have millisecond
    // resolution.
}

/// `--since`: a duration back from now (`2h`, `30m`) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| "too far back".into());
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("--since {s:?}: give a duration like 2h or a time like 2026-01-31T12:00:00Z")
    })
}

#[derive(Debug, Default)]
pub struct Filter {
    pub since: Option<SystemTime>,
    pub identity: Option<String>,
    pub resource: Option<String>,
}

impl Filter {
    pub fn matches(&self, s: &Session) -> bool {
        if let Some(since) = self.since {
            if s.start_at.is_none_or(|t| t < since) {
                return false;
            }
        }
        if let Some(want) = &self.identity {
            let fields = [
                s.comm.clone(),
                s.exe.clone(),
                s.cgroup.clone(),
                s.uid.map(|u| format!("uid={u}")),
                s.pid.map(|p| format!("pid={p}")),
            ];
            if !fields.iter().flatten().any(|f| {
                f.contains(want.as_str())
                    || f.strip_prefix("uid=") == Some(want)
                    || f.strip_prefix("pid=") == Some(want)
            }) {
                return false;
            }
        }
        if let Some(want) = &self.resource {
            let fields = [s.resource.as_deref(), s.destination.as_deref()];
            if !fields.iter().flatten().any(|f| f.contains(want.as_str())) {
                return false;
            }
        }
        true
    }
}
