//! A psql session verified, listed, shown and replayed; the audit directory out of an
//! agent's reach.

use super::*;

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
