//! Audit log: one JSON line per connection (and per PostgreSQL statement), written by a
//! single thread so records never interleave. The destination is a file (default
//! `<state dir>/audit.jsonl`) or stdout.
//!
//! The writer is a plain thread with blocking writes, not a tokio task on `tokio::fs`
//! (which hands every write to the blocking pool: two thread wake-ups per write, a large
//! share of the CPU at tens of thousands of statements per second). After each write it
//! pauses for `COALESCE` so that under load one write carries many records.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{identity::Identity, policy::Verdict};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source} (check --audit-log and the state directory's permissions)")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One connection, from accept to close.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRecord {
    /// RFC 3339 time the connection was accepted.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: String,
    /// Which daemon instance (run-PID or attach-NAME).
    pub instance: String,
    /// `None` when the kernel had no record of the connection (it was refused).
    pub identity: Option<Identity>,
    pub client: String,
    pub destination: Option<String>,
    pub decision: Verdict,
    pub rule: Option<String>,
    pub reason: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

enum Msg {
    Record(String),
    Flush(oneshot::Sender<()>),
}

/// Cheap handle to the audit writer task.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AuditLog {
    /// Opens the destination (`-` = stdout) and starts the writer task.
    pub async fn open(dest: &Path) -> Result<Self, AuditError> {
        let out: Box<dyn Write + Send> = if dest == Path::new("-") {
            Box::new(io::stdout())
        } else {
            let open_err = |source| AuditError::Open {
                path: dest.into(),
                source,
            };
            if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(open_err)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dest)
                .map_err(open_err)?;
            Box::new(f)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let path = dest.to_path_buf();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(out, rx, path))
            .map_err(|source| AuditError::Open {
                path: dest.into(),
                source,
            })?;
        Ok(Self { tx })
    }

    pub fn record(&self, rec: &ConnectionRecord) {
        self.record_any(rec)
    }

    /// Any other record type (PostgreSQL `statement`, `session_start`, `session_end`: see
    /// `protocols::postgres::audit`). Callers must never put unmasked result values in it.
    pub fn record_any<T: Serialize>(&self, rec: &T) {
        match serde_json::to_string(rec) {
            Ok(line) => {
                let _ = self.tx.send(Msg::Record(line));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise audit record"),
        }
    }

    /// Waits until everything recorded so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Pause after each write, so that records arriving meanwhile share the next write.
const COALESCE: Duration = Duration::from_millis(1);

fn writer(mut out: Box<dyn Write + Send>, mut rx: mpsc::UnboundedReceiver<Msg>, path: PathBuf) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.blocking_recv() {
        let mut waiters = Vec::new();
        let mut next = Some(first);
        // Batch whatever is queued into one write.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(line) => {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                }
                Msg::Flush(done) => waiters.push(done),
            }
            next = rx.try_recv().ok();
        }
        if !buf.is_empty() {
            if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                tracing::error!(path = %path.display(), error = %e, "audit write failed");
            }
            buf.clear();
        }
        let waited = !waiters.is_empty();
        for w in waiters {
            let _ = w.send(());
        }
        if !waited {
            std::thread::sleep(COALESCE);
        }
    }
}
