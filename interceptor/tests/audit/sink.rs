//! The PostgreSQL sink: idempotent copies, catching up after an outage and a restart.

use super::*;

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
    let copied = |cond: &str| sink_count(&sink, "auditdb", cond);
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
fn audit_sink_works_with_an_insert_only_role_and_its_password_never_reaches_the_agent() {
    if !root_or_skip(
        "audit_sink_works_with_an_insert_only_role_and_its_password_never_reaches_the_agent",
    ) {
        return;
    }
    let pg = Pg::start();
    let sink = Pg::start();
    // The table belongs to another role; the sink's role may only INSERT and SELECT.
    sink.sql("postgres", "CREATE ROLE sink LOGIN PASSWORD 'sink-pw-4a1c'");
    sink.sql("postgres", "CREATE DATABASE auditdb");
    sink.sql("auditdb", interceptor::audit::sink_pg::TABLE_DDL);
    sink.sql(
        "auditdb",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT INSERT, SELECT ON interceptor_audit TO sink",
    );
    let env = Env::new();
    let pol = policy(&env, &pg, "");
    let url = format!("postgres://sink@127.0.0.2:{}/auditdb", sink.port);
    let out = env
        .cmd()
        .env("INTERCEPTOR_AUDIT_SINK_PASSWORD", "sink-pw-4a1c")
        .env("INTERCEPTOR_APPROVER_TOKEN", "approver-token-9d2e")
        .args(["run", "--policy"])
        .arg(&pol)
        .args(["--audit-sink", &url, "--"])
        .args(["sh", "-c", "env; echo agent-done"])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("--- interceptor run ---\n{so}{se}");
    assert!(out.status.success() && so.contains("agent-done"));
    assert!(
        !so.contains("sink-pw-4a1c"),
        "the agent saw the sink password"
    );
    assert!(
        !so.contains("approver-token-9d2e"),
        "the agent saw an approver token"
    );
    assert!(!se.contains("permission denied"), "{se}");
    // The daemon's last pass at shutdown copied its records with the restricted role.
    assert!(sink_count(&sink, "auditdb", "true").unwrap_or(0) > 0);
}
