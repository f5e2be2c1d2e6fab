//! One daemon instance: policy + kernel programs + proxy listeners + audit + control socket,
//! started and stopped in an order that never leaves the cgroup open while it is attached.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicU64, Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinSet};

use crate::{
    audit::{now_rfc3339, AuditLog},
    cgroup::Cgroup,
    control::{self, Handler, Status},
    ebpf::{self, Attachment, Counters, Programs},
    metrics,
    policy::{NameResolution, Policy},
    proxy::{self, Shared},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The policy error already names the file and line.
    #[error("{source}")]
    Policy {
        path: PathBuf,
        #[source]
        source: crate::policy::PolicyError,
    },
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    HttpTls(#[from] crate::protocols::http::tls::TlsError),
}

/// How to start a daemon instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// `run-PID` or `attach-NAME`: names the pin directory and the control socket.
    pub instance: String,
    pub mode: &'static str,
    pub cgroup: Cgroup,
    pub policy_path: PathBuf,
    /// 0 = any free port.
    pub listen_port: u16,
    pub state_dir: PathBuf,
    /// Audit destination; `None` = `<state dir>/audit.jsonl`; `-` = stdout.
    pub audit_log: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub connect_timeout: Duration,
}

pub struct Daemon {
    shared: Arc<Shared>,
    attachment: Option<Attachment>,
    _programs: Programs,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sessions: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    control_path: PathBuf,
    shutdown: watch::Sender<bool>,
}

/// Loads a policy file, logging how DNS names resolved.
pub fn load_policy(path: &std::path::Path) -> Result<Policy, DaemonError> {
    let (policy, resolutions) =
        Policy::load_resolved(path).map_err(|source| DaemonError::Policy {
            path: path.into(),
            source,
        })?;
    log_resolutions(&resolutions);
    tracing::info!(policy = %path.display(), "{}", policy.summary());
    Ok(policy)
}

pub fn log_resolutions(res: &[NameResolution]) {
    for r in res {
        match &r.result {
            Ok(addrs) => tracing::info!(name = %r.name, ?addrs, "resolved DNS name in policy"),
            Err(e) => {
                tracing::warn!(name = %r.name, error = %e, "cannot resolve DNS name in policy: its rules match nothing until it resolves")
            }
        }
    }
}

impl Daemon {
    /// Loads everything, starts serving, then attaches to the cgroup.
    pub async fn start(opts: Options) -> Result<Self, DaemonError> {
        let policy = tokio::task::block_in_place(|| load_policy(&opts.policy_path))?;
        crate::protocols::http::init(&opts.state_dir, &policy)?;
        let mut programs = Programs::load()?;
        let clients = programs.take_clients()?;
        let counters = Arc::new(programs.take_counters()?);
        let (l4, l6) = proxy::bind(opts.listen_port).await?;
        let v4 = l4.local_addr().map_err(|source| proxy::ProxyError::Bind {
            addr: ([127, 0, 0, 1], opts.listen_port).into(),
            source,
        })?;
        let v6 = l6.as_ref().and_then(|l| l.local_addr().ok());
        programs.set_proxy(v4, v6)?;
        let audit_path = opts
            .audit_log
            .clone()
            .unwrap_or_else(|| opts.state_dir.join("audit.jsonl"));
        let audit = AuditLog::open(&audit_path).await?;
        let (shutdown, _) = watch::channel(false);
        let listeners: Vec<SocketAddr> = std::iter::once(v4).chain(v6).collect();
        let shared = Arc::new(Shared {
            instance: opts.instance.clone(),
            policy: RwLock::new(Arc::new(policy)),
            clients,
            audit,
            metrics: Default::default(),
            live: Mutex::new(HashMap::new()),
            listeners: listeners.clone(),
            cgroup_root: crate::cgroup::cgroup2_root()?,
            cgroup_top: opts.cgroup.path().to_path_buf(),
            cgroup_names: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            session_prefix: session_prefix(),
            connect_timeout: opts.connect_timeout,
            shutdown: shutdown.clone(),
        });
        let sessions = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let mut tasks = vec![tokio::spawn(proxy::serve(
            l4,
            shared.clone(),
            sessions.clone(),
        ))];
        if let Some(l6) = l6 {
            tasks.push(tokio::spawn(proxy::serve(
                l6,
                shared.clone(),
                sessions.clone(),
            )));
        }
        tasks.push(tokio::spawn(refresh_dns(shared.clone())));

        let pin_dir = ebpf::pin_dir(&opts.instance);
        let attachment = programs.attach(opts.cgroup.path(), &pin_dir)?;
        tracing::info!(
            instance = %opts.instance,
            cgroup = %opts.cgroup.path().display(),
            listeners = ?listeners,
            audit = %audit_path.display(),
            pins = %pin_dir.display(),
            "attached: every TCP connect from the cgroup now goes through the proxy"
        );

        let started = Instant::now();
        let handler = Arc::new(ControlHandler {
            shared: shared.clone(),
            counters: counters.clone(),
            opts: opts.clone(),
            started,
            started_at: now_rfc3339(),
            audit_path: audit_path.display().to_string(),
            pin_dir: pin_dir.display().to_string(),
        });
        let control_path =
            control::socket_dir(&opts.state_dir).join(format!("{}.sock", opts.instance));
        tasks.push(control::serve(control_path.clone(), handler).await?);
        if let Some(addr) = opts.metrics_addr {
            let (s, c) = (shared.clone(), counters.clone());
            let body: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || metrics::render(&s.metrics, &c.read()));
            tasks.push(tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, body).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            }));
        }
        // Loading parsed the kernel's BTF (megabytes, freed now): hand that memory back to the
        // OS so the idle daemon stays small.
        // (glibc only: musl, used for the static VM-test build, has no malloc_trim.)
        // SAFETY: malloc_trim only releases free heap pages.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        Ok(Self {
            shared,
            attachment: Some(attachment),
            _programs: programs,
            tasks,
            sessions,
            control_path,
            shutdown,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the policy file; on error the old policy stays.
    pub fn reload(&self, path: &std::path::Path) -> Result<String, String> {
        reload(&self.shared, path)
    }

    /// Stops accepting (new connects from the cgroup then fail: nothing listens), waits up to
    /// `grace` for live sessions, ends the rest, writes their audit records, then detaches.
    pub async fn shutdown(mut self, grace: Duration) {
        for t in &self.tasks {
            t.abort();
        }
        let mut sessions = std::mem::take(&mut *self.sessions.lock().await);
        let drained = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(live = sessions.len(), "ending live connections");
            let _ = self.shutdown.send(true);
            while sessions.join_next().await.is_some() {}
        }
        self.shared.audit.flush().await;
        if let Some(att) = self.attachment.take() {
            let dir = att.pin_dir().to_path_buf();
            match att.detach() {
                Ok(()) => tracing::info!(pins = %dir.display(), "detached"),
                Err(e) => {
                    tracing::error!(error = %e, "detach failed; remove the pins with `interceptor detach`")
                }
            }
        }
        let _ = std::fs::remove_file(&self.control_path);
    }
}

