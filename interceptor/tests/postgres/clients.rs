//! Driver clients: psycopg (extended protocol, pipelines), asyncpg, pgbench, and cancel
//! requests from psycopg and psql.

use super::*;

#[test]
fn pg_psycopg_extended_protocol_masks_denies_prepares_and_pipelines() {
    if !root_or_skip("pg_psycopg_extended_protocol_masks_denies_prepares_and_pipelines") {
        return;
    }
    let s = setup("app", APP_PASSWORD, &format!("{WRITE_IMPORTS}{READ_ONLY}"));
    let Some(r) = s.psycopg("extended") else {
        return;
    };
    let text = r.to_string();
    no_plain_pii(&text);

    // Parameterised SELECT, text results: masked columns arrive masked.
    let row = &r["select"][0];
    bob_masked(row, &text);
    assert_eq!(r["select_rowcount"], 1);
    // Binary results: text columns are masked the same way (not passed through).
    let row = &r["binary"][0];
    assert_eq!(row[0], 2, "{text}");
    assert!(row[1].as_str().unwrap().ends_with("@example.org"), "{text}");
    assert_eq!(row[2], "[REDACTED]", "{text}");
    assert_eq!(
        row[3], "card 4111 1111 1111 1111 on file",
        "no card detector in this policy: {text}"
    );

    // Denied via Parse: a real InsufficientPrivilege, and the connection goes on.
    let d = &r["denied"];
    assert_eq!(d["class"], "InsufficientPrivilege", "{text}");
    assert_eq!(d["sqlstate"], "42501");
    assert!(
        d["message"].as_str().unwrap().contains("DELETE on"),
        "{text}"
    );
    assert_eq!(r["after_denied"], 50);

    // Prepared statement reuse: every execution masked, the server holds the statement.
    let prepared = r["prepared"].as_array().unwrap();
    assert_eq!(prepared.len(), 4);
    assert!(prepared.iter().all(|e| e.as_str().unwrap().contains('@')));
    assert_eq!(prepared[1], prepared[3], "stable masking of the same value");
    assert!(r["server_prepared"].as_i64().unwrap() >= 1, "{text}");

    // executemany (pipelined): all rows in, real values stored, masked on the way out.
    assert_eq!(r["executemany_rowcount"], 20, "{text}");
    assert_eq!(r["imports"][0], 20);
    assert!(!text.contains("person1@example.net"), "{text}");
    assert_eq!(
        s.pg.sql(
            "app",
            "SELECT count(*) FROM imports WHERE email LIKE 'person%@example.net'"
        )
        .trim(),
        "20",
        "the agent's values are stored unmasked"
    );
    assert_eq!(r["denied_many"]["sqlstate"], "42501", "{text}");
    assert_eq!(r["after_denied_many"], "still usable");

    // Inside a transaction the denial aborts it, as any error would.
    assert_eq!(r["tx_denied"]["sqlstate"], "42501", "{text}");
    assert_eq!(r["tx_after"]["sqlstate"], "25P02", "{text}");
    assert_eq!(r["tx_rolled_back"], 50);
    assert_eq!(s.pg.count("orders"), 50);

    let stmts = s.records("statement");
    assert!(stmts
        .iter()
        .any(|r| r["protocol"] == "extended" && r["decision"] == "deny"));
    let sel = stmts
        .iter()
        .find(|r| {
            r["protocol"] == "extended"
                && r["statement"]
                    .as_str()
                    .unwrap()
                    .starts_with("SELECT id, name, email, ssn")
        })
        .expect("audit of the parameterised SELECT");
    assert_eq!(sel["decision"], "allow");
    assert_eq!(sel["rows"], 1);
    assert!(sel["fields_masked"].as_u64().unwrap() >= 2, "{sel}");
    let audit = std::fs::read_to_string(s.env.audit_path()).unwrap();
    no_plain_pii(&audit);
}

#[test]
fn pg_asyncpg_named_statements_binary_results_cursor_copy_and_denials() {
    if !root_or_skip("pg_asyncpg_named_statements_binary_results_cursor_copy_and_denials") {
        return;
    }
    let s = setup("app", APP_PASSWORD, &format!("{WRITE_IMPORTS}{READ_ONLY}"));
    let Some(r) = s.asyncpg() else {
        return;
    };
    let text = r.to_string();
    no_plain_pii(&text);

    // Binary results of a named statement: the email is partially masked, the SSN column
    // redacted, the rest as stored.
    let row = &r["select"][0];
    bob_masked(row, &text);
    assert_eq!(row[4], "card 4111 1111 1111 1111 on file", "{text}");
    let prepared = r["prepared"].as_array().unwrap();
    assert_eq!(prepared.len(), 4);
    assert!(
        prepared
            .iter()
            .all(|e| e.as_str().unwrap().contains("***@")),
        "{text}"
    );
    assert_eq!(prepared[1], prepared[3]);
    let all = r["all"].as_array().unwrap();
    assert_eq!(all.len(), 3, "{text}");
    assert!(all.iter().all(|row| row[2] == "[REDACTED]"), "{text}");

    // Denials through Parse and through a simple Query: 42501, the session goes on.
    for k in ["denied", "denied_simple"] {
        assert_eq!(r[k]["class"], "InsufficientPrivilegeError", "{k}: {text}");
        assert_eq!(r[k]["sqlstate"], "42501", "{k}: {text}");
    }
    assert_eq!(r["after_denied"], 50);

    // executemany stores the values as sent and reads them back masked.
    assert_eq!(r["imports"], 10, "{text}");
    let email = r["imports_email"].as_str().unwrap();
    assert!(
        email.ends_with("@example.net") && email != "async7@example.net",
        "{email}"
    );
    assert_eq!(
        s.pg.sql(
            "app",
            "SELECT email FROM imports WHERE id = 7 AND note = 'batch'"
        )
        .trim(),
        "async7@example.net"
    );

    // One row per Execute (PortalSuspended in between), each masked.
    let cursor = r["cursor"].as_array().unwrap();
    assert_eq!(cursor.len(), 3, "{text}");
    assert!(
        cursor.iter().all(|e| e.as_str().unwrap().contains("***@")),
        "{text}"
    );

    // In a transaction the denial aborts it; asyncpg rolls back; nothing deleted.
    assert_eq!(r["tx_denied"]["sqlstate"], "42501", "{text}");
    assert_eq!(r["tx_after"], 50);
    assert_eq!(s.pg.count("orders"), 50);

    // Binary COPY FROM STDIN is a write to imports: allowed. COPY TO is denied under masking.
    assert_eq!(r["copy_in"], "COPY 5", "{text}");
    assert_eq!(r["copy_out"]["sqlstate"], "42501", "{text}");
    assert_eq!(r["copy_out_chunks"], 0);
    assert_eq!(r["after_copy"], 15);
    assert_eq!(
        s.pg.sql(
            "app",
            "SELECT count(*) FROM imports WHERE email LIKE 'copy%@example.net'"
        )
        .trim(),
        "5"
    );
}

