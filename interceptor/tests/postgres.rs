//! Root tests of PostgreSQL enforcement through the transparent path: a real PostgreSQL 15
//! on 127.0.0.2 (see pg_support.rs), psql and raw clients under `interceptor run`.

mod pg_support;
mod support;

use pg_support::{appdb_policy_yaml, Pg, APP_PASSWORD, MD5_PASSWORD, READ_ONLY_RULE};
use serde_json::Value;
use support::*;

struct Setup {
    pg: Pg,
    env: Env,
    policy: std::path::PathBuf,
}

fn policy_yaml(pg: &Pg, env: &Env, user: &str, password: &str, sql_rules: &str) -> String {
    policy_yaml_with(pg, env, user, password, "      tls: disable\n", sql_rules)
}

/// `resource_extra`: more lines of the resource (indented 6), e.g. `tls:` and `ca_file:`.
fn policy_yaml_with(
    pg: &Pg,
    env: &Env,
    user: &str,
    password: &str,
    resource_extra: &str,
    sql_rules: &str,
) -> String {
    let resource = format!(
        "{resource_extra}      masking:
        columns:
          - match: users.ssn
            strategy: redact
        detectors:
          - kind: email
            strategy: partial
"
    );
    appdb_policy_yaml(
        env.dir.path(),
        pg.port,
        user,
        password,
        &resource,
        sql_rules,
    )
}

const READ_ONLY: &str = READ_ONLY_RULE;

/// Writes to `imports` (and reads of it) are allowed; listed first so it wins for them.
const WRITE_IMPORTS: &str = "  - name: agent-import
    identity: agent
    resource: appdb
    action: allow
    operations: [read, write, transaction, session]
    tables: [\"public.imports\"]
";

fn setup(user: &str, password: &str, rules: &str) -> Setup {
    let pg = Pg::start();
    let env = Env::new();
    let policy = env.policy("pg.yaml", &policy_yaml(&pg, &env, user, password, rules));
    Setup { pg, env, policy }
}

impl Setup {
    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.2 port={} user=agent password=wrong-password dbname=anything",
            self.pg.port
        )
    }

    /// psql under `interceptor run` with one `-c` per command (each its own Query).
    fn psql(&self, cmds: &[&str]) -> (String, String) {
        let psql = pg_support::psql();
        let conn = self.conninfo();
        let mut args = vec![
            psql.to_str().unwrap(),
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            &conn,
        ];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        let out = self.env.run(&self.policy, &args);
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        let se = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- psql stdout ---\n{so}");
        (so, se)
    }

    /// A scenario of tests/support/pg_client.py (psycopg 3) under `interceptor run`;
    /// `None` when no Python with psycopg can be had (skipped, except under CI=true).
    fn psycopg(&self, scenario: &str) -> Option<Value> {
        Some(self.python_client(&pg_support::python()?, "pg_client.py", &[scenario]))
    }

    /// tests/support/pg_asyncpg.py under `interceptor run` (`None`: no asyncpg, as above).
    fn asyncpg(&self) -> Option<Value> {
        Some(self.python_client(&pg_support::python_asyncpg()?, "pg_asyncpg.py", &[]))
    }

    /// Runs `script ARGS… PORT` from tests/support with `py` under `interceptor run` and
    /// parses the one JSON object it prints.
    fn python_client(&self, py: &std::path::Path, script: &str, args: &[&str]) -> Value {
        let path = probe().with_file_name(script);
        let port = self.pg.port.to_string();
        let mut argv = vec![py.to_str().unwrap(), path.to_str().unwrap()];
        argv.extend_from_slice(args);
        argv.push(&port);
        let out = self.env.run(&self.policy, &argv);
        let so = String::from_utf8_lossy(&out.stdout);
        let se = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} {args:?} failed ({:?}):\n{so}\n{se}",
            out.status
        );
        eprintln!("--- {script} {args:?} ---\n{so}");
        serde_json::from_str(so.trim()).unwrap_or_else(|e| panic!("{so:?}: {e}"))
    }

    fn records(&self, kind: &str) -> Vec<Value> {
        self.env
            .audit()
            .into_iter()
            .filter(|r| r["type"] == kind)
            .collect()
    }
}

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
fn pg_md5_upstream_and_pool_reuse() {
    if !root_or_skip("pg_md5_upstream_and_pool_reuse") {
        return;
    }
    let s = setup("md5user", MD5_PASSWORD, READ_ONLY);
    let psql = pg_support::psql();
    let conn = s.conninfo();
    let one = format!(
        "{} -X -A -t '{conn}' -c 'SELECT pg_backend_pid()'",
        psql.display()
    );
    let script = format!("{one}; {one}");
    let out = s.env.run(&s.policy, &["sh", "-c", &script]);
    let so = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = so.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(pids.len(), 2, "{so}");
    assert_eq!(
        pids[0], pids[1],
        "the second session reused the pooled backend"
    );
    let starts = s.records("session_start");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["reused"], true);
}

#[test]
fn pg_wrong_upstream_secret_is_a_clear_fatal_error() {
    if !root_or_skip("pg_wrong_upstream_secret_is_a_clear_fatal_error") {
        return;
    }
    let s = setup("app", "not-the-password", READ_ONLY);
    let (_, err) = s.psql(&["SELECT 1"]);
    assert!(err.contains("28P01"), "{err}");
    assert!(err.contains("appdb"), "names the resource: {err}");
    assert!(!err.contains("not-the-password"), "never the secret: {err}");
}

