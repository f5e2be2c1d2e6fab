//! Audit log: one JSON record per connection, per PostgreSQL statement and more, written by
//! one thread (`audit/writer.rs`) with group commit.
//!
//! Two stores:
//! - chained (default): `<audit dir>/<instance>/segment-NNNNNN.jsonl`, every record with
//!   `seq`, `prev` and `hash` (sha256 chain, `audit/chain.rs`), segments rotated by size and
//!   age and signed when closed (`audit/checkpoint.rs`), checked by `interceptor audit
//!   verify` (`audit/verify.rs`); directory 0700, files 0600.
//! - plain (`--audit-log FILE|-`): JSON lines without chain fields (no tamper evidence).
//!
//! `commit` returns once a record is on disk (fdatasync), so callers can write before they
//! forward; `record`/`record_any` queue a record without waiting.

pub mod bench;
pub mod chain;
pub mod checkpoint;
pub mod cmd;
pub mod segment;
pub mod sessions;
pub mod sink_pg;
pub mod sink_read;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hardening;

use std::{
    fs::OpenOptions,
    io,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::{identity::Identity, policy::Verdict};
use writer::{Msg, Store};

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit store {path}: {source} (check --audit-dir/--audit-log and the state directory's permissions)")]
    Open {
        path: PathBuf,
        #[source]
        source: std::sync::Arc<io::Error>,
    },
    #[error("audit store {path} is in use by another interceptor daemon (one daemon per audit directory; pass a different --audit-dir)")]
    Locked { path: PathBuf },
    #[error("audit store {path}: {detail}")]
    Recover { path: PathBuf, detail: String },
    #[error("audit signing key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("audit store {path} cannot take records: {detail} (free disk space or fix permissions; commands are refused until it can)")]
    Write { path: PathBuf, detail: String },
    #[error("the audit writer has stopped (the daemon is shutting down)")]
    Closed,
    #[error("cannot serialise an audit record: {0}")]
    Serialize(String),
}

impl AuditError {
    fn open(path: &Path, source: io::Error) -> Self {
        AuditError::Open {
            path: path.into(),
            source: std::sync::Arc::new(source),
        }
    }
}

/// Where a record landed: chained store segment (0 in a plain file) and sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub segment: u64,
    pub seq: u64,
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

/// An allowed connection about to be opened upstream (committed before the connect).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionOpen<'a> {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: &'a str,
    pub instance: &'a str,
    pub identity: &'a Identity,
    pub client: String,
    pub destination: String,
    pub rule: Option<&'a str>,
}

