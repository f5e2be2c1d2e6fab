//! Held PostgreSQL statements: approved and denied from the CLI, approvers authenticated,
//! expiry, and waiters failed (never run) when the daemon stops.

use super::*;

#[test]
fn held_statement_approved_then_another_denied_from_the_cli() {
    if !root_or_skip("held_statement_approved_then_another_denied_from_the_cli") {
        return;
    }
    let s = setup("apr-cli");
    let policy = s.policy(60, None, "");
    let _d = Attached::start(&s.env, &s.cg, &policy);
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);

    let before = s.pg.count("orders");
    let psql = s.psql("DELETE FROM orders WHERE id = 1");
    let req = s.pending(&bob);
    let id = req["id"].as_str().unwrap().to_owned();
    assert_eq!(req["rule"], "hold-order-writes");
    assert_eq!(req["command"], "DELETE FROM orders WHERE id = 1");
    assert_eq!(req["resource"], "appdb");
    // Nothing ran while it waits.
    assert_eq!(s.pg.count("orders"), before);
    let shown = s.approvals(&bob, &["show", &id]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("DELETE FROM orders"));
    let out = s.approvals(&bob, &["approve", &id, "--reason", "cleanup ticket 42"]);
    assert!(out.status.success());
    let (so, se) = finish(psql);
    assert!(
        se.contains(&id),
        "the agent was told what it waits for: {se}"
    );
    assert!(so.contains("DELETE 1"), "{so}");
    assert_eq!(s.pg.count("orders"), before - 1);

    // A second one, denied: the agent gets 42501 naming the approver and reason.
    let psql = s.psql("DELETE FROM orders WHERE id = 2");
    let id2 = s.pending(&bob)["id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id);
    let out = s.approvals(
        &bob,
        &["deny", &id2, "--reason", "not during business hours"],
    );
    assert!(out.status.success());
    let (_, se) = finish(psql);
    assert!(se.contains("42501"), "{se}");
    assert!(se.contains("denied by bob"), "{se}");
    assert!(se.contains("not during business hours"), "{se}");
    assert_eq!(s.pg.count("orders"), before - 1);

    // Audit: created → approved → executed, created → denied. Records are written by the
    // audit thread, so the last ones may land a moment after the client saw the answer.
    let wanted = [
        (id.clone(), "created"),
        (id.clone(), "approved"),
        (id.clone(), "executed"),
        (id2.clone(), "created"),
        (id2.clone(), "denied"),
    ];
    let approval_events = || -> Vec<(String, String)> {
        s.env
            .audit()
            .into_iter()
            .filter(|r| r["type"] == "approval")
            .map(|r| {
                let id = r["request"]["id"]
                    .as_str()
                    .or(r["request"].as_str())
                    .unwrap_or("")
                    .to_owned();
                (id, r["event"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let complete = |ev: &[(String, String)]| {
        wanted
            .iter()
            .all(|e| ev.iter().any(|(i, x)| *i == e.0 && x == e.1))
    };
    let events = try_wait_for(Duration::from_secs(10), || {
        Some(approval_events()).filter(|ev| complete(ev))
    })
    .unwrap_or_else(approval_events);
    for e in wanted {
        assert!(
            events.iter().any(|(i, ev)| *i == e.0 && ev == e.1),
            "missing {e:?} in {events:?}"
        );
    }
}

#[test]
fn approvers_are_authenticated_and_cannot_approve_their_own_request() {
    if !root_or_skip("approvers_are_authenticated_and_cannot_approve_their_own_request") {
        return;
    }
    let s = setup("apr-auth");
    // The agent is bound to a token with subject agent-7 (who is also in dba).
    let policy = s.policy(60, Some("agent-7"), "");
    let agent_token = s.env.dir.path().join("agent.jwt");
    std::fs::write(
        &agent_token,
        s.idp.token("idp", ISS, "agent-7", &["agents"], 600),
    )
    .unwrap();
    let _d = Attached::start_with(
        &s.env,
        &s.cg,
        &policy,
        &["--token", agent_token.to_str().unwrap()],
    );
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);
    let psql = s.psql("UPDATE orders SET total = 0 WHERE id = 3");
    let id = s.pending(&bob)["id"].as_str().unwrap().to_owned();

    let other = Idp::new(s.env.dir.path(), "other");
    let cases = [
        (
            "self-approval",
            s.idp.token("idp", ISS, "agent-7", &["dba"], 600),
            "own request",
        ),
        (
            "not an approver",
            s.idp.token("idp", ISS, "eve", &["dev"], 600),
            "no approver grant",
        ),
        (
            "expired",
            s.idp.token("idp", ISS, "bob", &["dba"], -600),
            "expired",
        ),
        (
            "wrong issuer",
            s.idp
                .token("idp", "https://evil.test", "bob", &["dba"], 600),
            "not configured",
        ),
        // Signed by another key that claims the configured key id.
        (
            "bad signature",
            other.token("idp", ISS, "bob", &["dba"], 600),
            "signature",
        ),
    ];
    for (what, token, expect) in cases {
        let out = s.approvals(&token, &["approve", &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} must be refused");
        assert!(err.contains(expect), "{what}: {err}");
    }
    // Still waiting; bob decides.
    assert!(s.approvals(&bob, &["deny", &id]).status.success());
    let (_, se) = finish(psql);
    assert!(se.contains("42501") && se.contains("denied by bob"), "{se}");
}

#[test]
fn held_request_expires_and_daemon_stop_fails_waiters_without_running_them() {
    if !root_or_skip("held_request_expires_and_daemon_stop_fails_waiters_without_running_them") {
        return;
    }
    let s = setup("apr-expiry");
    let policy = s.policy(2, None, "");
    let d = Attached::start(&s.env, &s.cg, &policy);
    let before = s.pg.count("orders");
    let (_, se) = finish(s.psql("DELETE FROM orders WHERE id = 5"));
    assert!(
        se.contains("42501") && se.contains("not decided within 2s"),
        "{se}"
    );
    assert_eq!(s.pg.count("orders"), before);

    // Held again, then the daemon stops: the agent's statement fails, nothing runs.
    let policy = s.policy(60, None, "");
    d.stop();
    let d = Attached::start(&s.env, &s.cg, &policy);
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);
    let psql = s.psql("DELETE FROM orders WHERE id = 6");
    let id = s.pending(&bob)["id"].as_str().unwrap().to_owned();
    d.stop();
    let (_, se) = finish(psql);
    assert!(
        se.contains("abandoned") || se.contains("shutting down"),
        "the waiting statement fails clearly: {se}"
    );
    assert_eq!(s.pg.count("orders"), before, "nothing ran");
    let abandoned =
        s.env.audit().into_iter().any(|r| {
            r["type"] == "approval" && r["event"] == "abandoned" && r["request"]["id"] == id
        });
    assert!(abandoned, "the abandonment is audited");
}

#[test]
fn an_agent_giving_up_withdraws_its_held_statement() {
    if !root_or_skip("an_agent_giving_up_withdraws_its_held_statement") {
        return;
    }
    let s = setup("apr-gone");
    let policy = s.policy(60, None, "");
    let _d = Attached::start(&s.env, &s.cg, &policy);
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);
    let before = s.pg.count("orders");
    let state_of = |id: &str| -> Option<Value> {
        let out = s.approvals(&bob, &["list", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find(|r| r["id"] == id).cloned()
    };

    // The agent is killed while it waits: its request is withdrawn, not left for an
    // approver to run on nobody's behalf.
    let mut psql = s.psql("DELETE FROM orders WHERE id = 7");
    let id = s.pending(&bob)["id"].as_str().unwrap().to_owned();
    psql.kill().unwrap();
    let _ = psql.wait();
    let gone = wait_for("the request withdrawn", Duration::from_secs(20), || {
        state_of(&id).filter(|r| r["state"] == "withdrawn")
    });
    assert!(
        gone["decision_reason"]
            .as_str()
            .unwrap_or("")
            .contains("closed its connection"),
        "{gone}"
    );
    let late = s.approvals(&bob, &["approve", &id]);
    assert!(
        !late.status.success(),
        "a withdrawn request cannot be approved"
    );
    assert_eq!(s.pg.count("orders"), before, "nothing ran");

    // Ctrl-C in psql sends a CancelRequest: the held statement is withdrawn and psql
    // gets the error at once.
    let psql = s.psql("DELETE FROM orders WHERE id = 8");
    let id2 = s.pending(&bob)["id"].as_str().unwrap().to_owned();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(psql.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (_, se) = finish(psql);
    assert!(
        se.contains("withdrawn") && se.contains("cancelled"),
        "the agent is told: {se}"
    );
    assert_eq!(state_of(&id2).unwrap()["state"], "withdrawn");
    assert_eq!(s.pg.count("orders"), before, "nothing ran");
    let events: Vec<Value> = s
        .env
        .audit()
        .into_iter()
        .filter(|r| r["type"] == "approval" && r["event"] == "withdrawn")
        .collect();
    for i in [&id, &id2] {
        assert!(
            events.iter().any(|r| r["request"]["id"] == *i),
            "withdrawal of {i} audited: {events:?}"
        );
    }
}

#[test]
fn a_prepared_statement_is_held_at_every_execute_with_its_parameters() {
    if !root_or_skip("a_prepared_statement_is_held_at_every_execute_with_its_parameters") {
        return;
    }
    let s = setup("apr-prep");
    let policy = s.policy(60, None, "");
    let _d = Attached::start(&s.env, &s.cg, &policy);
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);
    let totals = || {
        s.pg.sql(
            "app",
            "SELECT string_agg(total::int::text, ',' ORDER BY id) FROM orders WHERE id IN (11, 12)",
        )
        .trim()
        .to_owned()
    };
    assert_eq!(totals(), "110,120");
    // psycopg with prepare=True: one Parse of a named statement, then Bind/Execute each time.
    let script = format!(
        "import psycopg\n\
         c = psycopg.connect('host=127.0.0.2 port={} user=agent password=x dbname=app', autocommit=True)\n\
         for i in (11, 12):\n\
         \x20   try:\n\
         \x20       c.execute('UPDATE orders SET total = %s WHERE id = %s', (i * 1000, i), prepare=True)\n\
         \x20       print('ran', i, flush=True)\n\
         \x20   except Exception as e:\n\
         \x20       print('refused', i, str(e).splitlines()[0], flush=True)\n",
        s.pg.port
    );
    let agent =
        s.cg.command("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let first = s.pending(&bob);
    let cmd = first["command"].as_str().unwrap();
    assert!(
        cmd.contains("-- parameters: $1 = ") && cmd.contains("11000") && cmd.contains(" 11)"),
        "approvers see the values: {cmd}"
    );
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(s.approvals(&bob, &["approve", &id]).status.success());
    // The second execution of the same prepared statement is asked about again.
    let second = wait_for("a second pending request", Duration::from_secs(20), || {
        let out = s.approvals(&bob, &["list", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|r| r["state"] == "pending" && r["id"] != id.as_str())
            .cloned()
    });
    assert!(
        second["command"].as_str().unwrap().contains(" 12)"),
        "{second}"
    );
    let id2 = second["id"].as_str().unwrap().to_owned();
    assert!(s.approvals(&bob, &["deny", &id2]).status.success());
    let (so, _) = finish(agent);
    assert!(so.contains("ran 11"), "{so}");
    assert!(so.contains("refused 12"), "{so}");
    assert_eq!(totals(), "11000,120", "only the approved execution ran");
}
