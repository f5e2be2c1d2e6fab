//! `interceptor attach` daemons on test cgroups, and probes run inside those cgroups.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    cgroup::TestCgroup,
    fail, fail_with,
    process::{exec, Out, Spawned},
    scratch::Env,
    Fail, CMD_TIMEOUT, PIN_ROOT,
};
use crate::probe::ProbeResult;

/// An `interceptor attach` daemon on a test cgroup. SIGTERM (and detach if needed) on drop.
pub struct Attached<'a> {
    env: &'a Env<'a>,
    daemon: Option<Spawned>,
    pub cgroup: PathBuf,
    pub listeners: Vec<SocketAddr>,
    pub instance: String,
}

impl<'a> Attached<'a> {
    pub fn start(env: &'a Env<'a>, cgroup: &TestCgroup, policy: &Path) -> Result<Self, Fail> {
        let mut cmd = env.cmd();
        cmd.arg("attach")
            .arg("--cgroup")
            .arg(&cgroup.path)
            .arg("--policy")
            .arg(policy)
            .arg("--audit-log")
            .arg(env.audit_path());
        let mut daemon = Spawned::start(cmd)?;
        let deadline = Instant::now() + CMD_TIMEOUT;
        let status = loop {
            if !daemon.running() {
                return Err(fail_with("attach daemon exited early", &daemon.stderr()));
            }
            if Instant::now() > deadline {
                return Err(fail_with(
                    "attach daemon did not come up (no status)",
                    &daemon.stderr(),
                ));
            }
            let mut c = env.cmd();
            c.args(["status", "--json"]);
            if let Ok(out) = exec(c, Duration::from_secs(30)) {
                if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(&out.stdout) {
                    if let Some(s) = a.into_iter().next() {
                        break s;
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        };
        let listeners = status["listeners"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str()?.parse().ok())
                    .collect::<Vec<SocketAddr>>()
            })
            .unwrap_or_default();
        let instance = status["instance"].as_str().unwrap_or_default().to_string();
        env.ctx.note_instance(instance.clone());
        if listeners.is_empty() {
            return Err(fail(format!("status shows no listeners: {status}")));
        }
        Ok(Attached {
            env,
            daemon: Some(daemon),
            cgroup: cgroup.path.clone(),
            listeners,
            instance,
        })
    }

    pub fn pid(&self) -> i32 {
        self.daemon.as_ref().map_or(0, Spawned::pid)
    }

    /// SIGTERM and wait; fails unless the daemon exits cleanly.
    pub fn stop(mut self) -> Result<Out, Fail> {
        let daemon = self.daemon.take().expect("running");
        daemon.signal(libc::SIGTERM);
        let out = daemon.wait(CMD_TIMEOUT)?;
        if !out.status.success() {
            return Err(fail_with(
                format!("attach daemon exited with {}", out.status),
                &out.stderr,
            ));
        }
        Ok(out)
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.signal(libc::SIGTERM);
            let _ = d.wait(Duration::from_secs(30));
        }
        if Path::new(PIN_ROOT).join(&self.instance).exists() {
            let mut c = self.env.cmd();
            c.arg("detach").arg("--cgroup").arg(&self.cgroup);
            let _ = exec(c, Duration::from_secs(30));
        }
    }
}

/// Runs `program args…` inside `cgroup` and parses the probe line it prints.
pub fn probe_in(cgroup: &TestCgroup, me: &Path, args: &[&str]) -> Result<ProbeResult, Fail> {
    let mut c = cgroup.command(me);
    c.args(args);
    let out = exec(c, CMD_TIMEOUT)?;
    ProbeResult::parse(&out.stdout)
        .ok_or_else(|| fail_with(format!("no probe result in {:?}", out.stdout), &out.stderr))
}