/// One record as the JSON line it is stored as (the chain adds `seq`, `prev`, `hash`).
/// Records are plain structs of strings and numbers: should one ever fail to serialise,
/// the line says so instead of vanishing.
pub fn line<T: Serialize>(rec: &T) -> String {
    // Most records are a few hundred bytes: one allocation, no regrowth.
    let mut buf = Vec::with_capacity(512);
    match serde_json::to_writer(&mut buf, rec) {
        Ok(()) => String::from_utf8(buf).expect("serde_json writes UTF-8"),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise audit record");
            let error = serde_json::Value::String(e.to_string());
            format!("{{\"type\":\"unserialisable\",\"error\":{error}}}")
        }
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`. The date and time of day are formatted
/// once per second per thread; each call adds only the milliseconds.
pub fn now_rfc3339() -> String {
    use std::cell::RefCell;
    thread_local!(static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) });
    let now = SystemTime::now();
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let mut s = humantime::format_rfc3339_seconds(whole).to_string();
            s.pop(); // the trailing 'Z'
            *c = (secs, s);
        }
        let mut out = String::with_capacity(c.1.len() + 5);
        out.push_str(&c.1);
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!(".{millis:03}Z"));
        out
    })
}

/// How the daemon's audit store is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Plain mode: this file, or `-` for stdout (no chain, no signatures).
    pub plain: Option<PathBuf>,
    /// Chained mode: records go to `<dir>/<chain>/`.
    pub dir: PathBuf,
    /// Names the chain directory (the daemon instance).
    pub chain: String,
    /// Holds the signing key.
    pub state_dir: PathBuf,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    /// `false` (`--audit-mode async`): `commit` does not wait for the disk.
    pub durable: bool,
}

impl Settings {
    /// Where the records of this instance go (a chain directory or the plain file).
    pub fn location(&self) -> PathBuf {
        match &self.plain {
            Some(p) => p.clone(),
            None => self.dir.join(&self.chain),
        }
    }
}

/// Cheap handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    durable: bool,
    position: watch::Receiver<Position>,
}

impl AuditLog {
    /// Plain mode on `dest` (`-` = stdout), durable commits.
    pub async fn open(dest: &Path) -> Result<Self, AuditError> {
        Self::start(Settings {
            plain: Some(dest.into()),
            dir: PathBuf::new(),
            chain: String::new(),
            state_dir: PathBuf::new(),
            segment_bytes: 0,
            segment_age: Duration::ZERO,
            durable: true,
        })
    }

    /// Opens (and recovers) the store and starts the writer thread.
    pub fn start(s: Settings) -> Result<Self, AuditError> {
        let store = match &s.plain {
            Some(dest) if dest == Path::new("-") => Store::Plain {
                out: Box::new(io::stdout()),
                file: None,
                path: dest.clone(),
                lines: 0,
            },
            Some(dest) => {
                if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| AuditError::open(dest, e))?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dest)
                    .map_err(|e| AuditError::open(dest, e))?;
                let sync = f.try_clone().map_err(|e| AuditError::open(dest, e))?;
                // Character devices (e.g. /dev/null) cannot be synced.
                let is_file = f.metadata().map(|m| m.is_file()).unwrap_or(false);
                Store::Plain {
                    out: Box::new(f),
                    file: is_file.then_some(sync),
                    path: dest.clone(),
                    lines: 0,
                }
            }
            None => {
                segment::private_dir(&s.dir).map_err(|e| AuditError::open(&s.dir, e))?;
                let key = checkpoint::load_or_create_key(&s.state_dir)?;
                let pubfile = s.dir.join(checkpoint::PUB_FILE);
                let pubhex = checkpoint::public_hex(&key.verifying_key());
                if std::fs::read_to_string(&pubfile)
                    .ok()
                    .as_deref()
                    .map(str::trim)
                    != Some(pubhex.as_str())
                {
                    segment::write_private(&pubfile, format!("{pubhex}\n").as_bytes())
                        .map_err(|e| AuditError::open(&pubfile, e))?;
                }
                let store = segment::SegmentStore::open(
                    &s.dir.join(&s.chain),
                    &s.chain,
                    key,
                    segment::Limits {
                        max_bytes: s.segment_bytes.max(4096),
                        max_age: s.segment_age.max(Duration::from_secs(1)),
                    },
                )?;
                Store::Chain(Box::new(store))
            }
        };
        let start_pos = match &store {
            Store::Chain(c) => c.position(),
            Store::Plain { .. } => Position::default(),
        };
        let (tx, rx) = mpsc::channel();
        let (ptx, prx) = watch::channel(start_pos);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer::run(store, rx, ptx, s.durable))
            .map_err(|e| AuditError::open(&s.location(), e))?;
        Ok(Self {
            tx,
            durable: s.durable,
            position: prx,
        })
    }

    pub fn record(&self, rec: &ConnectionRecord) {
        self.record_any(rec)
    }

    /// Queues any other record type without waiting (PostgreSQL `statement`,
    /// `session_start`, `session_end`: see `protocols::postgres::audit`). Callers must never
    /// put unmasked result values in it.
    pub fn record_any<T: Serialize>(&self, rec: &T) {
        let _ = self.tx.send(Msg::Records(vec![line(rec)], None));
    }

    /// Writes `rec` and returns once it is durable (fdatasync'd; one sync covers every record
    /// queued meanwhile, from every session). Callers forward the command only on `Ok`.
    /// With `--audit-mode async` it returns as soon as the record is queued.
    pub async fn commit<T: Serialize>(&self, rec: &T) -> Result<Position, AuditError> {
        self.commit_many(std::slice::from_ref(rec)).await
    }

    /// Like `commit` for several records, written in one piece (all or none).
    pub async fn commit_many<T: Serialize>(&self, recs: &[T]) -> Result<Position, AuditError> {
        let lines = recs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuditError::Serialize(e.to_string()))?;
        self.commit_lines(lines).await
    }

    /// Like `commit_many` for records already serialised with [`line`].
    pub async fn commit_lines(&self, lines: Vec<String>) -> Result<Position, AuditError> {
        if !self.durable {
            self.tx
                .send(Msg::Records(lines, None))
                .map_err(|_| AuditError::Closed)?;
            return Ok(Position::default());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Records(lines, Some(ack)))
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Waits until everything recorded so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then closes and signs the current segment; later records are refused.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The last durable position (for the sink).
    pub fn durable_position(&self) -> watch::Receiver<Position> {
        self.position.clone()
    }
}
