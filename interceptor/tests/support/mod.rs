//! Harness for the root tests: real kernel, real sockets, real processes.
//! Every fixture cleans up after itself on drop; traffic stays on loopback.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_interceptor")
}

pub fn probe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/probe.py")
}

/// True when the test can run. Without root it prints why it skips, except under CI=true,
/// where it fails: a skipped kernel test must never count as a pass there.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root for BPF and cgroups, and CI=true: failing instead of skipping");
    }
    eprintln!("SKIP {test}: needs root (BPF and cgroup v2)");
    false
}

/// A line echo server on a loopback address: replies `echo:<line>` and remembers every
/// client address it accepted.
pub struct Echo {
    pub addr: SocketAddr,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    pub fn start(ip: &str) -> Echo {
        let listener =
            TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind echo server on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (a, p) = (accepted.clone(), peers.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                p.lock().unwrap().push(stream.peer_addr().unwrap());
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
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
        Echo {
            addr,
            peers,
            accepted,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// A scratch directory with the state dir, policy files and the audit log.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn policy(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--state-dir")
            .arg(self.state())
            .arg("--log")
            .arg("interceptor=debug");
        c
    }

    /// `interceptor run --policy P -- ARGS…`, waiting for it to finish.
    pub fn run(&self, policy: &Path, args: &[&str]) -> Output {
        let out = self
            .cmd()
            .arg("run")
            .arg("--policy")
            .arg(policy)
            .arg("--audit-log")
            .arg(self.audit_path())
            .arg("--")
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "--- interceptor run stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `interceptor run` of the probe with `once`/`fork` and its JSON result.
    pub fn run_probe(
        &self,
        policy: &Path,
        mode: &str,
        family: &str,
        host: &str,
        port: u16,
        text: &str,
    ) -> Value {
        let port = port.to_string();
        let probe = probe();
        let out = self.run(
            policy,
            &[
                "python3",
                probe.to_str().unwrap(),
                mode,
                family,
                host,
                &port,
                text,
            ],
        );
        assert!(
            out.status.success(),
            "interceptor run failed: {:?}",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("probe output {stdout:?}: {e}"))
    }

    pub fn audit(&self) -> Vec<Value> {
        read_jsonl(&self.audit_path())
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    try_wait_for(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` until it returns Some (that value) or `timeout` passes (None), e.g. for audit
/// records, which the audit thread writes a moment after the client saw the answer.
pub fn try_wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup made for one test, removed (with its processes) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let root = interceptor::cgroup::cgroup2_root().expect("cgroup2 mounted");
        let path = root
            .join("interceptor-test")
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TestCgroup { path }
    }

    /// A command that enters this cgroup before exec.
    pub fn command(&self, program: &str) -> Command {
        let procs =
            std::ffi::CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        let mut c = Command::new(program);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
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
        if let Ok(cg) = interceptor::cgroup::Cgroup::open(&self.path) {
            let _ = cg.kill_all(Duration::from_secs(5));
            let _ = cg.remove();
        }
    }
}

/// An `interceptor attach` daemon on a test cgroup; SIGTERM on drop.
pub struct Attached {
    pub child: Child,
    pub listeners: Vec<SocketAddr>,
    pub instance: String,
}

impl Attached {
    pub fn start(env: &Env, cgroup: &TestCgroup, policy: &Path) -> Attached {
        Self::start_with(env, cgroup, policy, &[])
    }

    /// Like `start`, with extra daemon arguments (e.g. `--metrics-addr`).
    pub fn start_with(env: &Env, cgroup: &TestCgroup, policy: &Path, extra: &[&str]) -> Attached {
        let child = env
            .cmd()
            .arg("attach")
            .args(extra)
            .arg("--cgroup")
            .arg(&cgroup.path)
            .arg("--policy")
            .arg(policy)
            .arg("--audit-log")
            .arg(env.audit_path())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let status = wait_for(
            "attach daemon control socket",
            Duration::from_secs(20),
            || {
                let out = env.cmd().args(["status", "--json"]).output().ok()?;
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                v.as_array().and_then(|a| a.first().cloned())
            },
        );
        let listeners = status["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().parse().unwrap())
            .collect();
        let instance = status["instance"].as_str().unwrap().to_string();
        Attached {
            child,
            listeners,
            instance,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// SIGTERM and wait; panics if the daemon does not exit cleanly.
    pub fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "attach daemon exited with {status:?}");
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
        let _ = interceptor::ebpf::remove_pins(&interceptor::ebpf::pin_dir(&self.instance));
    }
}

/// The probe in interactive mode, running inside a cgroup.
pub struct Agent {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Agent {
    pub fn start(cgroup: &TestCgroup) -> Agent {
        let mut child = cgroup
            .command("python3")
            .arg(probe())
            .arg("interactive")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("ready"), "probe did not start: {line:?}");
        Agent {
            child,
            stdin,
            stdout,
        }
    }

    pub fn send(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("probe said {line:?}: {e}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
    }
}
