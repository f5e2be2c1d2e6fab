//! Bypass attempts from inside the agent's cgroup, on the real kernel: each one must fail
//! (or, where the policy allows the flow, go through the interceptor and be audited).
//!
//! Peers: `support/udp_server.py` (hand-rolled DNS server + UDP echo) on its own 127.0.53.N
//! address per test (port 53 is fixed by DNS), the TCP echo of the harness on 127.0.0.2 and
//! ::1. Clients: `support/bypass.py` (plain Python sockets, raw io_uring syscalls). No traffic
//! leaves loopback.

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

root_test!(dns_sendto_is_proxied_audited_and_reply_source_restored, {
    let peer = UdpPeer::start("127.0.53.1");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy(&peer.ip, peer.echo_port, 1, ""));
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "sendto", "4", &peer.ip, "www.example.test"],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["rcode"], 0);
    assert_eq!(
        r["answers"][0], "127.0.0.99",
        "the real server's answer: {r}"
    );
    // recvmsg4 turned the proxy's source back into the resolver the client asked.
    assert_eq!(r["reply_from"], format!("{}:53", peer.ip));
    assert_eq!(peer.seen(), vec!["dns www.example.test"]);
    let recs = records(&env, "dns");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(rec["qname"], "www.example.test");
    assert_eq!(rec["qtype"], "A");
    assert_eq!(rec["rcode"], "NOERROR");
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["resolver"], format!("{}:53", peer.ip));
    assert_eq!(rec["identity"]["pid"], r["pid"], "{rec}");
});

root_test!(dns_connected_socket_and_v4_mapped_are_proxied, {
    let peer = UdpPeer::start("127.0.53.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy(&peer.ip, peer.echo_port, 1, ""));
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "connect", "4", &peer.ip, "a.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(
        r["peer"],
        format!("{}:53", peer.ip),
        "getpeername shows the resolver"
    );
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "connect", "mapped", &peer.ip, "b.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(r["reply_from"], format!("[::ffff:{}]:53", peer.ip));
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "sendmsg", "mapped", &peer.ip, "c.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(peer.seen().len(), 3);
    let names: Vec<Value> = records(&env, "dns")
        .iter()
        .map(|r| r["qname"].clone())
        .collect();
    assert_eq!(
        names,
        ["a.example.test", "b.example.test", "c.example.test"]
    );
});

root_test!(
    dns_name_outside_policy_is_refused_and_never_reaches_the_resolver,
    {
        let peer = UdpPeer::start("127.0.53.3");
        let env = Env::new();
        let p = env.policy("p.yaml", &policy(&peer.ip, peer.echo_port, 1, ""));
        let r = attempt(
            &env,
            &p,
            None,
            &["dns", "sendto", "4", &peer.ip, "exfil.evil.org"],
        );
        assert_eq!(r["rcode"], 5, "REFUSED: {r}");
        assert!(peer.seen().is_empty(), "{:?}", peer.seen());
        let rec = &records(&env, "dns")[0];
        assert_eq!(
            (rec["decision"].as_str(), rec["rcode"].as_str()),
            (Some("deny"), Some("REFUSED"))
        );
        assert_eq!(rec["qname"], "exfil.evil.org");
    }
);

root_test!(dns_to_a_resolver_not_in_the_policy_is_denied, {
    let allowed = UdpPeer::start("127.0.53.4");
    let other = UdpPeer::start("127.0.53.5");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy(&allowed.ip, allowed.echo_port, 1, ""));
    for mode in ["sendto", "connect", "sendmsg"] {
        let r = attempt(
            &env,
            &p,
            None,
            &["dns", mode, "4", &other.ip, "www.example.test"],
        );
        denied_eperm(&r, &format!("DNS {mode} to an unlisted resolver"));
    }
    assert!(other.seen().is_empty());
});

root_test!(udp_allowed_flow_goes_through, {
    let peer = UdpPeer::start("127.0.53.6");
    let env = Env::new();
    let port = peer.echo_port.to_string();
    let p = env.policy("p.yaml", &policy(&peer.ip, peer.echo_port, 1, ""));
    for mode in ["sendto", "connect", "sendmsg"] {
        let r = attempt(&env, &p, None, &["udp", mode, "4", &peer.ip, &port, mode]);
        assert_eq!(r["reply"], format!("echo:{mode}"), "{r}");
    }
    assert_eq!(peer.seen().len(), 3);
});

