//! Root tests of bad input and faults through the real daemon (`interceptor attach` on a test
//! cgroup): misbehaving PostgreSQL clients next to a good psql session, broken and unreadable
//! policies on reload, `kill -9` with live connections and re-attaching, upstreams that are
//! down. Traffic stays on loopback; upstreams are on 127.0.0.2.

mod pg_support;
mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pg_support::{appdb_policy_yaml, Pg, APP_PASSWORD, READ_ONLY_RULE};
use serde_json::Value;
use support::*;

/// Starts `interceptor attach` with its log (debug) in `log` instead of the test's stderr;
/// returns the child and its `status` once it serves.
fn spawn_attach(env: &Env, cg: &TestCgroup, policy: &Path, log: &Path) -> (Child, Value) {
    let mut cmd = env.cmd();
    cmd.arg("attach")
        .arg("--cgroup")
        .arg(&cg.path)
        .arg("--policy")
        .arg(policy)
        .arg("--audit-log")
        .arg(env.audit_path());
    spawn_logged(env, cmd, log)
}

fn spawn_logged(env: &Env, mut cmd: Command, log: &Path) -> (Child, Value) {
    let child = cmd.stderr(File::create(log).unwrap()).spawn().unwrap();
    let pid = u64::from(child.id());
    let status = wait_for("attach daemon status", Duration::from_secs(20), || {
        let out = env.cmd().args(["status", "--json"]).output().ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|s| s["pid"].as_u64() == Some(pid))
            .cloned()
    });
    (child, status)
}

