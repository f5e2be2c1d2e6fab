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
    #[error("audit sink: {0}")]
    Sink(String),
    #[error(transparent)]
    Harden(#[from] crate::harden::HardenError),
    #[error("agent token: {0}")]
    Token(String),
    #[error("cannot serve the approvals API on {addr}: {source}")]
    ApprovalsApi {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    /// Plain audit file (no chain); `-` = stdout. `None`: the chained store (`audit`).
    pub audit_log: Option<PathBuf>,
    /// (issue 6) Chained store, durability mode and sink.
    pub audit: crate::audit::cmd::AuditArgs,
    pub metrics_addr: Option<SocketAddr>,
    pub connect_timeout: Duration,
    /// Address of the approvals HTTP API, if served.
    pub approvals_listen: Option<SocketAddr>,
    /// Where the agents' token comes from, if they have one.
    pub token: Option<TokenArg>,
}

/// Source of an agent token.
#[derive(Debug, Clone)]
pub enum TokenArg {
    File(PathBuf),
    /// Environment variable of the daemon.
    Env(String),
}

fn bind_token(arg: &TokenArg, policy: &Policy) -> Result<crate::auth::TokenBinding, DaemonError> {
    use crate::auth::TokenBinding;
    if policy.issuers().is_empty() {
        return Err(DaemonError::Token(
            "an agent token was given but the policy configures no `auth.issuers` to check it"
                .into(),
        ));
    }
    match arg {
        TokenArg::File(f) => {
            TokenBinding::from_file(policy.issuers(), f.clone()).map_err(DaemonError::Token)
        }
        TokenArg::Env(v) => {
            let t = std::env::var(v)
                .map_err(|_| DaemonError::Token(format!("--token-env {v}: not set")))?;
            TokenBinding::new(policy.issuers(), &t, None)
                .map_err(|e| DaemonError::Token(format!("--token-env {v}: {e}")))
        }
    }
}

/// Starts (or stops) the webhook notifier for the policy's `approvals.webhook`.
fn set_notifier(shared: &Shared, policy: &Policy) {
    let n = policy
        .approvals()
        .and_then(|a| a.webhook.as_ref())
        .and_then(|w| {
            crate::approvals::webhook::Notifier::start(w, shared.instance.clone())
                .map_err(|e| tracing::error!(error = %e, "approval webhook disabled"))
                .ok()
        })
        .map(Arc::new);
    shared.approvals.set_notifier(n);
}

pub struct Daemon {
    shared: Arc<Shared>,
    attachment: Option<Attachment>,
    _programs: Programs,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sessions: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    control_path: PathBuf,
    /// Until `serve_control`: the handler of the control socket, not serving yet.
    control: Option<Arc<ControlHandler>>,
    shutdown: watch::Sender<bool>,
    sink: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
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
        let kernel_policy = programs.take_kernel_policy()?;
        let udp_callers = programs.take_udp_callers()?;
        let (l4, l6) = proxy::bind(opts.listen_port).await?;
        let v4 = l4.local_addr().map_err(|source| proxy::ProxyError::Bind {
            addr: ([127, 0, 0, 1], opts.listen_port).into(),
            source,
        })?;
        let v6 = l6.as_ref().and_then(|l| l.local_addr().ok());
        programs.set_proxy(v4, v6)?;
        let audit_settings =
            opts.audit
                .settings(opts.audit_log.clone(), &opts.state_dir, &opts.instance);
        let audit_path = audit_settings.location();
        let audit = AuditLog::start(audit_settings.clone())?;
        let sink = start_sink(&opts, &audit_settings, &audit)?;
        let (shutdown, _) = watch::channel(false);
        let mut listeners: Vec<SocketAddr> = std::iter::once(v4).chain(v6).collect();
        let token = match &opts.token {
            Some(arg) => {
                let b = bind_token(arg, &policy)?;
                let c = b.claims();
                tracing::info!(subject = %c.subject, groups = ?c.groups, issuer = %c.issuer, expires = c.expires, "agent token bound");
                Some(Arc::new(b))
            }
            None => None,
        };
        let api_listener = match opts.approvals_listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::ApprovalsApi { addr, source })?;
                // The agents must not reach it: it is one of the proxy's own listeners.
                listeners.push(l.local_addr().unwrap_or(addr));
                Some(l)
            }
            None => None,
        };
        let approvals = crate::approvals::Registry::new(opts.instance.clone(), audit.clone());
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
            approvals,
            token,
        });
        set_notifier(&shared, &shared.policy());
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
        let harden = crate::harden::Harden::start(
            kernel_policy,
            udp_callers,
            programs.packet_guard(),
            shared.clone(),
        )
        .await?;
        tasks.push(harden.spawn_reapply());
        if let Some(l) = api_listener {
            let (reg, s) = (shared.approvals.clone(), shared.clone());
            let policy: Arc<dyn Fn() -> Arc<Policy> + Send + Sync> = Arc::new(move || s.policy());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::approvals::api::serve(l, reg, policy).await {
                    tracing::error!(error = %e, "approvals API failed");
                }
            }));
        }

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
            harden: harden.clone(),
            opts: opts.clone(),
            started,
            started_at: now_rfc3339(),
            audit_path: audit_path.display().to_string(),
            pin_dir: pin_dir.display().to_string(),
        });
        let control_path =
            control::socket_dir(&opts.state_dir).join(format!("{}.sock", opts.instance));
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
            control: Some(handler),
            shutdown,
            sink,
        })
    }

    /// Opens the control socket: from now on `status` lists this instance. Callers do this
    /// once their own start-up checks have run (e.g. `attach --strict`), so nothing watching
    /// `status` sees the instance before it is in its final state.
    pub async fn serve_control(&mut self) -> Result<(), DaemonError> {
        if let Some(handler) = self.control.take() {
            self.tasks
                .push(control::serve(self.control_path.clone(), handler).await?);
        }
        Ok(())
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
        // Held commands fail now, without running.
        self.shared.approvals.abandon_all();
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
        self.shared.audit.close().await;
        if let Some((stop, task)) = self.sink.take() {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
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

/// (issue 6) The PostgreSQL audit sink, when configured (chained store only).
#[allow(clippy::type_complexity)]
fn start_sink(
    opts: &Options,
    settings: &crate::audit::Settings,
    audit: &AuditLog,
) -> Result<Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>, DaemonError> {
    use crate::audit::sink_pg;
    let Some(url) = &opts.audit.audit_sink else {
        return Ok(None);
    };
    if settings.plain.is_some() {
        return Err(DaemonError::Sink(
            "--audit-sink copies the chained store; it cannot be used with --audit-log".into(),
        ));
    }
    let cfg = sink_pg::SinkConfig::new(
        url,
        opts.audit.audit_sink_password_file.as_deref(),
        &settings.chain,
        &settings.location(),
    )
    .map_err(|e| DaemonError::Sink(e.to_string()))?;
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(sink_pg::run(cfg, audit.durable_position(), rx));
    Ok(Some((stop, task)))
}

fn reload(shared: &Shared, path: &std::path::Path) -> Result<String, String> {
    use std::sync::atomic::Ordering::Relaxed;
    match load_policy(path) {
        Ok(p) => {
            let summary = p.summary();
            set_notifier(shared, &p);
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
        // getaddrinfo may block for seconds: on a blocking thread (block_in_place would hand
        // the worker's sessions to a new thread each period).
        let Ok((fresh, res)) = tokio::task::spawn_blocking(move || {
            let res = fresh.resolve_names();
            (fresh, res)
        })
        .await
        else {
            continue;
        };
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
    harden: Arc<crate::harden::Harden>,
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
            outside: crate::outside::scan(self.opts.cgroup.path(), &self.shared.listeners)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot list the cgroup's connections");
                    Vec::new()
                }),
            guards: self.harden.status_json(),
        }
    }

    fn reload(&self) -> Result<String, String> {
        reload(&self.shared, &self.opts.policy_path)
    }

    fn approvals(
        &self,
        req: crate::approvals::api::Authed,
        peer_pid: Option<i32>,
    ) -> control::Reply {
        let inside = self.peer_inside(peer_pid);
        let policy = self.shared.policy();
        let a = crate::approvals::api::handle(
            &policy,
            &self.shared.approvals,
            &req.token,
            req.call,
            inside,
        );
        control::Reply::Approvals {
            status: a.status,
            body: a.body,
        }
    }

    fn set_token(&self, token: &str, peer_pid: Option<i32>) -> Result<String, String> {
        if self.peer_inside(peer_pid) {
            return Err(format!(
                "{}: the agent token cannot be set from inside the agents' cgroup (nor by a caller whose cgroup cannot be read)",
                self.opts.instance
            ));
        }
        let Some(b) = &self.shared.token else {
            return Err(format!(
                "{} was started without --token; its agents have no token to renew",
                self.opts.instance
            ));
        };
        let policy = self.shared.policy();
        let c = b.set(policy.issuers(), token).map_err(|e| e.to_string())?;
        tracing::info!(subject = %c.subject, expires = c.expires, "agent token replaced");
        Ok(format!(
            "{}: agent token of {} bound, expires at {} (unix)",
            self.opts.instance, c.subject, c.expires
        ))
    }
}