#[test]
fn pg_pgbench_initialises_and_runs_through_the_interceptor() {
    if !root_or_skip("pg_pgbench_initialises_and_runs_through_the_interceptor") {
        return;
    }
    let rules = format!(
        "  - name: pgbench
    identity: agent
    resource: appdb
    action: allow
    operations: [read, write, ddl, transaction, session, utility]
    tables: [\"public.pgbench_*\"]
{READ_ONLY}"
    );
    let s = setup("app", APP_PASSWORD, &rules);
    let pgbench = pg_support::pgbench();
    let conn = [
        "-h",
        "127.0.0.2",
        "-p",
        &s.pg.port.to_string(),
        "-U",
        "agent",
        "anything",
    ]
    .map(str::to_owned);
    let bench = |args: &[&str]| {
        let mut a: Vec<&str> = vec![pgbench.to_str().unwrap()];
        a.extend(args);
        a.extend(conn.iter().map(String::as_str));
        let out = s.env.run(&s.policy, &a);
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        let se = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- pgbench {args:?} ---\n{so}\n{se}");
        assert!(out.status.success(), "pgbench {args:?}: {so}\n{se}");
        so
    };
    bench(&["-i", "-s", "1", "-q"]);
    assert_eq!(s.pg.count("pgbench_accounts"), 100_000);
    for mode in ["simple", "extended", "prepared"] {
        let out = bench(&["-S", "-c", "2", "-j", "2", "-t", "200", "-M", mode, "-n"]);
        assert!(
            out.contains("number of transactions actually processed: 400/400"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
    // The default TPC-B-like script (UPDATE/INSERT on pgbench_* in a transaction).
    let out = bench(&["-c", "2", "-t", "50", "-n"]);
    assert!(
        out.contains("number of transactions actually processed: 100/100"),
        "{out}"
    );
    let denied = s
        .records("statement")
        .into_iter()
        .filter(|r| r["decision"] == "deny")
        .count();
    assert_eq!(denied, 0, "pgbench's statements are all allowed");
}

#[test]
fn pg_cancel_from_psycopg_and_psql_reaches_the_backend() {
    if !root_or_skip("pg_cancel_from_psycopg_and_psql_reaches_the_backend") {
        return;
    }
    let s = setup("app", APP_PASSWORD, READ_ONLY);
    // psycopg: conn.cancel_safe() from another thread, through the interceptor.
    if let Some(r) = s.psycopg("cancel") {
        let text = r.to_string();
        assert_eq!(r["result"]["class"], "QueryCanceled", "{text}");
        assert_eq!(r["result"]["sqlstate"], "57014");
        assert!(
            r["result"]["message"]
                .as_str()
                .unwrap()
                .contains("due to user request"),
            "a cancel request, not a timeout: {text}"
        );
        assert_eq!(r["after"], "usable after cancel");
    }

    // psql: SIGINT to `interceptor run` is forwarded to psql, which sends a CancelRequest.
    let psql = pg_support::psql();
    let child = s
        .env
        .cmd()
        .arg("run")
        .arg("--policy")
        .arg(&s.policy)
        .arg("--audit-log")
        .arg(s.env.audit_path())
        .arg("--")
        .arg(&psql)
        .args(["-X", "-v", "VERBOSITY=verbose", &s.conninfo()])
        .args(["-c", "SELECT pg_sleep(30) AS psql_sleep"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "psql's pg_sleep running on the server",
        std::time::Duration::from_secs(20),
        || {
            let n = s.pg.sql(
                "app",
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%psql_sleep' AND state = 'active' AND pid <> pg_backend_pid()",
            );
            (n.trim() == "1").then_some(())
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(err.contains("57014"), "psql's query was cancelled: {err}");
    assert!(err.contains("due to user request"), "{err}");

    let cancelled: Vec<Value> = s
        .records("statement")
        .into_iter()
        .filter(|r| r["sqlstate"] == "57014")
        .collect();
    assert!(
        cancelled.len() >= if pg_support::python().is_some() { 2 } else { 1 },
        "audit names the cancelled statements: {cancelled:?}"
    );
    // The cancel connections themselves are redirected and audited, and the server saw
    // them come from the interceptor (not the agent's own address).
    assert!(
        s.pg.log()
            .contains("canceling statement due to user request"),
        "{}",
        s.pg.log()
    );
}
