//! The attached daemon: reload, detach on SIGTERM, status and metrics.

use super::*;

#[test]
fn reload_keeps_live_connections_and_applies_to_new_ones() {
    if !root_or_skip("reload_keeps_live_connections_and_applies_to_new_ones") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let cg = TestCgroup::new("reload");
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    let daemon = Attached::start(&env, &cg, &policy);
    let mut agent = Agent::start(&cg);
    assert_eq!(
        agent.send(&format!("connect 4 127.0.0.2 {}", echo.port()))["ok"],
        true
    );
    assert_eq!(agent.send("echo before")["reply"], "echo:before");

    // A broken policy on reload: the old one stays, the error is reported.
    std::fs::write(&policy, "version: 1\nrules: [ {\n").unwrap();
    let out = env.cmd().arg("reload").output().unwrap();
    assert!(
        !out.status.success(),
        "reload of a broken policy must report failure"
    );
    let mut second = Agent::start(&cg);
    assert_eq!(
        second.send(&format!("connect 4 127.0.0.2 {}", echo.port()))["ok"],
        true
    );
    assert_eq!(
        second.send("echo still-allowed")["reply"],
        "echo:still-allowed"
    );
    drop(second);

    // A valid deny-all policy through SIGHUP.
    std::fs::write(&policy, "version: 1\ndefault: deny\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    let mut third = Agent::start(&cg);
    wait_for("reload applied", Duration::from_secs(10), || {
        let r = third.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
        let r = if r["ok"] == true {
            third.send("echo new")
        } else {
            r
        };
        (r["ok"] == false).then_some(())
    });
    // The connection opened before the reload still works.
    assert_eq!(agent.send("echo after")["reply"], "echo:after");
    drop(agent);
    drop(third);
    daemon.stop();
}

#[test]
fn attach_detaches_cleanly_on_sigterm() {
    if !root_or_skip("attach_detaches_cleanly_on_sigterm") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let cg = TestCgroup::new("detach");
    let policy = env.policy("p.yaml", "version: 1\ndefault: deny\n");
    let daemon = Attached::start(&env, &cg, &policy);
    let instance = daemon.instance.clone();
    let mut agent = Agent::start(&cg);
    let r = agent.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
    let r = if r["ok"] == true {
        agent.send("echo x")
    } else {
        r
    };
    assert_eq!(r["ok"], false, "denied while attached: {r}");
    assert_eq!(echo.accepted(), 0);
    daemon.stop();
    assert!(
        !interceptor::ebpf::pin_dir(&instance).exists(),
        "pins left behind"
    );
    // Detached: the same cgroup now connects directly (ops asked for it with SIGTERM).
    let r = agent.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(agent.send("echo direct")["reply"], "echo:direct");
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn status_reports_attachment_and_live_connections() {
    if !root_or_skip("status_reports_attachment_and_live_connections") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let cg = TestCgroup::new("status");
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    // A free local port for the Prometheus endpoint.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let daemon = Attached::start_with(
        &env,
        &cg,
        &policy,
        &["--metrics-addr", &metrics_addr.to_string()],
    );
    let mut agent = Agent::start(&cg);
    assert_eq!(
        agent.send(&format!("connect 4 127.0.0.2 {}", echo.port()))["ok"],
        true
    );
    assert_eq!(agent.send("echo live")["reply"], "echo:live");
    let metrics = http_get(metrics_addr, "/metrics");
    assert!(
        metrics.contains("interceptor_connections_allowed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("interceptor_connections_active 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("interceptor_kernel_events_total{event=\"redirected_v4\"}"),
        "{metrics}"
    );
    let out = env.cmd().args(["status", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v[0];
    assert_eq!(s["mode"], "attach");
    assert_eq!(s["cgroup"], cg.path.display().to_string());
    assert_eq!(s["live"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(
        s["live"][0]["destination"],
        format!("127.0.0.2:{}", echo.port())
    );
    assert_eq!(s["counters"]["allowed"], 1);
    assert!(s["kernel_counters"]["redirected_v4"].as_u64().unwrap() >= 1);
    let text = env.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("attach mode") && text.contains("127.0.0.2"),
        "{text}"
    );
    drop(agent);
    daemon.stop();
}

/// A minimal HTTP GET (the endpoint answers one request per connection).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    // One write: the request head in one piece, as real scrapers send it.
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
