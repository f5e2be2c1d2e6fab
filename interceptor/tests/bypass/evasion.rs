//! Getting around the guard: child processes, the proxy's own listeners, leaving the
//! cgroup, connections opened before attach.

use super::*;

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
