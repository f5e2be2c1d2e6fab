//! psql through the transparent path: injected credentials, masking, denials and evasions,
//! transactions, COPY, the row limit.

use super::*;

#[test]
fn pg_credentials_are_injected_results_masked_and_writes_denied() {
    if !root_or_skip("pg_credentials_are_injected_results_masked_and_writes_denied") {
        return;
    }
    let s = setup("app", APP_PASSWORD, READ_ONLY);
    let (out, err) = s.psql(&[
        "SELECT id, email, ssn, note FROM users ORDER BY id",
        "DELETE FROM orders",
        "SELECT count(*) FROM orders",
    ]);
    // Logged in with a wrong password (the agent's is ignored), SCRAM upstream.
    assert!(
        out.contains("123456789|"),
        "the id is not mistaken for an SSN: {out}"
    );
    assert!(
        !out.contains("alice.martin@example.com"),
        "email masked: {out}"
    );
    assert!(
        out.contains("@example.com"),
        "partial email keeps the domain: {out}"
    );
    assert!(!out.contains("078-05-1120"), "ssn masked: {out}");
    assert!(out.contains("[REDACTED]"), "{out}");
    // Denied DELETE: 42501, rule named, session continues.
    assert!(err.contains("42501"), "{err}");
    assert!(err.contains("agent-read"), "{err}");
    assert!(
        out.trim_end().ends_with("50"),
        "the session continued: {out}"
    );
    assert_eq!(s.pg.count("orders"), 50);

    let stmts = s.records("statement");
    let del = stmts
        .iter()
        .find(|r| r["statement"] == "DELETE FROM orders")
        .expect("audit of the DELETE");
    assert_eq!(del["decision"], "deny");
    let sel = stmts
        .iter()
        .find(|r| r["statement"].as_str().unwrap().starts_with("SELECT id"))
        .unwrap();
    assert_eq!(sel["decision"], "allow");
    assert_eq!(sel["rows"], 3);
    assert!(sel["fields_masked"].as_u64().unwrap() >= 6, "{sel}");
    let audit = std::fs::read_to_string(s.env.audit_path()).unwrap();
    assert!(
        !audit.contains("alice.martin@example.com") && !audit.contains("078-05-1120"),
        "no unmasked value in the audit"
    );
    assert_eq!(s.records("session_start").len(), 1);
    assert_eq!(s.records("session_end").len(), 1);
}

#[test]
fn pg_computed_outputs_of_masked_columns_are_refused() {
    if !root_or_skip("pg_computed_outputs_of_masked_columns_are_refused") {
        return;
    }
    let s = setup("app", APP_PASSWORD, READ_ONLY);
    let (out, err) = s.psql(&[
        "SELECT row_to_json(u) FROM users u",
        "SELECT 'x' AS v UNION ALL SELECT ssn FROM users",
        "SELECT replace(ssn, '-', ' ') FROM users",
        "SELECT id, ssn FROM users ORDER BY id",
    ]);
    // PostgreSQL describes these outputs without their column: the rule on users.ssn
    // could not recognise them, so they are refused rather than sent raw.
    assert!(
        !out.contains("078-05-1120") && !out.contains("078 05 1120"),
        "{out}"
    );
    assert_eq!(
        err.matches("select the column plainly").count(),
        3,
        "each computed output refused: {err}"
    );
    assert!(err.contains("42501") && err.contains("users.ssn"), "{err}");
    assert!(
        out.contains("[REDACTED]"),
        "the plain column is masked: {out}"
    );
}

#[test]
fn pg_views_and_child_tables_follow_the_rules_of_their_base_columns() {
    if !root_or_skip("pg_views_and_child_tables_follow_the_rules_of_their_base_columns") {
        return;
    }
    let s = setup("app", APP_PASSWORD, READ_ONLY);
    // PostgreSQL describes these columns as the view's or the child table's own: the rule
    // on users.ssn must follow them there.
    s.pg.sql(
        "app",
        "SET ROLE app;
         CREATE VIEW tax_ids AS SELECT id, ssn AS tax_id FROM users;
         CREATE VIEW tax_ids_again AS SELECT tax_id AS t, id FROM tax_ids;
         CREATE VIEW shouted AS SELECT id, upper(ssn) AS s FROM users;
         CREATE VIEW whole AS SELECT u AS r FROM users u;
         CREATE MATERIALIZED VIEW frozen AS SELECT id, ssn FROM users;
         CREATE VIEW ids_only AS SELECT id, name FROM users WHERE id < 100;
         CREATE TABLE users_archive () INHERITS (users);
         INSERT INTO users_archive VALUES (7, 'Old Account', 'old@example.com', '123-45-6789', '', '');",
    );
    let (out, err) = s.psql(&[
        "SELECT * FROM tax_ids ORDER BY id",
        "SELECT * FROM tax_ids_again ORDER BY id",
        "SELECT * FROM shouted ORDER BY id",
        "SELECT * FROM whole",
        "SELECT * FROM frozen ORDER BY id",
        "SELECT * FROM users_archive",
        "SELECT * FROM ids_only ORDER BY id",
        // Computed on such columns: refused, as on the ruled column itself.
        "SELECT upper(tax_id) FROM tax_ids",
        "SELECT row_to_json(t) FROM tax_ids_again t",
        "SELECT lower(ssn) FROM users_archive",
        "SELECT upper(name) FROM ids_only",
    ]);
    for raw in ["078-05-1120", "219-09-9999", "536-90-4399", "123-45-6789"] {
        assert!(!out.contains(raw), "{raw} leaked: {out}");
    }
    // users holds 4 rows with its child's; the materialized view was filled before it.
    assert_eq!(
        out.matches("[REDACTED]").count(),
        4 * 4 + 3 + 1,
        "{out}\n{err}"
    );
    // A view's other columns are left alone.
    assert!(out.contains("2|Bob Chen"), "{out}");
    assert_eq!(err.matches("select the column plainly").count(), 3, "{err}");
    assert!(
        out.contains("BOB CHEN"),
        "a view column without a rule is free: {out}"
    );
}