fn attach_logged(env: &Env, cg: &TestCgroup, policy: &Path, log: &Path) -> Attached {
    let (child, status) = spawn_attach(env, cg, policy, log);
    Attached {
        child,
        listeners: status["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().parse().unwrap())
            .collect(),
        instance: status["instance"].as_str().unwrap().to_string(),
    }
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn pg_policy(env: &Env, port: u16) -> PathBuf {
    let yaml = appdb_policy_yaml(
        env.dir.path(),
        port,
        "app",
        APP_PASSWORD,
        "      tls: disable\n",
        READ_ONLY_RULE,
    );
    env.policy("pg.yaml", &yaml)
}

fn psql_args(port: u16, cmds: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "-X",
        "-A",
        "-t",
        &format!("host=127.0.0.2 port={port} user=agent dbname=x connect_timeout=10"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in cmds {
        v.push("-c".into());
        v.push(c.to_string());
    }
    v
}

#[test]
fn pg_bad_clients_get_clear_errors_memory_stays_bounded_and_psql_is_unaffected() {
    if !root_or_skip("pg_bad_clients_get_clear_errors_memory_stays_bounded_and_psql_is_unaffected")
    {
        return;
    }
    let pg = Pg::start();
    let env = Env::new();
    let policy = pg_policy(&env, pg.port);
    let cg = TestCgroup::new("badpg");
    let log = env.dir.path().join("daemon.log");
    let daemon = attach_logged(&env, &cg, &policy, &log);
    let pid = daemon.child.id();

    // Warm up (first session, pool, catalog) before taking the baseline.
    let psql = pg_support::psql();
    let warm = cg
        .command(psql.to_str().unwrap())
        .args(psql_args(pg.port, &["SELECT 'warm'"]))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&warm.stdout).contains("warm"),
        "{warm:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = (proc_status_kb(pid, "VmRSS:"), fd_count(pid));

    let peak = Arc::new(AtomicU64::new(rss0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(proc_status_kb(pid, "VmRSS:"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // A good psql session that spans the whole attack.
    let good = cg
        .command(psql.to_str().unwrap())
        .args(psql_args(
            pg.port,
            &["SELECT 'good-1'", "SELECT pg_sleep(15)", "SELECT 'good-2'"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = probe().with_file_name("bad_pg_clients.py");
    let bad = cg
        .command("python3")
        .arg(&script)
        .arg("127.0.0.2")
        .arg(pg.port.to_string())
        .output()
        .unwrap();
    let good = good.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    let so = String::from_utf8_lossy(&bad.stdout);
    eprintln!(
        "--- bad clients ---\n{so}{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let results: Vec<Value> = so
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 7, "every bad client reports: {so}");
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
    }
    let secs = |name: &str| {
        results.iter().find(|r| r["client"] == name).unwrap()["secs"]
            .as_f64()
            .unwrap()
    };
    // The startup deadline (10 s) ends the trickling client, not its 35 s of bytes.
    assert!((9.0..20.0).contains(&secs("slow_startup")), "{so}");
    for fast in ["garbage", "huge_startup", "half_startup", "half_closed"] {
        assert!(secs(fast) < 5.0, "{fast} took too long: {so}");
    }

    let gs = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success() && gs.contains("good-1") && gs.contains("good-2"),
        "the concurrent psql session must be unaffected: {gs} {}",
        String::from_utf8_lossy(&good.stderr)
    );

    // Memory: 16 MiB pushed behind a 2 GiB header and 7 odd sessions cost far less than that.
    let peak = peak.load(Ordering::SeqCst);
    eprintln!("daemon RSS: {rss0} kB at start, peak {peak} kB");
    assert!(
        peak < rss0 + 16 * 1024,
        "RSS grew from {rss0} kB to {peak} kB"
    );
    // Every bad connection is closed again (pooled upstream connections may stay).
    wait_for("bad connections closed", Duration::from_secs(10), || {
        (fd_count(pid) <= fds0 + 4).then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("startup packet within"), "{text}");
    daemon.stop();
}

fn echo_policy(port: u16) -> String {
    format!(
        "version: 1\nrules:\n  - name: allow-echo\n    action: allow\n    to:\n      - cidr: 127.0.0.2/32\n        ports: {port}\ndefault: deny\n"
    )
}

#[test]
fn broken_missing_or_unreadable_policy_on_reload_keeps_the_old_one_and_logs_why() {
    if !root_or_skip("broken_missing_or_unreadable_policy_on_reload_keeps_the_old_one_and_logs_why")
    {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let other = Echo::start("127.0.0.2");
    let env = Env::new();
    let cg = TestCgroup::new("reloadbad");
    let policy = env.policy("p.yaml", &echo_policy(echo.port()));
    let log = env.dir.path().join("daemon.log");
    let daemon = attach_logged(&env, &cg, &policy, &log);

    let check_old_policy = |what: &str| {
        let mut a = Agent::start(&cg);
        assert_eq!(
            a.send(&format!("connect 4 127.0.0.2 {}", echo.port()))["ok"],
            true
        );
        assert_eq!(a.send("echo x")["reply"], "echo:x", "after {what}");
        let mut b = Agent::start(&cg);
        let r = b.send(&format!("connect 4 127.0.0.2 {}", other.port()));
        let r = if r["ok"] == true { b.send("echo y") } else { r };
        assert_eq!(r["ok"], false, "still denied after {what}: {r}");
    };
    check_old_policy("start");

    let cases: [(&str, &dyn Fn()); 3] = [
        ("an unknown field", &|| {
            std::fs::write(
                &policy,
                "version: 1\nrules:\n  - name: x\n    action: allow\n    colour: red\n",
            )
            .unwrap()
        }),
        ("a missing file", &|| std::fs::remove_file(&policy).unwrap()),
        ("a directory in its place", &|| {
            std::fs::create_dir(&policy).unwrap()
        }),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        make();
        let out = env.cmd().arg("reload").output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "reload of {what} must fail: {said}");
        assert!(said.contains("p.yaml"), "the reply names the file: {said}");
        let text = wait_for("reload error logged", Duration::from_secs(5), || {
            let t = std::fs::read_to_string(&log).unwrap();
            (t.matches("policy reload failed; keeping the previous policy")
                .count()
                > i)
                .then_some(t)
        });
        assert!(text.contains("p.yaml"), "the log names the file: {text}");
        check_old_policy(what);
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("colour"));
    drop(echo);
    daemon.stop();
}

fn pins(instance: &str) -> usize {
    std::fs::read_dir(interceptor::ebpf::pin_dir(instance))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn kill_9_with_live_connections_fails_closed_and_a_new_attach_takes_over() {
    if !root_or_skip("kill_9_with_live_connections_fails_closed_and_a_new_attach_takes_over") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let cg = TestCgroup::new("kill9");
    let policy = env.policy("p.yaml", &echo_policy(echo.port()));
    let (mut first, status) = spawn_attach(&env, &cg, &policy, &env.dir.path().join("d1.log"));
    let instance = status["instance"].as_str().unwrap().to_string();
    let pinned = pins(&instance);
    assert!(pinned > 0, "no pins under {instance}");

    let mut live: Vec<Agent> = (0..3).map(|_| Agent::start(&cg)).collect();
    for (i, a) in live.iter_mut().enumerate() {
        assert_eq!(
            a.send(&format!("connect 4 127.0.0.2 {}", echo.port()))["ok"],
            true
        );
        assert_eq!(
            a.send(&format!("echo live{i}"))["reply"],
            format!("echo:live{i}")
        );
    }
    assert_eq!(echo.accepted(), 3);

    // kill -9: no orderly shutdown; the pinned programs keep the cgroup redirected.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(pins(&instance), pinned, "the pins outlive the daemon");
    for a in &mut live {
        let r = a.send("echo after-kill");
        assert_eq!(
            r["ok"], false,
            "a live connection must fail with its daemon: {r}"
        );
    }
    let mut late = Agent::start(&cg);
    let r = late.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
    assert_eq!(r["ok"], false, "a new connect must fail closed: {r}");
    assert!(
        r["errno"] == 111 || r["errno"] == 1,
        "ECONNREFUSED or EPERM: {r}"
    );
    assert_eq!(echo.accepted(), 3, "nothing may go out directly");

    // What systemd's Restart=always does: attach again; it takes over the pinned programs.
    let second = attach_logged(&env, &cg, &policy, &env.dir.path().join("d2.log"));
    assert_eq!(second.instance, instance);
    assert_eq!(
        pins(&instance),
        pinned,
        "the old pins were replaced, not added to"
    );
    let mut again = Agent::start(&cg);
    let r = again.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["peer"], format!("127.0.0.2:{}", echo.port()));
    assert_eq!(again.send("echo back")["reply"], "echo:back");
    assert_eq!(echo.accepted(), 4);
    drop((live, late, again));
    second.stop();
    assert_eq!(pins(&instance), 0, "an orderly stop removes the pins");
}

#[test]
fn upstream_refusing_or_closing_gets_a_pg_fatal_naming_it_and_tcp_gets_a_reset() {
    if !root_or_skip("upstream_refusing_or_closing_gets_a_pg_fatal_naming_it_and_tcp_gets_a_reset")
    {
        return;
    }
    let closed_port = |_: ()| {
        std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (pg_refused, tcp_refused) = (closed_port(()), closed_port(()));
    // A server that accepts and hangs up at once (a crashing or overloaded upstream).
    let slam = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let pg_slam = slam.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in slam.incoming() {
            drop(s);
        }
    });
    let env = Env::new();
    let pw = env.dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let resource = |name: &str, port: u16| {
        format!(
            "  {name}:\n    postgres:\n      address: 127.0.0.2\n      port: {port}\n      database: app\n      user: app\n      password_file: {}\n      tls: disable\n",
            pw.display()
        )
    };
    let policy = env.policy(
        "p.yaml",
        &format!(
            "version: 1\nrules:\n  - name: allow-local\n    action: allow\n    to:\n      - cidr: 127.0.0.2/32\nresources:\n{}{}",
            resource("db_down", pg_refused),
            resource("db_slam", pg_slam)
        ),
    );
    let cg = TestCgroup::new("updown");
    let daemon = attach_logged(&env, &cg, &policy, &env.dir.path().join("d.log"));
    let psql = pg_support::psql();
    for (name, port) in [("db_down", pg_refused), ("db_slam", pg_slam)] {
        let out = cg
            .command(psql.to_str().unwrap())
            .args(psql_args(port, &["SELECT 1"]))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("psql to {name}: {err}");
        assert!(!out.status.success());
        assert!(err.contains("FATAL"), "{err}");
        assert!(
            err.contains(&format!("cannot open resource {name}")),
            "{err}"
        );
        assert!(
            err.contains(&format!("127.0.0.2:{port}")),
            "names the upstream: {err}"
        );
    }
    // Plain TCP: the connect to the proxy succeeded, so a reset is how the agent learns.
    let mut a = Agent::start(&cg);
    assert_eq!(
        a.send(&format!("connect 4 127.0.0.2 {tcp_refused}"))["ok"],
        true
    );
    let r = a.send("echo anyone");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["errno"], 104, "ECONNRESET: {r}");
    drop(a);
    daemon.stop();
    let recs = env.audit();
    assert!(
        recs.iter().any(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("127.0.0.2:{tcp_refused}")))),
        "{recs:?}"
    );
}

/// The shipped unit `interceptor/systemd/interceptor@.service`.
fn unit() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/interceptor@.service");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn systemd_unit_verifies_and_its_exec_start_takes_over_after_kill_9() {
    if !root_or_skip("systemd_unit_verifies_and_its_exec_start_takes_over_after_kill_9") {
        return;
    }
    let unit = unit();
    let key = |k: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in the unit"))
            .to_owned()
    };
    assert_eq!(key("Restart"), "always");
    let env = Env::new();
    let real_bin = |text: &str| text.replace("/usr/local/bin/interceptor", bin());
    // systemd's own parser (PID 1 need not be systemd): unknown keys, bad values, bad paths.
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let f = env.dir.path().join("interceptor@agents.slice.service");
            std::fs::write(&f, real_bin(&unit)).unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&f)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && said.trim().is_empty(), "{said}");
        }
        Err(e) => eprintln!("systemd-analyze not available ({e}): unit syntax not verified"),
    }

    // Run ExecStart as systemd would for this test's cgroup, with paths moved to the test dir.
    let echo = Echo::start("127.0.0.2");
    let cg = TestCgroup::new("unit");
    let policy = env.policy("unit.yaml", &echo_policy(echo.port()));
    let root = interceptor::cgroup::cgroup2_root().unwrap();
    let relative = cg
        .path
        .strip_prefix(&root)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let exec = real_bin(&key("ExecStart"))
        .replace("/run/interceptor", env.state().to_str().unwrap())
        .replace("/sys/fs/cgroup/%I", cg.path.to_str().unwrap())
        .replace("/etc/interceptor/%i.yaml", policy.to_str().unwrap())
        .replace(
            "/var/log/interceptor/%i.jsonl",
            env.audit_path().to_str().unwrap(),
        );
    assert!(!exec.contains('%'), "unsubstituted specifier in {exec}");
    let start = |n: u32| {
        let mut words = exec.split_whitespace();
        let mut cmd = Command::new(words.next().unwrap());
        cmd.args(words);
        spawn_logged(&env, cmd, &env.dir.path().join(format!("unit{n}.log")))
    };
    let connect = || {
        let mut a = Agent::start(&cg);
        let r = a.send(&format!("connect 4 127.0.0.2 {}", echo.port()));
        if r["ok"] == true {
            a.send("echo via-unit")
        } else {
            r
        }
    };
    let (mut first, status) = start(1);
    assert!(status["instance"]
        .as_str()
        .unwrap()
        .ends_with(&relative.replace('/', "_")));
    assert_eq!(connect()["reply"], "echo:via-unit");
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(connect()["ok"], false, "closed while the unit restarts");
    let (second, _) = start(2); // Restart=always
    let second = Attached {
        child: second,
        listeners: Vec::new(),
        instance: status["instance"].as_str().unwrap().to_owned(),
    };
    assert_eq!(connect()["reply"], "echo:via-unit");
    assert_eq!(echo.accepted(), 2, "only the proxied connections arrived");
    second.stop();
}