/// UDP to a port the policy does not list, for each way of sending.
fn udp_denied(mode: &str, family: &str, ip: &str) {
    let peer = UdpPeer::start(ip);
    let env = Env::new();
    // The policy allows UDP to the DNS port only; the echo port is not listed.
    let p = env.policy("p.yaml", &policy(&peer.ip, 53, 1, ""));
    let port = peer.echo_port.to_string();
    let r = attempt(
        &env,
        &p,
        None,
        &["udp", mode, family, &peer.ip, &port, "leak"],
    );
    denied_eperm(&r, &format!("UDP {mode} ({family}) to an unlisted port"));
    assert!(
        peer.seen().is_empty(),
        "datagram arrived: {:?}",
        peer.seen()
    );
}

root_test!(
    udp_connect_and_send_to_arbitrary_port_is_denied,
    udp_denied("connect", "4", "127.0.53.7")
);
root_test!(
    udp_sendto_arbitrary_port_is_denied,
    udp_denied("sendto", "4", "127.0.53.8")
);
root_test!(
    udp_sendmsg_arbitrary_port_is_denied,
    udp_denied("sendmsg", "4", "127.0.53.9")
);
root_test!(
    udp_v4_mapped_arbitrary_port_is_denied,
    udp_denied("sendto", "mapped", "127.0.53.10")
);

root_test!(udp_ipv6_is_denied_and_ipv6_dns_is_proxied, {
    let peer = UdpPeer::start("::1");
    let env = Env::new();
    // ::1 is the resolver; its echo port is not an allowed UDP destination.
    let p = env.policy("p.yaml", &policy("::1", 53, 1, ""));
    let port = peer.echo_port.to_string();
    for mode in ["sendto", "connect", "sendmsg"] {
        let r = attempt(&env, &p, None, &["udp", mode, "6", "::1", &port, "leak"]);
        denied_eperm(&r, &format!("UDP {mode} over IPv6"));
    }
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "sendto", "6", "::1", "v6.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(
        r["reply_from"], "[::1]:53",
        "recvmsg6 restored the source: {r}"
    );
    assert_eq!(peer.seen(), vec!["dns v6.example.test"]);
    // DNS over IPv6 to a resolver the policy does not list.
    let other = env.policy("o.yaml", &policy("127.0.53.11", 53, 1, ""));
    let r = attempt(
        &env,
        &other,
        None,
        &["dns", "sendto", "6", "::1", "www.example.test"],
    );
    denied_eperm(&r, "DNS to an unlisted ::1");
    assert_eq!(peer.seen().len(), 1);
});

root_test!(
    tcp_ipv6_and_v4_mapped_to_denied_destinations_never_arrive,
    {
        let echo6 = Echo::start("::1");
        let echo4 = Echo::start("127.0.0.2");
        let env = Env::new();
        let p = env.policy("p.yaml", &policy("127.0.53.12", 53, 1, ""));
        let r = attempt(
            &env,
            &p,
            None,
            &["tcp", "6", "::1", &echo6.port().to_string(), "x"],
        );
        assert_eq!(r["ok"], false, "{r}");
        let r = attempt(
            &env,
            &p,
            None,
            &["tcp", "mapped", "127.0.0.2", &echo4.port().to_string(), "x"],
        );
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!((echo6.accepted(), echo4.accepted()), (0, 0));
        let denied = records(&env, "connection");
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(denied.iter().all(|r| r["decision"] == "deny"));
    }
);

root_test!(raw_sockets_are_denied_unless_the_policy_allows_them, {
    let env = Env::new();
    let deny = env.policy("deny.yaml", &policy("127.0.53.13", 53, 1, ""));
    for kind in ["raw4", "raw6"] {
        // We run as root: only the sock_create hook can make this fail.
        denied_eperm(&attempt(&env, &deny, None, &["socket", kind]), kind);
    }
    let allow = env.policy(
        "allow.yaml",
        &policy("127.0.53.13", 53, 1, "  raw: allow\n"),
    );
    for kind in ["raw4", "raw6"] {
        let r = attempt(&env, &allow, None, &["socket", kind]);
        assert_eq!(r["ok"], true, "policy allows {kind}: {r}");
    }
});

root_test!(raw_socket_grant_is_per_cgroup, {
    let env = Env::new();
    // `run` puts the command in /interceptor/run-PID.
    let elsewhere = env.policy(
        "elsewhere.yaml",
        &policy(
            "127.0.53.14",
            53,
            1,
            "  cgroups:\n    - cgroup: \"/other/**\"\n      raw: allow\n",
        ),
    );
    denied_eperm(
        &attempt(&env, &elsewhere, None, &["socket", "raw4"]),
        "raw4, grant for another cgroup",
    );
    let here = env.policy(
        "here.yaml",
        &policy(
            "127.0.53.14",
            53,
            1,
            "  cgroups:\n    - cgroup: \"/interceptor/run-*\"\n      raw: allow\n",
        ),
    );
    let r = attempt(&env, &here, None, &["socket", "raw4"]);
    assert_eq!(r["ok"], true, "grant for this cgroup: {r}");
});

