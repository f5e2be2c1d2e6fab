//! Ways a row value could reach the agent outside a masked result, through a raw-protocol
//! client (tests/support/pg_leaks.py): a stale description of a statement or cursor of the
//! same name, error text quoting a value, a reported parameter, a notification payload;
//! and a half-closed session behind a skipped Query, which must end.

use super::*;

/// `pg_notify` may run (a write of no table): the notification scenario needs it.
const NOTIFY: &str = "  - name: agent-notify
    identity: agent
    resource: appdb
    action: allow
    operations: [read, write]
    tables: [public.users]
    functions: [pg_notify]
  - name: agent-settings
    identity: agent
    resource: appdb
    action: allow
    operations: [privileged, session]
";

#[test]
fn pg_values_do_not_leak_outside_masked_results() {
    if !root_or_skip("pg_values_do_not_leak_outside_masked_results") {
        return;
    }
    let Some(py) = pg_support::python() else {
        return;
    };
    let s = setup(
        "app",
        APP_PASSWORD,
        &format!("{NOTIFY}{WRITE_IMPORTS}{READ_ONLY}"),
    );
    let out = s.python_client(&py, "pg_leaks.py", &[]);
    let text = out.to_string();
    no_plain_pii(&text);
    let of = |scenario: &str, kind: &str| -> Vec<Value> {
        out[scenario]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m[0] == kind)
            .map(|m| m[1].clone())
            .collect()
    };
    // Executed without a Describe after the name was described as another statement, or
    // a cursor declared again: not masked by the old description — every value NULL.
    for scenario in ["stale_statement", "stale_portal"] {
        let rows = of(scenario, "row");
        assert_eq!(rows.len(), 1, "{scenario}: {:#}", out[scenario]);
        assert!(
            rows[0].as_array().unwrap().iter().all(Value::is_null),
            "{scenario}: {:#}",
            out[scenario]
        );
    }
    // Error text, a parameter, a notification payload: the detectors ran over them.
    let masked_email = |v: &str| v.contains("@example.org") && !v.contains("bob.chen@");
    let err = of("error_text", "error");
    assert!(
        err.iter().any(|e| e.to_string().contains("invalid input syntax")
            && masked_email(&e.to_string())),
        "{err:?}"
    );
    let params = of("parameter", "parameter");
    assert!(
        params
            .iter()
            .any(|p| p[0] == "application_name" && masked_email(p[1].as_str().unwrap())),
        "{params:?}"
    );
    let notes = of("notification", "notification");
    assert!(
        notes
            .iter()
            .any(|n| n[0] == "ch" && masked_email(n[1].as_str().unwrap())),
        "{:#}",
        out["notification"]
    );
    // The half-closed session got its error and ended (it used to hang).
    let half = out["half_closed"].as_array().unwrap();
    assert_eq!(half.last().unwrap()[0], "eof", "{half:?}");
    assert!(half.iter().any(|m| m[0] == "error"), "{half:?}");

    // The query sent right behind `SET standard_conforming_strings = off` was classified
    // with it off: its hidden DELETE was denied, nothing was deleted.
    let scs = out["scs_pipeline"].to_string();
    assert!(scs.contains("C42501"), "{scs}");
    assert_eq!(s.pg.count("orders"), 50, "{scs}");

    // A portal keeps the statement it was bound from: a later Parse and Describe of the
    // same name do not describe its rows (NULL: nothing describes them for sure).
    let rows = of("rebind", "row");
    assert!(
        rows.len() == 1 && rows[0].as_array().unwrap().iter().all(Value::is_null),
        "{:#}",
        out["rebind"]
    );
    // A Sync inside COPY FROM STDIN is ignored by the server, and by the proxy: the query
    // after the copy is masked with its own description.
    let copy = &out["copy_sync"];
    assert_eq!(copy[0][0], "G", "{copy:#}");
    let rows = of("copy_sync", "row");
    assert_eq!(rows.len(), 1, "{copy:#}");
    assert!(masked_email(rows[0][0].as_str().unwrap()), "{copy:#}");
    assert_eq!(rows[0][1], "[REDACTED]", "{copy:#}");
    // A statement of SQL PREPARE executed through the protocol: decided and audited as
    // `EXECUTE "s1"`, its rows masked.
    let rows = of("sql_prepared", "row");
    assert!(
        rows.len() == 1 && rows[0][1] == "[REDACTED]",
        "{:#}",
        out["sql_prepared"]
    );

    // A second COPY in one Query is tracked like the first (its Sync dropped), a name cut
    // inside a character is not another name's, and a statement DEALLOCATEd in SQL and
    // parsed again runs as the new text: each victim row masked (or withheld), never plain.
    for scenario in ["double_copy", "long_names", "deallocated"] {
        let rows = of(scenario, "row");
        assert_eq!(rows.len(), 1, "{scenario}: {:#}", out[scenario]);
        let row = rows[0].as_array().unwrap();
        let ok = row.iter().all(Value::is_null)
            || (masked_email(row[0].as_str().unwrap_or("")) && row[1] == "[REDACTED]");
        assert!(ok, "{scenario}: {:#}", out[scenario]);
    }
    assert!(
        s.records("statement").iter().any(|r| r["statement"]
            == "SELECT email, ssn FROM users WHERE id = 2"
            && r["rows"] == 1),
        "the re-parsed statement is on record as itself"
    );

    // The cursor's Execute is on record as a fetch from it, decided by the read rule.
    let stmts = s.records("statement");
    assert!(
        stmts
            .iter()
            .any(|r| r["statement"] == "FETCH ALL FROM \"c\"" && r["decision"] == "allow"),
        "{stmts:#?}"
    );
    assert!(
        stmts
            .iter()
            .any(|r| r["statement"] == "EXECUTE \"s1\"" && r["decision"] == "allow"),
        "{stmts:#?}"
    );
    no_plain_pii(&std::fs::read_to_string(s.env.audit_path()).unwrap());
}