#[test]
fn pg_denied_statement_aborts_the_transaction_and_evasions_are_denied() {
    if !root_or_skip("pg_denied_statement_aborts_the_transaction_and_evasions_are_denied") {
        return;
    }
    let s = setup("app", APP_PASSWORD, READ_ONLY);
    let (out, err) = s.psql(&[
        "BEGIN",
        "DELETE FROM orders",
        "SELECT 1",
        "COMMIT",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d",
        "COPY (DELETE FROM orders RETURNING *) TO STDOUT",
        "DO $$BEGIN DELETE FROM orders; END$$",
        "SELECT 1; DELETE FROM orders",
        "SELECT 'still here'",
    ]);
    assert!(err.contains("25P02"), "the transaction was aborted: {err}");
    assert!(
        out.contains("ROLLBACK"),
        "COMMIT of an aborted transaction rolls back: {out}"
    );
    assert_eq!(err.matches("42501").count(), 5, "{err}");
    assert!(out.contains("still here"), "{out}");
    assert_eq!(s.pg.count("orders"), 50);
}

#[test]
fn pg_copy_from_stdin_is_allowed_by_a_write_rule_and_copy_to_is_denied_under_masking() {
    if !root_or_skip(
        "pg_copy_from_stdin_is_allowed_by_a_write_rule_and_copy_to_is_denied_under_masking",
    ) {
        return;
    }
    let s = setup("app", APP_PASSWORD, &format!("{WRITE_IMPORTS}{READ_ONLY}"));
    // psql's \copy: COPY … FROM STDIN with the data from psql's own stdin.
    let data = s.env.dir.path().join("rows.csv");
    std::fs::write(
        &data,
        "1,ann@example.com,from psql\n2,ben@example.com,from psql\n3,cy@example.com,from psql\n",
    )
    .unwrap();
    let (out, err) = s.psql(&[
        &format!(
            "\\copy imports (id, email, note) FROM '{}' WITH (FORMAT csv)",
            data.display()
        ),
        "SELECT count(*) FROM imports",
    ]);
    assert!(
        out.contains("COPY 3") || out.lines().any(|l| l.trim() == "3"),
        "{out}\n{err}"
    );
    assert!(!err.contains("ERROR"), "{err}");
    assert_eq!(
        s.pg.sql(
            "app",
            "SELECT count(*) FROM imports WHERE note = 'from psql'"
        )
        .trim(),
        "3"
    );

    let Some(r) = s.psycopg("copy") else {
        return;
    };
    let text = r.to_string();
    assert_eq!(r["copy_in_rowcount"], 10, "{text}");
    assert_eq!(r["copied"], 10, "{text}");
    // COPY … TO would return rows without masking: denied on a masking resource.
    assert!(r.get("copy_out_rows").is_none(), "{text}");
    assert_eq!(r["copy_out"]["sqlstate"], "42501", "{text}");
    assert!(
        r["copy_out"]["message"]
            .as_str()
            .unwrap()
            .contains("without masking"),
        "{text}"
    );
    // COPY FROM into a table the write rule does not cover: denied.
    assert_eq!(r["copy_in_denied"]["sqlstate"], "42501", "{text}");
    assert_eq!(r["after"], 50);
    assert_eq!(s.pg.count("orders"), 50);
    assert_eq!(s.pg.count("imports"), 13);
}

#[test]
fn pg_row_limit_drops_extra_rows_warns_and_rewrites_the_tag() {
    if !root_or_skip("pg_row_limit_drops_extra_rows_warns_and_rewrites_the_tag") {
        return;
    }
    let rules = "  - name: agent-read-10
    identity: agent
    resource: appdb
    action: allow
    operations: [read, transaction, session]
    row_limit: 10
";
    let s = setup("app", APP_PASSWORD, rules);
    let (out, err) = s.psql(&[
        "SELECT id FROM orders ORDER BY id",
        "SELECT count(*) FROM orders",
    ]);
    let ids: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(ids.len(), 11, "10 rows, then the count: {out}");
    assert_eq!(ids[9], "10");
    assert_eq!(
        ids[10], "50",
        "an aggregate is one row: the limit does not apply"
    );
    assert!(
        err.contains("WARNING")
            && err.contains("row limit 10 reached; 40 more row(s) were not sent"),
        "{err}"
    );
    let stmts = s.records("statement");
    let sel = stmts
        .iter()
        .find(|r| r["statement"] == "SELECT id FROM orders ORDER BY id")
        .unwrap();
    assert_eq!(sel["rows"], 10);
    assert_eq!(sel["rows_withheld"], 40);

    if let Some(r) = s.psycopg("rowlimit") {
        let text = r.to_string();
        assert_eq!(r["extended_rows"], 10, "{text}");
        assert_eq!(r["extended_rowcount"], 10, "the tag says SELECT 10: {text}");
        assert_eq!(r["small_rows"], 3);
        let n = &r["notices"][0];
        assert_eq!(n["severity"], "WARNING", "{text}");
        assert!(
            n["message"].as_str().unwrap().contains("row limit 10"),
            "{text}"
        );
        assert_eq!(r["notices"].as_array().unwrap().len(), 1, "{text}");
    }
}
