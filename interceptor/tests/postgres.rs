//! Root tests of PostgreSQL enforcement through the transparent path: a real PostgreSQL 15
//! on 127.0.0.2 (see pg_support.rs), psql and raw clients under `interceptor run`.

mod pg_support;
mod support;

use pg_support::{Pg, APP_PASSWORD, MD5_PASSWORD};
use serde_json::Value;
use support::*;

struct Setup {
    pg: Pg,
    env: Env,
    policy: std::path::PathBuf,
}

fn policy_yaml(pg: &Pg, env: &Env, user: &str, password: &str, sql_rules: &str) -> String {
    let pw = env.dir.path().join("appdb.pass");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    format!(
        "version: 1
identities:
  agent: {{}}
rules:
  - name: allow-db
    action: allow
    to:
      - cidr: 127.0.0.2/32
        ports: {port}
resources:
  appdb:
    postgres:
      address: 127.0.0.2
      port: {port}
      database: app
      user: {user}
      password_file: {pw}
      tls: disable
      masking:
        columns:
          - match: users.ssn
            strategy: redact
        detectors:
          - kind: email
            strategy: partial
sql_rules:
{sql_rules}",
        port = pg.port,
        pw = pw.display()
    )
}

const READ_ONLY: &str = "  - name: agent-read
    identity: agent
    resource: appdb
    action: allow
    operations: [read, transaction, session]
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
