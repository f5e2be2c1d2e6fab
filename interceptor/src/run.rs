//! `interceptor run -- CMD`: a fresh cgroup, the programs attached to it, the command started
//! inside it (optionally as another user), signals forwarded, everything removed at the end.

use std::{ffi::CString, os::unix::ffi::OsStrExt, time::Duration};

use nix::{
    sys::signal::{kill, Signal},
    unistd::{Pid, User},
};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cgroup::Cgroup,
    daemon::{Daemon, Options},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown user {0:?} (give a name from /etc/passwd or a numeric uid)")]
    UnknownUser(String),
    #[error("cannot start {cmd:?}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

impl RunError {
    /// Exit code for the interceptor's own failure, as `env`/`docker run` do: 127 when the
    /// command does not exist, 126 when it cannot be executed, 125 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            RunError::Spawn { .. } => 126,
            _ => 125,
        }
    }
}

/// Credentials the child switches to before exec.
struct Creds {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    name: String,
    home: String,
}

fn lookup_user(spec: &str) -> Result<Creds, RunError> {
    let user = match spec.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()).ok().flatten(),
        Err(_) => User::from_name(spec).ok().flatten(),
    }
    .ok_or_else(|| RunError::UnknownUser(spec.to_string()))?;
    let cname =
        CString::new(user.name.clone()).map_err(|_| RunError::UnknownUser(spec.to_string()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()]);
    Ok(Creds {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        name: user.name,
        home: user.dir.display().to_string(),
    })
}

/// Runs `command` under the interceptor and returns its exit code (128+N if killed by N).
pub async fn run(
    mut opts: Options,
    user: Option<String>,
    command: Vec<String>,
) -> Result<i32, RunError> {
    let creds = user.as_deref().map(lookup_user).transpose()?;
    let cgroup = opts.cgroup.clone();
    let mut daemon = match Daemon::start(opts.clone()).await {
        Ok(d) => d,
        Err(e) => {
            let _ = cgroup.remove();
            return Err(e.into());
        }
    };
    if let Err(e) = daemon.serve_control().await {
        daemon.shutdown(Duration::from_secs(1)).await;
        let _ = cgroup.remove();
        return Err(e.into());
    }
    opts.cgroup = cgroup.clone();
    // (issue 4) When the policy intercepts TLS, the child trusts the local CA.
    // Secrets the daemon holds in its environment are not passed on to the child.
    let ca_env = crate::protocols::http::child_ca_env(&opts.state_dir);
    let policy = std::fs::read_to_string(&opts.policy_path)
        .ok()
        .and_then(|t| crate::policy::Policy::from_str(&t, "policy").ok());
    let secrets = child_secret_env(&opts, policy.as_ref());
    let result = supervise(&cgroup, creds, &command, &ca_env, &secrets).await;
    // The command is done: end whatever it left behind, then stop serving and detach.
    if let Err(e) = cgroup.kill_all(Duration::from_secs(5)) {
        tracing::error!(error = %e, "processes left in the cgroup");
    }
    daemon.shutdown(Duration::from_secs(2)).await;
    if let Err(e) = cgroup.remove() {
        tracing::error!(error = %e, "cannot remove the run cgroup");
    }
    result
}

/// Environment variables that hold the daemon's (or the operator's) secrets and must not
/// reach the command: the policy's (`Policy::secret_env_vars`), the audit sink's password,
/// the approval webhook's signing secret, the agents' token given by `--token-env`, and an
/// approver's token (the agent could approve its own held commands with it).
fn child_secret_env(opts: &Options, policy: Option<&crate::policy::Policy>) -> Vec<String> {
    let mut v = policy.map(|p| p.secret_env_vars()).unwrap_or_default();
    v.push(crate::audit::sink_pg::PASSWORD_ENV.into());
    v.push(APPROVER_TOKEN_ENV.into());
    v.extend(
        policy
            .and_then(|p| p.approvals())
            .and_then(|a| a.webhook.as_ref())
            .and_then(|w| w.secret_env.clone()),
    );
    if let Some(crate::daemon::TokenArg::Env(name)) = &opts.token {
        v.push(name.clone());
    }
    v.sort();
    v.dedup();
    v
}

/// The approvals CLI's token variable (`cli.rs`, `--token-file`'s fallback).
const APPROVER_TOKEN_ENV: &str = "INTERCEPTOR_APPROVER_TOKEN";

async fn supervise(
    cgroup: &Cgroup,
    creds: Option<Creds>,
    command: &[String],
    env: &[(&'static str, std::path::PathBuf)],
    secrets: &[String],
) -> Result<i32, RunError> {
    let procs = CString::new(cgroup.procs_file().as_os_str().as_bytes()).expect("path without NUL");
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    for s in secrets {
        cmd.env_remove(s);
    }
    if let Some(c) = &creds {
        cmd.env("USER", &c.name)
            .env("LOGNAME", &c.name)
            .env("HOME", &c.home);
    }
    let ids = creds.as_ref().map(|c| (c.uid, c.gid, c.groups.clone()));
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Enter the cgroup first (as root), so no connect can happen outside it, then
            // drop privileges.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            crate::limits::restore_nofile();
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        cmd: command[0].clone(),
        source,
    })?;
    let pid = Pid::from_raw(child.id().map(|p| p as i32).unwrap_or(0));
    tracing::info!(pid = pid.as_raw(), cmd = ?command, cgroup = %cgroup.path().display(), "started");

    let kinds = [
        (SignalKind::terminate(), Signal::SIGTERM),
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::quit(), Signal::SIGQUIT),
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
        (SignalKind::interrupt(), Signal::SIGINT),
    ];
    let mut streams = Vec::new();
    for (kind, sig) in kinds {
        if let Ok(s) = signal(kind) {
            streams.push((s, sig));
        }
    }
    // A terminal's Ctrl-C already reaches the child (same process group): forwarding SIGINT
    // again would deliver it twice, so SIGINT is forwarded only without a terminal.
    let interactive = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (mut stream, sig) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(sig) = rx.recv() => {
                if sig == Signal::SIGINT && interactive {
                    continue;
                }
                tracing::debug!(signal = ?sig, "forwarding");
                let _ = kill(pid, sig);
            }
        }
    };
    let status = status.map_err(|source| RunError::Spawn {
        cmd: command[0].clone(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
