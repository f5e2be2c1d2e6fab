//! Local control socket of a running daemon (`<state dir>/run/<instance>.sock`): `status`
//! and `reload` (plain words), or a JSON `Request` (approvals, agent token), one line each
//! way. `interceptor status` asks every daemon it finds.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::proxy::LiveConnStatus;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {path}: the daemon answered something unreadable: {detail}")]
    Protocol { path: PathBuf, detail: String },
    #[error("control socket {0}: no answer within 5 s (the daemon may be stuck)")]
    Timeout(PathBuf),
}

/// What a daemon reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub instance: String,
    pub mode: String,
    pub pid: u32,
    pub cgroup: String,
    pub policy: String,
    pub policy_summary: String,
    pub listeners: Vec<String>,
    pub started: String,
    pub uptime_secs: f64,
    pub audit_log: String,
    pub pin_dir: String,
    pub live: Vec<LiveConnStatus>,
    /// Handed over by the kernel but not yet accepted by the proxy.
    pub pending_handoffs: usize,
    pub counters: BTreeMap<String, u64>,
    pub kernel_counters: BTreeMap<String, u64>,
    /// Established TCP connections of the cgroup that do not go through the proxy (they
    /// existed before attach).
    #[serde(default)]
    pub outside: Vec<crate::outside::OutsideConn>,
    /// What the socket guards hold: socket kinds per cgroup, UDP entries, DNS listeners.
    #[serde(default)]
    pub guards: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Reply {
    Status(Box<Status>),
    Reloaded {
        summary: String,
    },
    Error {
        message: String,
    },
    /// Answer of an approvals call: HTTP-like status and JSON body.
    Approvals {
        status: u16,
        body: serde_json::Value,
    },
    /// The agent token was replaced.
    Token {
        summary: String,
    },
}

/// A structured request (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    Approvals(crate::approvals::api::Authed),
    /// A fresh agent token for `run --token` / `attach --token` agents.
    Token(String),
}

/// What the server needs from the daemon.
pub trait Handler: Send + Sync + 'static {
    fn status(&self) -> Status;
    fn reload(&self) -> Result<String, String>;
    /// `peer_pid`: the calling process (SO_PEERCRED).
    fn approvals(&self, req: crate::approvals::api::Authed, peer_pid: Option<i32>) -> Reply;
    /// Refused from inside the agents' cgroup, like approvals.
    fn set_token(&self, token: &str, peer_pid: Option<i32>) -> Result<String, String>;
}

pub fn socket_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

/// Serves the control socket until the task is dropped.
pub async fn serve(
    path: PathBuf,
    handler: Arc<dyn Handler>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(io_err)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                let mut rd = BufReader::new(rd);
                if tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line))
                    .await
                    .is_err()
                {
                    return;
                }
                let reply = match line.trim() {
                    "status" => Reply::Status(Box::new(handler.status())),
                    "reload" => match tokio::task::block_in_place(|| handler.reload()) {
                        Ok(summary) => Reply::Reloaded { summary },
                        Err(message) => Reply::Error { message },
                    },
                    json if json.starts_with('{') => match serde_json::from_str::<Request>(json) {
                        Ok(Request::Approvals(a)) => handler.approvals(a, peer_pid),
                        Ok(Request::Token(t)) => match handler.set_token(&t, peer_pid) {
                            Ok(summary) => Reply::Token { summary },
                            Err(message) => Reply::Error { message },
                        },
                        Err(e) => Reply::Error {
                            message: format!("unreadable request: {e}"),
                        },
                    },
                    other => Reply::Error {
                        message: format!("unknown command {other:?}; expected status or reload"),
                    },
                };
                let mut out = serde_json::to_string(&reply).unwrap_or_default();
                out.push('\n');
                let _ = wr.write_all(out.as_bytes()).await;
            });
        }
    }))
}

/// Sends one command to the daemon at `path`.
pub async fn request(path: &Path, command: &str) -> Result<Reply, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let fut = async {
        let mut s = UnixStream::connect(path).await.map_err(io_err)?;
        s.write_all(format!("{}\n", command.trim_end()).as_bytes())
            .await
            .map_err(io_err)?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(io_err)?;
        serde_json::from_str(&line).map_err(|e| ControlError::Protocol {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| ControlError::Timeout(path.to_path_buf()))?
}

/// Control sockets of the daemons under `state_dir`.
pub fn sockets(state_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(socket_dir(state_dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Human-readable status of one daemon.
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({} mode, pid {}), up {:.0}s",
        s.instance, s.mode, s.pid, s.uptime_secs
    );
    let _ = writeln!(out, "  cgroup:    {}", s.cgroup);
    let _ = writeln!(out, "  policy:    {} — {}", s.policy, s.policy_summary);
    let _ = writeln!(out, "  listeners: {}", s.listeners.join(", "));
    let _ = writeln!(out, "  audit log: {}", s.audit_log);
    let _ = writeln!(out, "  pins:      {}", s.pin_dir);
    let c = |k: &str| s.counters.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "  connections: {} accepted, {} allowed, {} denied, {} refused (no kernel record), {} upstream errors, {} live, {} pending hand-offs",
        c("accepted"), c("allowed"), c("denied"), c("refused_no_record"), c("upstream_errors"), s.live.len(), s.pending_handoffs
    );
    let kernel: Vec<String> = s
        .kernel_counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(out, "  kernel:    {}", kernel.join(" "));
    if !s.guards.is_null() {
        let _ = writeln!(out, "  guards:    {}", s.guards);
    }
    if !s.outside.is_empty() {
        let _ = writeln!(
            out,
            "  WARNING: {} established connection(s) bypass the proxy (opened before attach):",
            s.outside.len()
        );
        for o in &s.outside {
            let _ = writeln!(
                out,
                "    pid {} ({}) {} -> {}",
                o.pid, o.comm, o.local, o.remote
            );
        }
    }
    if !s.live.is_empty() {
        let _ = writeln!(
            out,
            "  {:<16} {:>7} {:<16} {:<28} {:>9} {:>9} {:>7}",
            "SESSION", "PID", "COMM", "DESTINATION", "UP", "DOWN", "AGE"
        );
        for l in &s.live {
            let _ = writeln!(
                out,
                "  {:<16} {:>7} {:<16} {:<28} {:>9} {:>9} {:>6.1}s",
                l.session, l.pid, l.comm, l.destination, l.bytes_up, l.bytes_down, l.age_secs
            );
        }
    }
    out
}