root_test!(packet_socket_is_denied_to_the_agent_user, {
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.15", 53, 1, ""));
    for kind in ["packet", "packet-dgram"] {
        denied_eperm(&attempt(&env, &p, Some("nobody"), &["socket", kind]), kind);
    }
});

// MODE run in a forked child and grandchild: TCP and UDP still guarded, DNS attributed.
root_test!(child_and_grandchild_processes_are_guarded, {
    let peer = UdpPeer::start("127.0.53.16");
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy(&peer.ip, 53, 1, ""));
    let eport = peer.echo_port.to_string();
    let tport = echo.port().to_string();
    for depth in ["child", "grandchild"] {
        let r = attempt(
            &env,
            &p,
            None,
            &[depth, "udp", "sendto", "4", &peer.ip, &eport, "x"],
        );
        denied_eperm(&r, &format!("UDP from a {depth}"));
        let r = attempt(
            &env,
            &p,
            None,
            &[depth, "tcp", "4", "127.0.0.2", &tport, "x"],
        );
        assert_eq!(r["ok"], false, "TCP from a {depth}: {r}");
        let r = attempt(
            &env,
            &p,
            None,
            &[depth, "dns", "sendto", "4", &peer.ip, "k.example.test"],
        );
        assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
        let rec = records(&env, "dns").pop().unwrap();
        assert_eq!(
            rec["identity"]["pid"], r["pid"],
            "DNS attributed to the {depth}: {rec}"
        );
    }
    assert_eq!(echo.accepted(), 0);
    assert_eq!(
        peer.seen().iter().filter(|l| l.starts_with("echo")).count(),
        0
    );
});

root_test!(io_uring_connect_goes_through_the_same_hooks, {
    let echo = Echo::start("127.0.0.2");
    let closed = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.17", 53, echo.port(), ""));
    let r = attempt(
        &env,
        &p,
        None,
        &["iouring", "127.0.0.2", &echo.port().to_string(), "ring"],
    );
    assert_eq!(r["via"], "io_uring");
    assert_eq!(r["reply"], "echo:ring", "{r}");
    assert_eq!(r["peer"], format!("127.0.0.2:{}", echo.port()));
    let r = attempt(
        &env,
        &p,
        None,
        &["iouring", "127.0.0.2", &closed.port().to_string(), "x"],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        closed.accepted(),
        0,
        "denied io_uring connect never reached the server"
    );
    let recs = records(&env, "connection");
    assert_eq!(
        recs.len(),
        2,
        "both io_uring connects were seen by the proxy: {recs:?}"
    );
    assert_eq!(recs[0]["decision"], "allow");
    assert_eq!(recs[1]["decision"], "deny");
});