impl ControlHandler {
    /// Whether the caller of the control socket may be one of the agents: it runs in the
    /// attached cgroup or below, or that cannot be told (no peer pid, say).
    fn peer_inside(&self, peer_pid: Option<i32>) -> bool {
        peer_pid.is_none_or(|pid| {
            pid_inside_cgroup(&self.shared.cgroup_root, &self.shared.cgroup_top, pid)
        })
    }
}

/// Whether process `pid` runs in cgroup `top` (under the cgroup2 mount `root`) or below
/// it. Fails closed: a process whose cgroup cannot be read counts as inside — a forked
/// child may connect, exit and leave the socket to its parent.
fn pid_inside_cgroup(root: &std::path::Path, top: &std::path::Path, pid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return true;
    };
    let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return true;
    };
    root.join(rel.trim_start_matches('/')).starts_with(top)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unreadable_peer_counts_as_inside_the_agents_cgroup() {
        let root = crate::cgroup::cgroup2_root().unwrap_or_else(|_| "/sys/fs/cgroup".into());
        let elsewhere = root.join("no-such-agents.slice");
        let me = std::process::id() as i32;
        assert!(!super::pid_inside_cgroup(&root, &elsewhere, me));
        assert!(super::pid_inside_cgroup(&root, &root, me));
        // A process that exited (pids never reach i32::MAX), or no process at all.
        assert!(super::pid_inside_cgroup(&root, &elsewhere, i32::MAX));
        assert!(super::pid_inside_cgroup(&root, &elsewhere, 0));
    }
}
