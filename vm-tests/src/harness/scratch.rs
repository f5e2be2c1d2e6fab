//! A test's scratch directory and the interceptor commands run against it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use super::{fail, fail_with, process::Spawned, Ctx, Fail, CMD_TIMEOUT};
use crate::probe::ProbeResult;

/// One test's scratch directory: state dir, policies, audit log. Removed on drop.
pub struct Env<'a> {
    pub ctx: &'a Ctx,
    pub dir: PathBuf,
}

impl<'a> Env<'a> {
    pub fn new(ctx: &'a Ctx, test: &str) -> Result<Env<'a>, Fail> {
        let dir = ctx.root.join(test);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        Ok(Env { ctx, dir })
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    pub fn policy(&self, yaml: &str) -> Result<PathBuf, Fail> {
        let p = self.dir.join("policy.yaml");
        fs::write(&p, yaml).map_err(|e| fail(format!("{}: {e}", p.display())))?;
        Ok(p)
    }

    /// `interceptor --state-dir … --log …` with nothing else yet.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.ctx.interceptor);
        c.arg("--state-dir")
            .arg(self.state())
            .args(["--log", "interceptor=debug"]);
        c
    }

    /// `interceptor run --policy P --audit-log A -- ARGS…`, not yet started.
    pub fn run_cmd(&self, policy: &Path, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("run")
            .arg("--policy")
            .arg(policy)
            .arg("--audit-log")
            .arg(self.audit_path())
            .arg("--")
            .args(args);
        c
    }

    /// Runs the probe under `interceptor run` and returns what it printed.
    /// `mode`: `probe` or `probe-fork`.
    pub fn run_probe(
        &self,
        policy: &Path,
        mode: &str,
        family: &str,
        host: &str,
        port: u16,
        text: &str,
    ) -> Result<ProbeResult, Fail> {
        let me = self.ctx.me.display().to_string();
        let port = port.to_string();
        let cmd = self.run_cmd(policy, &[&me, mode, family, host, &port, text]);
        let spawned = Spawned::start(cmd)?;
        self.ctx.note_instance(format!("run-{}", spawned.pid()));
        let out = spawned.wait(CMD_TIMEOUT)?;
        if out.code() != Some(0) {
            return Err(fail_with(
                format!("interceptor run exited with {}", out.status),
                &out.stderr,
            ));
        }
        ProbeResult::parse(&out.stdout)
            .ok_or_else(|| fail_with(format!("no probe result in {:?}", out.stdout), &out.stderr))
    }

    pub fn audit(&self) -> Result<Vec<Value>, Fail> {
        let text = fs::read_to_string(self.audit_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).map_err(|e| fail(format!("audit line {l:?}: {e}"))))
            .collect()
    }

    /// The audit records of type `connection`.
    pub fn connections(&self) -> Result<Vec<Value>, Fail> {
        Ok(self
            .audit()?
            .into_iter()
            .filter(|r| r["type"] == "connection")
            .collect())
    }
}

impl Drop for Env<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
