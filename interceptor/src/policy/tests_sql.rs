//! Tests of `resources`, `sql_rules` and `evaluate_sql`.

use std::collections::BTreeSet;

use super::*;

const BASE: &str = "version: 1
identities:
  agent: {}
resources:
  appdb:
    postgres:
      address: 127.0.0.2
      database: app
      user: app
      password_env: APPDB_PASSWORD
      row_limit: 500
";

fn policy(rules: &str) -> Policy {
    Policy::from_str(&format!("{BASE}sql_rules:\n{rules}"), "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn subject<'a>() -> Subject<'a> {
    Subject {
        cgroup: Some("/interceptor/run-1"),
        uid: 1000,
        gid: 1000,
        exe: Some("/usr/bin/psql"),
        comm: "psql",
        token: None,
    }
}

fn st<'a>(kind: &'a str, ops: &[SqlOperation], tables: &[&'a str]) -> SqlStatement<'a> {
    SqlStatement {
        kind,
        operations: ops.iter().copied().collect::<BTreeSet<_>>(),
        tables: tables.to_vec(),
        functions: vec![],
    }
}

fn decide(p: &Policy, stmts: &[SqlStatement]) -> SqlDecision {
    evaluate_sql(
        p,
        &SqlRequest {
            subject: subject(),
            resource: "appdb",
            statements: stmts,
        },
    )
}

const READ: &str = "  - name: agent-read
    identity: agent
    resource: appdb
    action: allow
    operations: [read, transaction]
    tables: [\"public.*\"]
";

#[test]
fn resources_are_found_by_destination() {
    let p = policy(READ);
    let (name, r) = p
        .postgres_resource("127.0.0.2:5432".parse().unwrap())
        .unwrap();
    assert_eq!(name, "appdb");
    assert_eq!(r.tls, TlsMode::VerifyFull, "verify by default");
    assert!(p
        .postgres_resource("127.0.0.2:5433".parse().unwrap())
        .is_none());
    assert!(p
        .postgres_resource("[::ffff:127.0.0.2]:5432".parse().unwrap())
        .is_some());
}

#[test]
fn allow_needs_every_operation_and_table_inside_the_rule() {
    let p = policy(READ);
    let d = decide(&p, &[st("SELECT", &[SqlOperation::Read], &["users"])]);
    assert_eq!(
        (d.verdict, d.rule.as_deref(), d.row_limit),
        (Verdict::Allow, Some("agent-read"), Some(500))
    );
    let d = decide(&p, &[st("DELETE", &[SqlOperation::Write], &["orders"])]);
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(
        d.reason.contains("agent-read") && d.reason.contains("write"),
        "{}",
        d.reason
    );
    let d = decide(&p, &[st("SELECT", &[SqlOperation::Read], &["secret.keys"])]);
    assert_eq!(d.verdict, Verdict::Deny);
    // One denied statement denies the whole request.
    let d = decide(
        &p,
        &[
            st("SELECT", &[SqlOperation::Read], &["users"]),
            st("DELETE", &[SqlOperation::Write], &["orders"]),
        ],
    );
    assert_eq!((d.verdict, d.statement), (Verdict::Deny, Some(1)));
}

#[test]
fn unqualified_pg_names_may_be_system_catalogs() {
    // pg_catalog is searched before public: `SELECT * FROM pg_stat_activity` reads the
    // catalog view (every session's query text), not public.pg_stat_activity.
    let p = policy(READ);
    let d = decide(
        &p,
        &[st("SELECT", &[SqlOperation::Read], &["pg_stat_activity"])],
    );
    assert_eq!(d.verdict, Verdict::Deny, "public.* does not cover it");
    assert!(
        d.reason
            .contains("pg_stat_activity (as pg_catalog.pg_stat_activity)"),
        "{}",
        d.reason
    );
    let both = policy(
        "  - name: agent-read
    identity: agent
    resource: appdb
    action: allow
    operations: [read]
    tables: [\"public.*\", \"pg_catalog.*\"]
",
    );
    let d = decide(
        &both,
        &[st("SELECT", &[SqlOperation::Read], &["pg_stat_activity"])],
    );
    assert_eq!(d.verdict, Verdict::Allow);
    // A deny rule on the catalog catches the unqualified name too.
    let deny = policy(&format!(
        "  - name: no-catalog
    identity: agent
    resource: appdb
    action: deny
    tables: [\"pg_catalog.*\"]
{}",
        READ.replace("public.*", "*")
    ));
    let d = decide(&deny, &[st("SELECT", &[SqlOperation::Read], &["pg_roles"])]);
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("no-catalog"))
    );
    let d = decide(&deny, &[st("SELECT", &[SqlOperation::Read], &["users"])]);
    assert_eq!(d.verdict, Verdict::Allow);
}

#[test]
fn deny_rules_match_on_any_overlap_and_come_first() {
    let p = policy(&format!(
        "  - name: no-keys
    action: deny
    tables: [api_keys]
{READ}"
    ));
    let d = decide(
        &p,
        &[st(
            "SELECT",
            &[SqlOperation::Read],
            &["users", "public.api_keys"],
        )],
    );
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("no-keys"))
    );
    let p = policy("  - name: rl\n    action: allow\n    row_limit: 7\n");
    assert_eq!(
        decide(&p, &[st("SELECT", &[SqlOperation::Read], &["t"])]).row_limit,
        Some(7)
    );
    assert_eq!(
        decide(&p, &[st("INSERT", &[SqlOperation::Write], &["t"])]).row_limit,
        None
    );
}

#[test]
fn sql_rule_errors() {
    let err = |rules: &str| {
        Policy::from_str(&format!("{BASE}sql_rules:\n{rules}"), "t.yaml")
            .unwrap_err()
            .to_string()
    };
    let e = err("  - name: h\n    action: hold\n");
    assert!(
        e.contains("for approval") && e.contains("no `approvals` section"),
        "{e}"
    );
    let e = err("  - name: h\n    action: allow\n    timeout_secs: 5\n");
    assert!(e.contains("only applies to `hold` rules"), "{e}");
    let e = err("  - name: r\n    action: allow\n    resource: nodb\n");
    assert!(
        e.contains("unknown resource \"nodb\"") && e.starts_with("t.yaml:15"),
        "{e}"
    );
    let e = err("  - name: r\n    action: allow\n    operations: [reads]\n");
    assert!(e.contains("unknown variant"), "{e}");
    let e = err("  - name: r\n    action: allow\n    identity: nobody\n");
    assert!(e.contains("unknown identity \"nobody\""), "{e}");
    let e = Policy::from_str(
        &BASE.replace("password_env", "password_file: /x\n      password_env"),
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at most one of"), "{e}");
    let e = Policy::from_str(&BASE.replace("database: app", "databse: app"), "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `databse`"), "{e}");
}

#[test]
fn hold_rules_hold_and_token_expiry_denies() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#,
    )
    .unwrap();
    let text = format!(
        "{BASE}sql_rules:\n  - {{name: hold-writes, action: hold, operations: [write], timeout_secs: 7}}\n  - {{name: reads, action: allow, operations: [read]}}\n\
         auth:\n  issuers:\n    - {{name: idp, issuer: 'https://idp', audience: a, jwks_file: '{}'}}\n\
         approvals:\n  timeout_secs: 30\n  approvers:\n    - {{name: dbas, issuer: idp, groups: [dba]}}\n",
        jwks.display()
    );
    let p = Policy::from_str(&text, "t.yaml").unwrap();
    assert_eq!(p.hold_timeout("hold-writes").as_secs(), 7);
    assert_eq!(p.hold_timeout("other").as_secs(), 30);
    let write = st("DELETE", &[SqlOperation::Write], &["orders"]);
    let read = st("SELECT", &[SqlOperation::Read], &["orders"]);
    let d = decide(&p, &[read.clone(), write.clone()]);
    assert_eq!(d.verdict, Verdict::Hold);
    assert_eq!(d.rule.as_deref(), Some("hold-writes"));
    assert_eq!(d.statement, Some(1));
    assert_eq!(
        decide(&p, std::slice::from_ref(&read)).verdict,
        Verdict::Allow
    );
    // An expired agent token denies everything, reads included.
    let tok = AgentToken {
        subject: "agent-7".into(),
        groups: vec![],
        expired: true,
    };
    let s = Subject {
        token: Some(&tok),
        ..subject()
    };
    let d = evaluate_sql(
        &p,
        &SqlRequest {
            subject: s,
            resource: "appdb",
            statements: &[read],
        },
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(d.reason.contains("token expired"), "{}", d.reason);
    // Unknown approver issuer, hold without a covering approver.
    let bad = text.replace("issuer: idp, groups", "issuer: nope, groups");
    let e = Policy::from_str(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("unknown issuer \"nope\""), "{e}");
    let bad = text.replace("groups: [dba]}", "groups: [dba], rules: [other-*]}");
    let e = Policy::from_str(&bad, "t.yaml").unwrap_err().to_string();
    assert!(
        e.contains("no approver") && e.contains("hold-writes"),
        "{e}"
    );
}

