//! The userspace proxy: accepts redirected connections, recovers who connected where from
//! the kernel, asks the policy, and carries out the decision (relay or reset).

pub mod session;
pub mod splice;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicU64, Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinSet};

use crate::{audit::AuditLog, ebpf::ClientMap, metrics::Metrics, policy::Policy};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source} (is another interceptor using this port? pick one with --listen-port)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One connection being relayed, for `interceptor status`.
pub struct LiveConn {
    pub session: String,
    pub pid: u32,
    pub comm: String,
    pub destination: SocketAddr,
    pub rule: Option<String>,
    pub started: Instant,
    pub bytes_up: Arc<AtomicU64>,
    pub bytes_down: Arc<AtomicU64>,
}

/// What `status` shows about a live connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveConnStatus {
    pub session: String,
    pub pid: u32,
    pub comm: String,
    pub destination: String,
    pub rule: Option<String>,
    pub age_secs: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// State shared by every session of one daemon instance.
pub struct Shared {
    pub instance: String,
    pub policy: RwLock<Arc<Policy>>,
    pub clients: ClientMap,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub live: Mutex<HashMap<u64, LiveConn>>,
    /// The proxy's own listener addresses (a destination equal to one is a loop: denied).
    pub listeners: Vec<SocketAddr>,
    /// cgroup2 mount point and the attached cgroup, to name callers' cgroups.
    pub cgroup_root: PathBuf,
    pub cgroup_top: PathBuf,
    pub cgroup_names: Mutex<HashMap<u64, String>>,
    pub next_session: AtomicU64,
    pub session_prefix: String,
    pub connect_timeout: Duration,
    /// Set to `true` when the daemon stops: live relays end and write their audit records.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Held commands waiting for approvers.
    pub approvals: Arc<crate::approvals::Registry>,
    /// The agents' token (`run --token`), if one is bound.
    pub token: Option<Arc<crate::auth::TokenBinding>>,
}

impl Shared {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bound agent token as the evaluators see it now (expiry checked).
    pub fn agent_token(&self, policy: &Policy) -> Option<crate::policy::AgentToken> {
        self.token.as_ref().map(|t| t.view(policy.issuers()))
    }

    pub fn set_policy(&self, p: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    pub fn live_status(&self) -> Vec<LiveConnStatus> {
        use std::sync::atomic::Ordering::Relaxed;
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = live
            .values()
            .map(|c| LiveConnStatus {
                session: c.session.clone(),
                pid: c.pid,
                comm: c.comm.clone(),
                destination: c.destination.to_string(),
                rule: c.rule.clone(),
                age_secs: c.started.elapsed().as_secs_f64(),
                bytes_up: c.bytes_up.load(Relaxed),
                bytes_down: c.bytes_down.load(Relaxed),
            })
            .collect();
        v.sort_by(|a, b| a.session.cmp(&b.session));
        v
    }

    /// Path of the cgroup with this id, relative to the cgroup2 root (cached).
    pub fn cgroup_name(&self, id: u64) -> Option<String> {
        if let Some(n) = self
            .cgroup_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(n.clone());
        }
        let name = crate::cgroup::find_by_id(&self.cgroup_root, &self.cgroup_top, id)?;
        self.cgroup_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, name.clone());
        Some(name)
    }
}

/// Binds the proxy's listeners: IPv4 loopback always, IPv6 loopback when the host has it.
pub async fn bind(port: u16) -> Result<(TcpListener, Option<TcpListener>), ProxyError> {
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let l4 = TcpListener::bind(v4)
        .await
        .map_err(|source| ProxyError::Bind { addr: v4, source })?;
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
    let l6 = match TcpListener::bind(v6).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(addr = %v6, error = %e, "no IPv6 listener: IPv6 connects from the cgroup will be refused");
            None
        }
    };
    Ok((l4, l6))
}

/// Accepts connections until the task is dropped; every connection runs in `sessions`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    sessions: Arc<tokio::sync::Mutex<JoinSet<()>>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let mut set = sessions.lock().await;
                // Reap finished sessions: a JoinSet keeps each task (and its future's
                // memory) until it is joined, so without this every connection ever
                // accepted stayed allocated until shutdown.
                while let Some(done) = set.try_join_next() {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a session task panicked");
                        }
                    }
                }
                set.spawn(session::handle(stream, peer, shared));
            }
            Err(e) => {
                // EMFILE and friends: keep serving others, back off briefly.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
