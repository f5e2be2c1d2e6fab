//! Fixtures of the suite: echo servers, scratch directories, child processes with timeouts,
//! test cgroups, `interceptor attach` daemons. Every fixture cleans up on drop.

mod cgroup;
mod cleanup;
mod daemon;
mod echo;
mod process;
mod scratch;

use std::{
    path::PathBuf,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

pub use cgroup::*;
pub use cleanup::*;
pub use daemon::*;
pub use echo::*;
pub use process::*;
pub use scratch::*;

/// How long one interceptor command may take (TCG is slow: the verifier alone takes seconds).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a test did not pass.
#[derive(Debug)]
pub enum Fail {
    Fail(String, Vec<String>),
    Skip(String),
}

pub type TestResult = Result<(), Fail>;

pub fn fail(reason: impl Into<String>) -> Fail {
    Fail::Fail(reason.into(), Vec::new())
}

/// A failure with context lines (e.g. the tail of the daemon's log).
pub fn fail_with(reason: impl Into<String>, context: &str) -> Fail {
    let lines: Vec<String> = context.lines().map(str::to_string).collect();
    let tail = lines[lines.len().saturating_sub(20)..].to_vec();
    Fail::Fail(reason.into(), tail)
}

#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::harness::fail(format!($($fmt)+)));
        }
    };
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, Fail> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What the whole suite shares.
pub struct Ctx {
    pub interceptor: PathBuf,
    /// This binary (the probe).
    pub me: PathBuf,
    /// Scratch root; each test gets a directory below it.
    pub root: PathBuf,
    /// Running as PID 1 of a VM: nothing else is on the machine, so "no leftovers at all"
    /// can be checked, and orphans are ours to reap.
    pub in_vm: bool,
    /// Interceptor instances the tests started (`run-<pid>`, `attach-…`).
    pub instances: Mutex<Vec<String>>,
}

pub const PIN_ROOT: &str = "/sys/fs/bpf/interceptor";

impl Ctx {
    pub fn note_instance(&self, name: String) {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name);
    }
}