fn call<'a>(functions: &[&'a str]) -> SqlStatement<'a> {
    SqlStatement {
        functions: functions.to_vec(),
        ..st("SELECT", &[SqlOperation::Read], &[])
    }
}

/// What the proxy decides for `sql`: the classifier's statements, evaluated.
fn decide_sql(p: &Policy, sql: &str) -> SqlDecision {
    let cls = crate::sql::classify(sql).unwrap();
    let kinds: Vec<String> = cls.statements.iter().map(|s| s.kind.clone()).collect();
    let stmts: Vec<SqlStatement> = cls
        .statements
        .iter()
        .zip(&kinds)
        .map(|(s, k)| SqlStatement {
            kind: k,
            operations: s
                .operations
                .iter()
                .map(|o| serde_json::from_value(serde_json::json!(o.as_str())).unwrap())
                .collect(),
            tables: s
                .tables_read
                .iter()
                .chain(&s.tables_written)
                .map(String::as_str)
                .collect(),
            functions: s.functions.iter().map(String::as_str).collect(),
        })
        .collect();
    decide(p, &stmts)
}

#[test]
fn function_rules_match_qualified_and_unqualified_calls() {
    let deny = |f: &str| {
        policy(&format!(
            "  - name: no-fn
    action: deny
    functions: [\"{f}\"]
  - name: rest
    action: allow
"
        ))
    };
    // A bare name denies the call however it is qualified.
    let p = deny("pg_sleep");
    for f in ["pg_sleep", "pg_catalog.pg_sleep", "public.pg_sleep"] {
        let d = decide(&p, &[call(&["lower", f])]);
        assert_eq!(d.rule.as_deref(), Some("no-fn"), "{f}");
    }
    assert_eq!(
        decide(&p, &[call(&["pg_sleep_for"])]).verdict,
        Verdict::Allow
    );
    // A qualified name also denies the unqualified call, which resolves through pg_catalog.
    let p = deny("pg_catalog.pg_sleep");
    for f in ["pg_sleep", "pg_catalog.pg_sleep"] {
        assert_eq!(decide(&p, &[call(&[f])]).verdict, Verdict::Deny, "{f}");
    }
    assert_eq!(
        decide(&p, &[call(&["app.pg_sleep"])]).verdict,
        Verdict::Allow
    );
    let p = deny("public.*");
    assert_eq!(decide(&p, &[call(&["my_fn"])]).verdict, Verdict::Deny);
    assert_eq!(decide(&p, &[call(&["app.my_fn"])]).verdict, Verdict::Allow);

    let allow = |fs: &str| {
        policy(&format!(
            "  - name: fns
    action: allow
    functions: {fs}
"
        ))
    };
    // A bare name allows the function in any schema, as for tables.
    let p = allow("[lower, count]");
    for f in ["lower", "pg_catalog.lower", "count"] {
        assert_eq!(decide(&p, &[call(&[f])]).verdict, Verdict::Allow, "{f}");
    }
    assert_eq!(
        decide(&p, &[call(&["lower", "upper"])]).verdict,
        Verdict::Deny
    );
    // A qualified allow needs every schema an unqualified call can resolve to.
    let p = allow("[\"pg_catalog.*\"]");
    assert_eq!(
        decide(&p, &[call(&["pg_catalog.lower"])]).verdict,
        Verdict::Allow
    );
    let d = decide(&p, &[call(&["lower"])]);
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(d.reason.contains("public.lower"), "{}", d.reason);
    let p = allow("[\"pg_catalog.*\", \"public.*\"]");
    assert_eq!(decide(&p, &[call(&["lower"])]).verdict, Verdict::Allow);
    assert_eq!(decide(&p, &[call(&["app.f"])]).verdict, Verdict::Deny);
}

#[test]
fn qualified_names_from_the_classifier_do_not_escape_rules() {
    let p = policy(
        "  - name: no-keys
    action: deny
    tables: [\"public.api_keys\"]
  - name: no-sleep
    action: deny
    functions: [pg_sleep]
  - name: rest
    action: allow
    operations: [read, write]
",
    );
    for sql in [
        "select * from crm.public.api_keys",
        "insert into crm.public.api_keys values (1)",
        "update crm.public.api_keys set k = 1",
        "delete from crm.public.api_keys",
        "copy crm.public.api_keys to stdout",
        "copy crm.public.api_keys from stdin",
    ] {
        assert_eq!(
            decide_sql(&p, sql).rule.as_deref(),
            Some("no-keys"),
            "{sql}"
        );
    }
    for sql in [
        "select pg_sleep(0.1)",
        "select pg_catalog.pg_sleep(0.1)",
        r#"select "pg_catalog"."pg_sleep"(0.1)"#,
        "select crm.pg_catalog.pg_sleep(0.1)",
    ] {
        assert_eq!(
            decide_sql(&p, sql).rule.as_deref(),
            Some("no-sleep"),
            "{sql}"
        );
    }
    assert_eq!(
        decide_sql(&p, "select * from users").verdict,
        Verdict::Allow
    );
}

#[test]
fn a_denial_names_at_most_ten_tables() {
    let names: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    let st = SqlStatement {
        kind: "DELETE",
        operations: [SqlOperation::Write].into(),
        tables: names.iter().map(String::as_str).collect(),
        functions: vec![],
    };
    assert_eq!(
        super::sql_eval::describe(&st),
        "DELETE on t00, t01, t02, t03, t04, t05, t06, t07, t08, t09 and 15 more"
    );
}
