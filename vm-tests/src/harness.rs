//! Fixtures of the suite: echo servers, scratch directories, child processes with timeouts,
//! test cgroups, `interceptor attach` daemons. Every fixture cleans up on drop.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::probe::ProbeResult;

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

/// A line echo server on a loopback address: replies `echo:<line>`, counts connections.
pub struct Echo {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start(ip: &str) -> Result<Echo, Fail> {
        let listener =
            TcpListener::bind((ip, 0)).map_err(|e| fail(format!("bind echo on {ip}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| fail(format!("echo address: {e}")))?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let Ok(clone) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = BufReader::new(clone);
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        if stream.write_all(format!("echo:{line}").as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        Ok(Echo {
            addr,
            accepted,
            stop,
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Wake the accept loop so that its thread (and the listening socket) goes away.
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

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

/// The cgroup v2 mount point (from /proc/self/mountinfo).
pub fn cgroup2_root() -> Result<PathBuf, Fail> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail(format!("/proc/self/mountinfo: {e}")))?;
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(pre.split_whitespace().nth(4)?))
        })
        .ok_or_else(|| fail("no cgroup2 mounted"))
}

/// This process's own cgroup directory.
pub fn own_cgroup() -> Result<PathBuf, Fail> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| fail(format!("/proc/self/cgroup: {e}")))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| fail("no cgroup v2 line in /proc/self/cgroup"))?;
    Ok(cgroup2_root()?.join(rel.trim().trim_start_matches('/')))
}

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

/// A cgroup made for one test (`<cgroup2>/vm-suite/<name>-<pid>`), its processes killed and
/// the directory removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Result<TestCgroup, Fail> {
        let path = cgroup2_root()?
            .join("vm-suite")
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        Ok(TestCgroup { path })
    }

    pub fn add_pid(&self, pid: i32) -> Result<(), Fail> {
        move_pid(&self.path, pid)
    }

    /// A command that enters this cgroup before exec.
    pub fn command(&self, program: &Path) -> Command {
        let procs = std::ffi::CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("no NUL in a path");
        let mut c = Command::new(program);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        c
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let kill = self.path.join("cgroup.kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            if pids.trim().is_empty() || Instant::now() > deadline {
                break;
            }
            if fs::write(&kill, "1").is_err() {
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: plain kill.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_dir(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = fs::remove_dir(parent); // only when empty
        }
    }
}

/// Writes `pid` into `cgroup`/cgroup.procs.
pub fn move_pid(cgroup: &Path, pid: i32) -> Result<(), Fail> {
    let procs = cgroup.join("cgroup.procs");
    fs::write(&procs, pid.to_string())
        .map_err(|e| fail(format!("moving {pid} to {}: {e}", procs.display())))
}

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

/// Entries of a directory (names), empty when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Subdirectories of a directory (names), empty when it does not exist.
pub fn subdirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What an instance left behind: its pin directory and/or its `run` cgroup.
pub fn leftovers(instance: &str) -> Vec<String> {
    let mut left = Vec::new();
    let pins = Path::new(PIN_ROOT).join(instance);
    if pins.exists() {
        left.push(format!("pins {}", pins.display()));
    }
    if instance.starts_with("run-") {
        if let Ok(root) = cgroup2_root() {
            let cg = root.join("interceptor").join(instance);
            if cg.exists() {
                left.push(format!("cgroup {}", cg.display()));
            }
        }
    }
    left
}

/// Whether a process is gone (or a zombie, whose parent has not reaped it yet).
pub fn gone_or_zombie(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, None | Some('Z') | Some('X'))
}
