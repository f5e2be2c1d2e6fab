//! The proxy's listener: no kernel record, connecting to itself, no loop for a daemon
//! inside its own cgroup.

use super::*;

#[test]
fn connection_without_kernel_record_is_refused() {
    if !root_or_skip("connection_without_kernel_record_is_refused") {
        return;
    }
    let env = Env::new();
    let cg = TestCgroup::new("norecord");
    let policy = env.policy("p.yaml", "version: 1\ndefault: allow\n");
    let daemon = Attached::start(&env, &cg, &policy);
    // This test process is outside the cgroup: its connect to the listener has no record.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(daemon.listeners[0]).unwrap();
    let _ = s.write_all(b"hi\n");
    let mut buf = [0u8; 16];
    let res = s.read(&mut buf);
    assert!(
        matches!(res, Ok(0))
            || res
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{res:?}"
    );
    daemon.stop();
    let recs = env.audit();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["decision"], "deny");
    assert!(recs[0]["reason"]
        .as_str()
        .unwrap()
        .contains("no kernel record"));
    assert_eq!(recs[0]["identity"], Value::Null);
}

#[test]
fn connecting_to_the_proxy_listener_itself_is_denied() {
    if !root_or_skip("connecting_to_the_proxy_listener_itself_is_denied") {
        return;
    }
    let env = Env::new();
    let cg = TestCgroup::new("loop");
    let policy = env.policy("p.yaml", "version: 1\ndefault: allow\n");
    let daemon = Attached::start(&env, &cg, &policy);
    let mut agent = Agent::start(&cg);
    let l = daemon.listeners[0];
    let r = agent.send(&format!("connect 4 {} {}", l.ip(), l.port()));
    let r2 = if r["ok"] == true {
        agent.send("echo x")
    } else {
        r.clone()
    };
    assert_eq!(r2["ok"], false, "{r} {r2}");
    drop(agent);
    daemon.stop();
    let recs = env.audit();
    assert!(
        recs.iter()
            .any(|r| r["reason"].as_str().unwrap_or("").contains("own listener")),
        "{recs:?}"
    );
}

#[test]
fn daemon_inside_the_cgroup_is_not_looped_back_thanks_to_the_mark() {
    if !root_or_skip("daemon_inside_the_cgroup_is_not_looped_back_thanks_to_the_mark") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let cg = TestCgroup::new("mark");
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    let daemon = Attached::start(&env, &cg, &policy);
    // Move the daemon itself into the cgroup it guards: only the SO_MARK check keeps its
    // upstream connects from being redirected back to itself.
    interceptor::cgroup::Cgroup::open(&cg.path)
        .unwrap()
        .add_pid(daemon.pid().as_raw())
        .unwrap();
    let mut agent = Agent::start(&cg);
    assert_eq!(
        agent.send(&format!("connect 4 127.0.0.2 {}", echo.port()))["ok"],
        true
    );
    let r = agent.send("echo marked");
    assert_eq!(r["reply"], "echo:marked", "{r}");
    drop(agent);
    // Move the daemon back out so that stopping it does not race the cgroup's removal.
    let root = interceptor::cgroup::cgroup2_root().unwrap();
    std::fs::write(root.join("cgroup.procs"), daemon.pid().as_raw().to_string()).unwrap();
    daemon.stop();
    let all = env.audit();
    // (issue 6) an allowed connection is also on record before its upstream connect.
    assert_eq!(
        all.iter()
            .filter(|r| r["type"] == "connection_open")
            .count(),
        1,
        "{all:?}"
    );
    let recs: Vec<_> = all.iter().filter(|r| r["type"] == "connection").collect();
    assert_eq!(recs.len(), 1, "exactly one connection, no loop: {recs:?}");
    assert_eq!(recs[0]["decision"], "allow");
    assert_eq!(echo.accepted(), 1);
}
