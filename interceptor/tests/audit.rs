//! Root tests of the tamper-evident audit store (issue 6) on real daemons, a real
//! PostgreSQL 15 (pg_support.rs) and real clients (psql, pgbench): verify, sessions
//! list/show/replay, kill -9 under load, the PostgreSQL sink through an outage, and the
//! agent locked out of the audit directory.

mod pg_support;
mod support;

use std::{
    collections::HashSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use pg_support::{appdb_policy_yaml, Pg, APP_PASSWORD, READ_ONLY_RULE};
use serde_json::Value;
use support::*;

fn policy(env: &Env, pg: &Pg, sql_rules: &str) -> PathBuf {
    let yaml = appdb_policy_yaml(
        env.dir.path(),
        pg.port,
        "app",
        APP_PASSWORD,
        "      tls: disable
      masking:
        detectors:
          - kind: email
            strategy: partial
",
        &format!("{READ_ONLY_RULE}{sql_rules}"),
    );
    env.policy("audit.yaml", &yaml)
}

/// `interceptor run` with the default (chained) audit store.
fn run(env: &Env, policy: &Path, extra: &[&str], args: &[&str]) -> Output {
    let out = env
        .cmd()
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .args(extra)
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

/// `interceptor attach` with the chained store (and `extra` flags).
fn attach(env: &Env, cg: &TestCgroup, policy: &Path, extra: &[&str]) -> Attached {
    let child = env
        .cmd()
        .arg("attach")
        .arg("--cgroup")
        .arg(&cg.path)
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let status = wait_for("attach daemon status", Duration::from_secs(20), || {
        let out = env.cmd().args(["status", "--json"]).output().ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array().and_then(|a| a.first().cloned())
    });
    Attached {
        child,
        listeners: Vec::new(),
        instance: status["instance"].as_str().unwrap().to_string(),
    }
}

fn cli(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("--- interceptor {args:?} ({:?}) ---\n{so}{se}", out.status);
    (out.status.code().unwrap_or(-1), so, se)
}

fn conninfo(pg: &Pg) -> String {
    format!(
        "host=127.0.0.2 port={} user=agent password=x dbname=anything",
        pg.port
    )
}

/// Every record of every chain under `<state>/audit`.
fn records(env: &Env) -> Vec<Value> {
    interceptor::audit::sessions::load(&env.state().join("audit")).unwrap()
}

#[test]
fn audit_psql_session_verifies_lists_shows_and_replays() {
    if !root_or_skip("audit_psql_session_verifies_lists_shows_and_replays") {
        return;
    }
    let pg = Pg::start();
    let env = Env::new();
    let pol = policy(&env, &pg, "");
    let psql = pg_support::psql();
    let conn = conninfo(&pg);
    let out = run(
        &env,
        &pol,
        &[],
        &[
            psql.to_str().unwrap(),
            "-X",
            "-A",
            "-t",
            &conn,
            "-c",
            "SELECT id, email FROM users ORDER BY id",
            "-c",
            "SELECT pg_sleep(0.6)",
            "-c",
            "DELETE FROM users",
            "-c",
            "SELECT count(*) FROM orders",
        ],
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(so.contains("50"), "psql ran: {so}");
    assert!(!so.contains("alice.martin@example.com"), "masked: {so}");

    // 1. verify: OK, also against an exported key; the audit dir is 0700.
    let (code, v, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "{v}");
    assert!(v.starts_with("OK "), "{v}");
    let (code, key, _) = cli(&env, &["audit", "key", "export"]);
    assert_eq!(code, 0);
    let keyfile = env.dir.path().join("audit.pub");
    std::fs::write(&keyfile, &key).unwrap();
    let (code, _, _) = cli(
        &env,
        &["audit", "verify", "--key", keyfile.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    let audit_dir = env.state().join("audit");
    assert_eq!(
        std::fs::metadata(&audit_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // 2. Write before forward: each allowed statement's `command` precedes its outcome.
    let recs = records(&env);
    let seq_of = |kind: &str, text: &str| {
        recs.iter()
            .find(|r| r["type"] == kind && r["statement"] == text)
            .and_then(|r| r["seq"].as_u64())
            .unwrap_or_else(|| panic!("no {kind} record of {text}"))
    };
    for t in ["SELECT pg_sleep(0.6)", "SELECT count(*) FROM orders"] {
        assert!(seq_of("command", t) < seq_of("statement", t), "{t}");
    }
    assert!(
        !recs
            .iter()
            .any(|r| r["type"] == "command" && r["statement"] == "DELETE FROM users"),
        "denied statements are never forwarded, so they need no pre-forward record"
    );
    let opened = recs
        .iter()
        .find(|r| r["type"] == "connection_open")
        .expect("connection_open record");
    let conn_seq = opened["seq"].as_u64().unwrap();
    assert!(conn_seq < seq_of("command", "SELECT pg_sleep(0.6)"));

    // 3. sessions list (text, JSON, filters).
    let (code, list, _) = cli(&env, &["sessions", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    let s = list
        .iter()
        .find(|s| s["resource"] == "appdb")
        .expect("the psql session");
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (s["commands"].as_u64(), s["denied"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(s["comm"], "psql");
    let (_, text, _) = cli(
        &env,
        &[
            "sessions",
            "list",
            "--resource",
            "appdb",
            "--identity",
            "psql",
        ],
    );
    assert!(text.contains(&id) && text.contains("1 sessions"), "{text}");
    let (_, text, _) = cli(&env, &["sessions", "list", "--identity", "no-such-agent"]);
    assert!(text.contains("0 sessions"), "{text}");
    let (_, text, _) = cli(
        &env,
        &["sessions", "list", "--since", "2999-01-01T00:00:00Z"],
    );
    assert!(text.contains("0 sessions"), "{text}");

    // 4. show: every command with decision, rows, masked fields, timing.
    let (code, show, _) = cli(&env, &["sessions", "show", &id, "--json"]);
    assert_eq!(code, 0);
    let show: Value = serde_json::from_str(&show).unwrap();
    let log = show["log"].as_array().unwrap();
    let got: Vec<(&str, &str, u64)> = log
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap(),
                c["decision"].as_str().unwrap(),
                c["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("SELECT id, email FROM users ORDER BY id", "allow", 3),
            ("SELECT pg_sleep(0.6)", "allow", 1),
            ("DELETE FROM users", "deny", 0),
            ("SELECT count(*) FROM orders", "allow", 1),
        ]
    );
    assert_eq!(
        log[0]["fields_masked"].as_u64(),
        Some(3),
        "three emails masked"
    );
    assert!(log[1]["duration_ms"].as_f64().unwrap() >= 600.0);
    let gap = log[2]["offset_ms"].as_f64().unwrap() - log[1]["offset_ms"].as_f64().unwrap();
    assert!(gap >= 600.0, "the sleep shows in the timing: {gap}");
    let (_, text, _) = cli(&env, &["sessions", "show", &id]);
    assert!(text.contains("DENY  DELETE FROM users"), "{text}");
    assert!(text.contains("3 rows, 3 masked"), "{text}");

    // 5. replay: same order, original timing divided by --speed.
    let t = Instant::now();
    let (code, replay, _) = cli(&env, &["sessions", "replay", &id, "--speed", "2"]);
    let took = t.elapsed();
    assert_eq!(code, 0);
    let lines: Vec<&str> = replay.lines().filter(|l| l.starts_with("[+")).collect();
    assert_eq!(lines.len(), 4, "{replay}");
    for (l, (text, decision, _)) in lines.iter().zip(&got) {
        assert!(
            l.contains(text) && l.contains(&decision.to_uppercase()),
            "{l}"
        );
    }
    assert!(replay.contains("end of session"), "{replay}");
    let want = log[3]["offset_ms"].as_f64().unwrap() / 2.0 / 1000.0;
    assert!(
        took.as_secs_f64() >= want && took.as_secs_f64() < want + 3.0,
        "replay took {took:?}, the session's span / 2 is {want:.3}s"
    );
    let t = Instant::now();
    let (_, fast, _) = cli(
        &env,
        &["sessions", "replay", &id, "--speed", "inf", "--json"],
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(fast.lines().count(), 4, "{fast}");

    // 6. Tampering with the real log is caught and named.
    let chain = std::fs::read_dir(&audit_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    let seg = chain.join("segment-000001.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let (no, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"DELETE FROM users\"") && l.contains("\"statement\""))
        .unwrap();
    let edited = text.replace(line, &line.replace("\"deny\"", "\"allow\""));
    std::fs::write(&seg, edited).unwrap();
    let (code, v, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v.contains("TAMPERED") && v.contains(&format!("segment-000001.jsonl:{}", no + 1)),
        "{v}"
    );
}

/// The markers of `SELECT <n> AS marker …` statements in `text`.
fn markers(text: &str) -> Vec<u64> {
    text.match_indices("SELECT ")
        .filter_map(|(i, _)| {
            let rest = &text[i + 7..];
            let end = rest.find(" AS marker")?;
            rest[..end].trim().parse().ok()
        })
        .collect()
}

#[test]
fn audit_kill9_under_pgbench_every_forwarded_statement_was_recorded() {
    if !root_or_skip("audit_kill9_under_pgbench_every_forwarded_statement_was_recorded") {
        return;
    }
    let pg = Pg::start();
    pg.sql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    pg.sql("postgres", "SELECT pg_reload_conf()");
    let env = Env::new();
    let pol = policy(&env, &pg, "");
    let script = env.dir.path().join("marker.sql");
    std::fs::write(
        &script,
        "\\set n random(1, 1000000000)\nSELECT :n AS marker, count(*) FROM orders;\n",
    )
    .unwrap();
    let cg = TestCgroup::new("audit-kill9");
    let daemon = attach(&env, &cg, &pol, &[]);
    let pgbench = pg_support::pgbench();
    let mut bench = cg
        .command(pgbench.to_str().unwrap())
        .args(["-n", "-c", "8", "-j", "2", "-T", "30", "-M", "simple", "-f"])
        .arg(&script)
        .args([
            "-h",
            "127.0.0.2",
            "-p",
            &pg.port.to_string(),
            "-U",
            "agent",
            "anything",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Heavy traffic for a while, then kill -9 mid-stream.
    let chain = env.state().join("audit").join(&daemon.instance);
    wait_for("3000 records", Duration::from_secs(30), || {
        let n = interceptor::audit::sessions::load(&chain).ok()?.len();
        (n > 3000).then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(500));
    let _ = bench.kill();
    let _ = bench.wait();
    drop(daemon);
    std::thread::sleep(Duration::from_millis(500)); // the log collector catches up

    let upstream: Vec<u64> = pg
        .log()
        .lines()
        .filter(|l| l.contains("execute") || l.contains("statement:"))
        .flat_map(markers)
        .collect();
    let recorded: HashSet<u64> = records(&env)
        .iter()
        .filter(|r| r["type"] == "command")
        .flat_map(|r| markers(r["statement"].as_str().unwrap_or("")))
        .collect();
    eprintln!(
        "kill -9: {} statements reached PostgreSQL, {} commands on record",
        upstream.len(),
        recorded.len()
    );
    assert!(
        upstream.len() > 500,
        "heavy traffic: {} statements",
        upstream.len()
    );
    let missing: Vec<&u64> = upstream.iter().filter(|m| !recorded.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} statements reached PostgreSQL without an audit record: {:?}",
        missing.len(),
        upstream.len(),
        &missing[..missing.len().min(5)]
    );
    let (code, v, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "verify passes on what remains after kill -9: {v}");

    // A new daemon on the same chain recovers it (signs the open segment) and goes on.
    let daemon = attach(&env, &cg, &pol, &[]);
    daemon.stop();
    let (code, v, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        !v.contains("still open"),
        "every segment closed and signed: {v}"
    );
}

/// Stops and restarts a PostgreSQL cluster of pg_support (for sink outages).
struct Outage {
    data: PathBuf,
    opts: Vec<String>,
    uid: u32,
    gid: u32,
    restarted: Option<std::process::Child>,
}

impl Outage {
    fn new(pg: &Pg) -> Outage {
        let data = pg.dir.path().join("data");
        let opts = std::fs::read_to_string(data.join("postmaster.opts")).unwrap();
        // `postmaster.opts`: the binary then each argument in double quotes.
        let opts = opts
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let meta = std::fs::metadata(&data).unwrap();
        Outage {
            data,
            opts,
            uid: meta.uid(),
            gid: meta.gid(),
            restarted: None,
        }
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn stop(&self) {
        let pid = self.pid().expect("postmaster.pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        wait_for("PostgreSQL stopped", Duration::from_secs(20), || {
            (!Path::new(&format!("/proc/{pid}")).exists() || self.pid().is_none()).then_some(())
        });
    }

    fn start(&mut self, pg: &Pg) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(pg.dir.path().join("server.log"))
            .unwrap();
        self.restarted = Some(
            Command::new(pg_support::bindir().join("postgres"))
                .args(&self.opts)
                .uid(self.uid)
                .gid(self.gid)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_for("PostgreSQL back", Duration::from_secs(30), || {
            pg.sql_try("postgres", "SELECT 1").then_some(())
        });
    }
}

impl Drop for Outage {
    /// The restarted server is not the harness's child: stop it here.
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.pid().is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(mut c) = self.restarted.take() {
            let _ = c.wait();
        }
    }
}

trait TrySql {
    fn sql_try(&self, db: &str, sql: &str) -> bool;
}

impl TrySql for Pg {
    fn sql_try(&self, db: &str, sql: &str) -> bool {
        Command::new(pg_support::psql())
            .args(["-X", "-q", "-At", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[test]
fn audit_postgres_sink_copies_idempotently_and_catches_up_after_an_outage() {
    if !root_or_skip("audit_postgres_sink_copies_idempotently_and_catches_up_after_an_outage") {
        return;
    }
    let pg = Pg::start();
    let sink = Pg::start();
    sink.sql("postgres", "CREATE ROLE sink LOGIN PASSWORD 'sink-pw'");
    sink.sql("postgres", "CREATE DATABASE auditdb OWNER sink");
    let env = Env::new();
    let pol = policy(&env, &pg, "");
    let pwfile = env.dir.path().join("sink.pass");
    std::fs::write(&pwfile, "sink-pw\n").unwrap();
    let url = format!("postgres://sink@127.0.0.2:{}/auditdb", sink.port);
    let cg = TestCgroup::new("audit-sink");
    let daemon = attach(
        &env,
        &cg,
        &pol,
        &[
            "--audit-sink",
            &url,
            "--audit-sink-password-file",
            pwfile.to_str().unwrap(),
        ],
    );
    let chain = env.state().join("audit").join(&daemon.instance);
    let psql = pg_support::psql();
    let traffic = |tag: &str| {
        let t = Instant::now();
        let out = cg
            .command(psql.to_str().unwrap())
            .args(["-X", "-A", "-t", &conninfo(&pg)])
            .args(["-c", &format!("SELECT '{tag}' AS tag, email FROM users")])
            .output()
            .unwrap();
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && so.contains(tag), "{so}");
        assert!(!so.contains("alice.martin@example.com"));
        t.elapsed()
    };
    let local = || interceptor::audit::sessions::load(&chain).unwrap();
    let copied = |cond: &str| -> Option<i64> {
        let out = Command::new(pg_support::psql())
            .args(["-X", "-q", "-At", "-h"])
            .arg(sink.dir.path())
            .args([
                "-p",
                &sink.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "auditdb",
                "-c",
            ])
            .arg(format!(
                "SELECT count(*) FROM interceptor_audit WHERE {cond}"
            ))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let caught_up = |what: &str| {
        wait_for(what, Duration::from_secs(30), || {
            let n = local().len() as i64;
            (copied("true") == Some(n)).then_some(n)
        })
    };
    traffic("before-outage");
    caught_up("sink copies the first session");

    let mut outage = Outage::new(&sink);
    outage.stop();
    for i in 0..3 {
        let took = traffic(&format!("during-outage-{i}"));
        assert!(
            took < Duration::from_secs(3),
            "enforcement does not wait for the sink: {took:?}"
        );
    }
    assert!(local().iter().any(|r| r["type"] == "command"
        && r["statement"]
            .as_str()
            .unwrap_or("")
            .contains("during-outage-2")));
    outage.start(&sink);
    let n = caught_up("sink catches up after the outage");
    assert_eq!(
        copied("record->>'statement' LIKE '%during-outage-%' AND type = 'command'"),
        Some(3)
    );
    // Same rows, same hashes as the local chain; the key makes copies idempotent.
    let max_seq = local()
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap();
    assert_eq!(copied(&format!("seq <= {max_seq}")), Some(n));
    assert_eq!(
        copied("record::text LIKE '%alice.martin@example.com%'"),
        Some(0),
        "no unmasked value in the sink"
    );
    daemon.stop();
    // A restarted daemon copies from the table's position: no duplicates, nothing lost.
    let daemon = attach(
        &env,
        &cg,
        &pol,
        &[
            "--audit-sink",
            &url,
            "--audit-sink-password-file",
            pwfile.to_str().unwrap(),
        ],
    );
    traffic("after-restart");
    caught_up("sink after a daemon restart");
    daemon.stop();
    let (code, v, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn audit_dir_is_out_of_reach_of_an_agent_running_as_nobody() {
    if !root_or_skip("audit_dir_is_out_of_reach_of_an_agent_running_as_nobody") {
        return;
    }
    let env = Env::new();
    let pol = env.policy(
        "none.yaml",
        "version: 1\nidentities:\n  agent: {}\nrules: []\n",
    );
    // Everything above the audit directory is world-readable: only its own mode protects it.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::set_permissions(env.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(&env, &pol, &[], &["true"]);
    assert!(out.status.success());
    let audit = env.state().join("audit");
    let seg = std::fs::read_dir(&audit)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap()
        .join("segment-000001.jsonl");
    let script = format!(
        "ls {s} >/dev/null && echo state-listable; \
         ls {a} && echo LISTED; cat {seg} && echo READ; \
         echo x >> {seg} && echo WROTE; touch {a}/forged && echo CREATED; \
         cat {key} && echo KEY; exit 0",
        s = env.state().display(),
        a = audit.display(),
        seg = seg.display(),
        key = env.state().join("audit-signing.key").display()
    );
    let out = run(
        &env,
        &pol,
        &["--user", "nobody"],
        &["/bin/sh", "-c", &script],
    );
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        so.contains("state-listable"),
        "the test reaches the audit dir: {so} {se}"
    );
    for bad in ["LISTED", "READ", "WROTE", "CREATED", "KEY"] {
        assert!(!so.contains(bad), "nobody could do {bad}: {so}");
    }
    assert!(se.matches("Permission denied").count() >= 4, "{se}");
    let (code, v, _) = cli(&env, &["audit", "verify"]);
    assert_eq!(code, 0, "{v}");
}

/// A small tmpfs that the test can fill up; unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: PathBuf) -> SmallFs {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", at.display());
        SmallFs(at)
    }

    /// Fills the filesystem; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn audit_full_disk_refuses_statements_with_a_postgres_error_and_recovers() {
    if !root_or_skip("audit_full_disk_refuses_statements_with_a_postgres_error_and_recovers") {
        return;
    }
    let pg = Pg::start();
    pg.sql("postgres", "ALTER SYSTEM SET log_statement = 'all'");
    pg.sql("postgres", "SELECT pg_reload_conf()");
    let env = Env::new();
    let pol = policy(&env, &pg, "");
    let small = SmallFs::mount(env.dir.path().join("small"));
    let dir = small.0.join("audit");
    let cg = TestCgroup::new("audit-full");
    let daemon = attach(&env, &cg, &pol, &["--audit-dir", dir.to_str().unwrap()]);
    let psql = pg_support::psql();
    let session = |cmds: &[&str]| {
        let mut c = cg.command(psql.to_str().unwrap());
        c.args(["-X", "-A", "-t", &conninfo(&pg)]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The disk fills up while the session sleeps in its second statement.
    let child = session(&[
        "SELECT 'before-full'",
        "SELECT pg_sleep(1.5)",
        "SELECT 'after-full' AS marker",
    ]);
    let chain = dir.join(&daemon.instance);
    wait_for("pg_sleep recorded", Duration::from_secs(20), || {
        let t = std::fs::read_to_string(chain.join("segment-000001.jsonl")).ok()?;
        t.contains("pg_sleep(1.5)").then_some(())
    });
    let filler = small.fill();
    let out = child.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("--- psql ---\n{so}\n{se}");
    assert!(so.contains("before-full"), "{so}");
    assert!(
        se.contains("the audit store cannot record this command") && se.contains("fail closed"),
        "a clear PostgreSQL error: {se}"
    );
    assert!(!so.contains("after-full"), "{so}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !pg.log().contains("after-full"),
        "the refused statement never reached PostgreSQL"
    );
    // Space again: the next session works, and the chain is intact (the failed batch was
    // cut back, not left half-written).
    std::fs::remove_file(filler).unwrap();
    let out = session(&["SELECT 'space-again'"])
        .wait_with_output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("space-again"));
    daemon.stop();
    let (code, v, _) = cli(&env, &["audit", "verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
}
