//! `interceptor attach`: guard an existing cgroup until SIGTERM; SIGHUP reloads the policy.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    daemon::{Daemon, DaemonError, Options},
    outside,
};

/// What `attach` does about connections the cgroup opened before it was attached (they do
/// not go through the proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strict {
    /// Log a warning per connection; `status` lists them.
    Warn,
    /// Detach again and fail.
    Refuse,
    /// Close them with SOCK_DESTROY (the process gets ECONNABORTED, the peer a reset).
    Destroy,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("--strict: the cgroup holds {} established connection(s) that bypass the proxy ({}); close them, or use --strict=destroy to have them closed", .0.len(), describe(.0))]
    Outside(Vec<outside::OutsideConn>),
    #[error("--strict: cannot check or close the cgroup's connections: {0}")]
    Diag(#[from] crate::sockdiag::SockDiagError),
}

fn describe(v: &[outside::OutsideConn]) -> String {
    v.iter()
        .map(|o| format!("pid {} {} -> {}", o.pid, o.local, o.remote))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs after the programs are attached, so no connection can slip in between the check and
/// the attach: whatever is found was opened before.
async fn check_outside(daemon: &Daemon, opts: &Options, strict: Strict) -> Result<(), AttachError> {
    let listeners = daemon.shared().listeners.clone();
    let found = tokio::task::block_in_place(|| outside::scan(opts.cgroup.path(), &listeners));
    let found = match (found, strict) {
        (Ok(v), _) => v,
        (Err(e), Strict::Warn) => {
            tracing::warn!(error = %e, "cannot list the cgroup's connections");
            return Ok(());
        }
        (Err(e), _) => return Err(e.into()),
    };
    if found.is_empty() {
        return Ok(());
    }
    match strict {
        Strict::Warn => {
            for o in &found {
                tracing::warn!(pid = o.pid, comm = %o.comm, local = %o.local, remote = %o.remote, "connection opened before attach bypasses the proxy (see --strict)");
            }
            Ok(())
        }
        Strict::Refuse => Err(AttachError::Outside(found)),
        Strict::Destroy => {
            let n = tokio::task::block_in_place(|| outside::destroy(&found))?;
            tracing::info!(
                closed = n,
                "closed connections opened before attach (SOCK_DESTROY)"
            );
            Ok(())
        }
    }
}

/// Instance name for an attached cgroup: `attach-` + its path relative to the cgroup2 root.
pub fn instance_name(relative: &str) -> String {
    let name: String = relative
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attach-{}",
        if name.is_empty() { "root".into() } else { name }
    )
}

pub async fn attach(opts: Options, strict: Strict) -> Result<(), AttachError> {
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    let policy_path = opts.policy_path.clone();
    let mut daemon = Daemon::start(opts.clone()).await?;
    // `status` shows the instance only once the pre-attach connections are dealt with.
    if let Err(e) = check_outside(&daemon, &opts, strict).await {
        daemon.shutdown(Duration::from_secs(1)).await;
        return Err(e);
    }
    if let Err(e) = daemon.serve_control().await {
        daemon.shutdown(Duration::from_secs(1)).await;
        return Err(e.into());
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => { let _ = tokio::task::block_in_place(|| daemon.reload(&policy_path)); }
        }
    }
    tracing::info!(
        "stopping: new connects from the cgroup are refused until the programs are detached"
    );
    daemon.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::instance_name("/agents.slice"), "attach-agents.slice");
        assert_eq!(super::instance_name("/a/b c"), "attach-a_b_c");
        assert_eq!(super::instance_name("/"), "attach-root");
    }
}