fn reload(shared: &Shared, path: &std::path::Path) -> Result<String, String> {
    use std::sync::atomic::Ordering::Relaxed;
    match load_policy(path) {
        Ok(p) => {
            let summary = p.summary();
            shared.set_policy(p);
            shared.metrics.policy_reloads.fetch_add(1, Relaxed);
            tracing::info!(policy = %path.display(), "policy reloaded; live connections keep running");
            Ok(summary)
        }
        Err(e) => {
            shared.metrics.policy_reload_failures.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "policy reload failed; keeping the previous policy");
            Err(e.to_string())
        }
    }
}

/// Re-resolves the policy's DNS names every `dns_refresh` period.
async fn refresh_dns(shared: Arc<Shared>) {
    loop {
        let period = shared.policy().dns_refresh();
        tokio::time::sleep(period).await;
        let current = shared.policy();
        let mut fresh = (*current).clone();
        let res = tokio::task::block_in_place(|| fresh.resolve_names());
        if res.iter().any(|r| r.result.is_err()) {
            log_resolutions(&res);
        }
        // Swap only if nobody reloaded meanwhile.
        let mut slot = shared.policy.write().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&slot, &current) {
            *slot = Arc::new(fresh);
        }
    }
}

fn session_prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), ms & 0xffff_ffff)
}

struct ControlHandler {
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    opts: Options,
    started: Instant,
    started_at: String,
    audit_path: String,
    pin_dir: String,
}

impl Handler for ControlHandler {
    fn status(&self) -> Status {
        let policy = self.shared.policy();
        let counters: BTreeMap<String, u64> = self
            .shared
            .metrics
            .snapshot()
            .into_iter()
            .map(|(name, _, _, v)| {
                let short = name
                    .trim_start_matches("interceptor_")
                    .trim_start_matches("connections_")
                    .trim_end_matches("_total");
                (short.to_string(), v)
            })
            .collect();
        Status {
            instance: self.opts.instance.clone(),
            mode: self.opts.mode.to_string(),
            pid: std::process::id(),
            cgroup: self.opts.cgroup.path().display().to_string(),
            policy: self.opts.policy_path.display().to_string(),
            policy_summary: policy.summary(),
            listeners: self
                .shared
                .listeners
                .iter()
                .map(|a| a.to_string())
                .collect(),
            started: self.started_at.clone(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            audit_log: self.audit_path.clone(),
            pin_dir: self.pin_dir.clone(),
            live: self.shared.live_status(),
            pending_handoffs: self.shared.clients.pending(),
            counters,
            kernel_counters: self
                .counters
                .read()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    fn reload(&self) -> Result<String, String> {
        reload(&self.shared, &self.opts.policy_path)
    }
}
