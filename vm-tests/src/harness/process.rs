//! Child processes with collected output and timeouts.

use std::{
    fs,
    io::Read,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use super::{fail, fail_with, Fail};

/// What a finished child printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A running child whose stdout and stderr are collected by threads.
pub struct Spawned {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
    /// Readers that saw end of file.
    done: Arc<AtomicUsize>,
    pub what: String,
}

fn collect(
    mut r: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    done: Arc<AtomicUsize>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&text);
        }
        done.fetch_add(1, Ordering::SeqCst);
    })
}

impl Spawned {
    pub fn start(mut cmd: Command) -> Result<Spawned, Fail> {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start {what}: {e}")))?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        if let Some(o) = child.stdout.take() {
            readers.push(collect(o, stdout.clone(), done.clone()));
        }
        if let Some(e) = child.stderr.take() {
            readers.push(collect(e, stderr.clone(), done.clone()));
        }
        Ok(Spawned {
            child,
            stdout,
            stderr,
            readers,
            done,
            what,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit (killing the child after `timeout`) and returns its output.
    pub fn wait(mut self, timeout: Duration) -> Result<Out, Fail> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.drain_readers();
                    return Err(fail_with(
                        format!("timed out after {timeout:?}: {}", self.what),
                        &self.stderr(),
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(fail(format!("waiting for {}: {e}", self.what))),
            }
        };
        self.drain_readers();
        let stdout = self
            .stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Out {
            status,
            stdout,
            stderr: self.stderr(),
        })
    }

    /// Lets the output readers finish, but not forever: a grandchild that outlived the child
    /// (e.g. the agent of a killed `interceptor run`) may hold the pipes open.
    fn drain_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.done.load(Ordering::SeqCst) < self.readers.len() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if self.done.load(Ordering::SeqCst) >= self.readers.len() {
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
        // Otherwise the readers stay detached and end when the last writer closes.
        self.readers.clear();
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion with a timeout.
pub fn exec(cmd: Command, timeout: Duration) -> Result<Out, Fail> {
    Spawned::start(cmd)?.wait(timeout)
}
/// Whether a process is gone (or a zombie, whose parent has not reaped it yet).
pub fn gone_or_zombie(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, None | Some('Z') | Some('X'))
}