root_test!(tcp_fast_open_is_redirected_and_denied, {
    let echo = Echo::start("127.0.0.2");
    let closed = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.18", 53, echo.port(), ""));
    let r = attempt(
        &env,
        &p,
        None,
        &["tfo", "127.0.0.2", &closed.port().to_string(), "x"],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(closed.accepted(), 0);
    let r = attempt(
        &env,
        &p,
        None,
        &["tfo", "127.0.0.2", &echo.port().to_string(), "fast"],
    );
    assert_eq!(
        r["reply"], "echo:fast",
        "allowed TFO goes through the proxy: {r}"
    );
    let recs = records(&env, "connection");
    assert_eq!(recs.len(), 2, "{recs:?}");
});

root_test!(connecting_straight_to_the_proxy_listeners_is_denied, {
    let peer = UdpPeer::start("127.0.53.19");
    let env = Env::new();
    let cg = TestCgroup::new("bypass-listener");
    let p = env.policy("p.yaml", &policy(&peer.ip, 53, 1, ""));
    let daemon = Attached::start(&env, &cg, &p);
    let tcp = daemon.listeners[0];
    let out = cg
        .command("python3")
        .args([
            &bypass_py(),
            "tcp",
            "4",
            "127.0.0.1",
            &tcp.port().to_string(),
            "x",
        ])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false, "{r}");
    let rec = wait_for("own-listener record", Duration::from_secs(5), || {
        records(&env, "connection").pop()
    });
    assert_eq!(
        rec["reason"],
        "destination is the interceptor's own listener"
    );
    // The DNS listener: a datagram sent straight to it has no kernel record → REFUSED.
    let status: Value = serde_json::from_slice(
        &env.cmd()
            .args(["status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dns_listener = status[0]["guards"]["applied"]["dns"][format!("{}:53", peer.ip)]
        .as_str()
        .unwrap_or_else(|| panic!("status shows the DNS listener: {status}"))
        .to_string();
    let (ip, port) = dns_listener.rsplit_once(':').unwrap();
    // From outside the cgroup (this test process): no kernel record.
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x01a\x07example\x04test\x00\x00\x01\x00\x01");
    s.send_to(&q, (ip, port.parse::<u16>().unwrap())).unwrap();
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(
        buf[3] & 0x0f,
        5,
        "REFUSED without a kernel record ({n} bytes)"
    );
    assert!(peer.seen().is_empty());
    daemon.stop();
});

root_test!(forged_source_addresses_do_not_help, {
    let echo = Echo::start("127.0.0.2");
    let closed = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.20", 53, echo.port(), ""));
    // Binding another loopback source: still redirected, still decided, attributed to us.
    let r = attempt(
        &env,
        &p,
        None,
        &[
            "forge",
            "127.0.0.9",
            "127.0.0.2",
            &closed.port().to_string(),
            "x",
        ],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(closed.accepted(), 0);
    let r = attempt(
        &env,
        &p,
        None,
        &[
            "forge",
            "127.0.0.9",
            "127.0.0.2",
            &echo.port().to_string(),
            "y",
        ],
    );
    assert_eq!(r["reply"], "echo:y", "{r}");
    let rec = records(&env, "connection").pop().unwrap();
    assert!(
        rec["client"].as_str().unwrap().starts_with("127.0.0.9:"),
        "{rec}"
    );
    assert_eq!(
        rec["identity"]["pid"], r["pid"],
        "the kernel record, not the address, names the caller"
    );
    // Transparent sockets (spoofing any source) need CAP_NET_ADMIN: not for the agent user.
    denied_eperm(
        &attempt(&env, &p, Some("nobody"), &["transparent"]),
        "IP_TRANSPARENT",
    );
});

root_test!(cgroup_escape_as_the_agent_user_fails, {
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.21", 53, 1, ""));
    let root = interceptor::cgroup::cgroup2_root().unwrap();
    let procs = root.join("cgroup.procs").display().to_string();
    let r = attempt(&env, &p, Some("nobody"), &["escape", &procs]);
    assert_eq!(r["ok"], false, "{r}");
    let errno = r["errno"].as_i64().unwrap();
    assert!(errno == 13 || errno == 1, "EACCES or EPERM: {r}");
});

root_test!(
    status_reports_and_strict_attach_refuses_or_destroys_connections_from_before_attach,
    {
        let echo = Echo::start("127.0.0.2");
        let env = Env::new();
        let cg = TestCgroup::new("bypass-strict");
        let p = env.policy("p.yaml", &policy("127.0.53.22", 53, 1, ""));
        // An agent connects before anything is attached: that connection goes out directly.
        let mut agent = Agent::start(&cg);
        let r = agent.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
        assert_eq!(r["ok"], true, "{r}");
        // --strict: refuses, detaches, exits non-zero and names the connection.
        let out = env
            .cmd()
            .args(["attach", "--strict", "--cgroup"])
            .arg(&cg.path)
            .arg("--policy")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--strict must fail: {err}");
        assert!(
            err.contains("bypass the proxy") && err.contains(&format!("127.0.0.2:{}", echo.port())),
            "{err}"
        );
        assert!(
            !interceptor::ebpf::pin_dir(&interceptor::attach::instance_name(
                &interceptor::cgroup::relative_to(
                    &interceptor::cgroup::cgroup2_root().unwrap(),
                    &cg.path
                )
            ))
            .exists(),
            "detached again"
        );
        // Default (warn): attaches, and status lists the connection.
        let daemon = Attached::start(&env, &cg, &p);
        let status: Value = serde_json::from_slice(
            &env.cmd()
                .args(["status", "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let outside = &status[0]["outside"];
        assert_eq!(outside.as_array().map(|a| a.len()), Some(1), "{status}");
        assert_eq!(outside[0]["remote"], format!("127.0.0.2:{}", echo.port()));
        assert_eq!(outside[0]["pid"], agent.child.id());
        daemon.stop();
        // --strict=destroy: the connection is closed (SOCK_DESTROY), the agent sees it fail.
        let d = Attached::start_with(&env, &cg, &p, &["--strict=destroy"]);
        let r = agent.send("echo still-there");
        assert_eq!(r["ok"], false, "the old connection was destroyed: {r}");
        let status: Value = serde_json::from_slice(
            &env.cmd()
                .args(["status", "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(
            status[0]["outside"].as_array().map(|a| a.len()),
            Some(0),
            "{status}"
        );
        d.stop();
    }
);
