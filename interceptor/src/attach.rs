//! `interceptor attach`: guard an existing cgroup until SIGTERM; SIGHUP reloads the policy.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::daemon::{Daemon, DaemonError, Options};

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

pub async fn attach(opts: Options) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    let policy_path = opts.policy_path.clone();
    let daemon = Daemon::start(opts).await?;
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
