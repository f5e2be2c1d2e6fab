//! Bypass attempts from inside the agent's cgroup, on the real kernel: each one must fail
//! (or, where the policy allows the flow, go through the interceptor and be audited).
//!
//! Peers: `support/udp_server.py` (hand-rolled DNS server + UDP echo) on its own 127.0.53.N
//! address per test (port 53 is fixed by DNS), the TCP echo of the harness on 127.0.0.2 and
//! ::1. Clients: `support/bypass.py` (plain Python sockets, raw io_uring syscalls). No traffic
//! leaves loopback.

#[path = "../support/mod.rs"]
mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use serde_json::Value;
use support::*;

fn bypass_py() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/bypass.py")
        .display()
        .to_string()
}

/// The DNS server + UDP echo, one per test on its own address; killed on drop.
struct UdpPeer {
    child: Child,
    ip: String,
    echo_port: u16,
    /// Lines the server printed: "dns NAME" / "echo PAYLOAD".
    seen: Arc<Mutex<Vec<String>>>,
}

impl UdpPeer {
    fn start(ip: &str) -> UdpPeer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/udp_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([ip, "53", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            parts.first(),
            Some(&"ready"),
            "udp server on {ip}: {line:?}"
        );
        let echo_port = parts[2].parse().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                s.lock().unwrap().push(l);
            }
        });
        UdpPeer {
            child,
            ip: ip.to_string(),
            echo_port,
            seen,
        }
    }

    fn seen(&self) -> Vec<String> {
        thread::sleep(Duration::from_millis(200));
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for UdpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `interceptor run [--user U] --policy P -- python3 bypass.py ARGS…` and its JSON line.
fn attempt(env: &Env, policy: &Path, user: Option<&str>, args: &[&str]) -> Value {
    let mut cmd = env.cmd();
    cmd.arg("run").arg("--policy").arg(policy);
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    let out = cmd
        .arg("--audit-log")
        .arg(env.audit_path())
        .arg("--")
        .arg("python3")
        .arg(bypass_py())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run {args:?} failed: {:?}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bypass.py {args:?} said {stdout:?}: {e}\n{stderr}"))
}

fn records(env: &Env, kind: &str) -> Vec<Value> {
    env.audit()
        .into_iter()
        .filter(|r| r["type"] == kind)
        .collect()
}

fn denied_eperm(r: &Value, what: &str) {
    assert_eq!(r["ok"], false, "{what} must fail: {r}");
    assert_eq!(r["errno"], 1, "{what} must fail with EPERM: {r}");
}

/// The policy of most tests: DNS to `resolver` for *.example.test, UDP echo on `echo_port`,
/// TCP only to 127.0.0.2:`tcp_port`.
fn policy(resolver: &str, echo_port: u16, tcp_port: u16, extra: &str) -> String {
    format!(
        "version: 1\nrules:\n  - name: tcp-echo\n    action: allow\n    to:\n      - cidr: 127.0.0.2/32\n        ports: {tcp_port}\ndefault: deny\nsockets:\n  udp:\n    - cidr: \"{resolver}\"\n      ports: {echo_port}\n{extra}dns:\n  resolvers: [\"{resolver}\"]\n  allow_names: [\"*.example.test\"]\n"
    )
}

macro_rules! root_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            if !root_or_skip(stringify!($name)) {
                return;
            }
            $body
        }
    };
}

mod dns;
mod evasion;
mod sockets;
mod tcp;
mod udp;
