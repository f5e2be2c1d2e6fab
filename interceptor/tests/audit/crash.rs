//! Crashes and faults: kill -9 under pgbench loses no forwarded statement; a full disk
//! refuses statements with a PostgreSQL error and recovers.

use super::*;

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