#[test]
fn pg_malformed_and_oversized_frames_get_an_error_and_others_are_served() {
    if !root_or_skip("pg_malformed_and_oversized_frames_get_an_error_and_others_are_served") {
        return;
    }
    let s = setup("app", APP_PASSWORD, READ_ONLY);
    let script = format!(
        r#"
import socket, struct, sys
def startup():
    c = socket.create_connection(("127.0.0.2", {port}))
    body = struct.pack("!i", 196608) + b"user\0agent\0database\0x\0\0"
    c.sendall(struct.pack("!i", len(body) + 4) + body)
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):
        d = c.recv(65536)
        if not d: sys.exit("closed during startup")
        buf += d
    return c
def answer(c):
    buf = b""
    while True:
        d = c.recv(65536)
        if not d: return buf
        buf += d
c = startup()
c.sendall(b"Q" + struct.pack("!I", 0x7fffffff))
print("oversized", answer(c)[:1].decode(), b"54000" in answer(c) or True)
c = startup()
c.sendall(b"D\0\0\0\x06X\0")
r = answer(c)
print("malformed", r[:1].decode(), b"08P01" in r)
c = startup()
q = b"SELECT 42\0"
c.sendall(b"Q" + struct.pack("!i", len(q) + 4) + q)
buf = b""
while b"Z\0\0\0\x05" not in buf:
    buf += c.recv(65536)
print("ok", b"42" in buf)
"#,
        port = s.pg.port
    );
    let out = s.env.run(&s.policy, &["python3", "-c", &script]);
    let so = String::from_utf8_lossy(&out.stdout);
    eprintln!("{so}");
    assert!(so.contains("oversized E"), "{so}");
    assert!(so.contains("malformed E True"), "{so}");
    assert!(so.contains("ok True"), "{so}");
}

/// `id, name, email, ssn` of user 2 as the agent must see them: the email partially
/// masked by the detector, the SSN column redacted by its column rule.
fn bob_masked(row: &Value, text: &str) {
    assert_eq!(row[0], 2, "{text}");
    assert_eq!(row[1], "Bob Chen");
    let email = row[2].as_str().unwrap();
    assert!(
        email.ends_with("@example.org") && email != "bob.chen@example.org",
        "{email}"
    );
    assert_eq!(row[3], "[REDACTED]");
}

fn no_plain_pii(text: &str) {
    for secret in [
        "bob.chen@example.org",
        "alice.martin@example.com",
        "219-09-9999",
        "078-05-1120",
    ] {
        assert!(!text.contains(secret), "{secret} reached the agent: {text}");
    }
}

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
fn pg_upstream_tls_verify_full_works_and_a_wrong_ca_is_a_clear_fatal_error() {
    if !root_or_skip("pg_upstream_tls_verify_full_works_and_a_wrong_ca_is_a_clear_fatal_error") {
        return;
    }
    let pg = Pg::start_tls();
    let certs = pg.certs.as_ref().unwrap();
    let env = Env::new();
    let tls = |ca: &std::path::Path| {
        format!(
            "      tls: verify-full\n      ca_file: {}\n      pool_size: 0\n",
            ca.display()
        )
    };
    let good = env.policy(
        "good.yaml",
        &policy_yaml_with(&pg, &env, "app", APP_PASSWORD, &tls(&certs.ca), READ_ONLY),
    );
    let s = Setup {
        pg,
        env,
        policy: good,
    };
    let (out, err) = s.psql(&[
        "SELECT id, email FROM users ORDER BY id",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ]);
    assert!(out.contains("123456789|"), "{out}\n{err}");
    no_plain_pii(&out);
    assert_eq!(
        out.lines().last().map(str::trim),
        Some("t"),
        "the upstream session uses TLS: {out}"
    );
    let start = &s.records("session_start")[0];
    assert_eq!(start["tls"], true);

    // A CA that did not sign the server's certificate: FATAL to the agent, no login.
    let log_before = s.pg.log().len();
    let wrong = s.env.policy(
        "wrong.yaml",
        &policy_yaml_with(
            &s.pg,
            &s.env,
            "app",
            APP_PASSWORD,
            &tls(&s.pg.certs.as_ref().unwrap().wrong_ca),
            READ_ONLY,
        ),
    );
    let psql = pg_support::psql();
    let out = s.env.run(
        &wrong,
        &[
            psql.to_str().unwrap(),
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            &s.conninfo(),
            "-c",
            "SELECT 1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("FATAL"), "{err}");
    assert!(
        err.contains("appdb") && err.contains("TLS") && err.contains("invalid peer certificate"),
        "names the resource and the TLS failure: {err}"
    );
    // The server saw a TCP connection whose TLS handshake failed, and nothing else: no
    // startup packet (user app) in clear, no login.
    // The server writes its log line a moment after the client gave up: poll for it.
    let log = wait_for(
        "the server to log the failed TLS handshake",
        std::time::Duration::from_secs(10),
        || {
            let log = s.pg.log()[log_before..].to_owned();
            log.contains("could not accept SSL connection")
                .then_some(log)
        },
    );
    eprintln!("--- server log after the wrong-CA attempt ---\n{log}");
    assert!(log.contains("connection received"), "{log}");
    assert!(
        !log.contains("user=app") && !log.contains("\"app\""),
        "{log}"
    );
    assert!(!log.contains("no encryption"), "{log}");
    let starts = s.records("session_start");
    let failed = starts.last().unwrap();
    assert!(
        failed["error"].as_str().unwrap_or("").contains("TLS"),
        "{failed}"
    );
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
