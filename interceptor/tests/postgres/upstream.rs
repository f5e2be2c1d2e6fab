//! The upstream side and bad input: md5 login and pool reuse, a wrong secret, TLS
//! verify-full, malformed and oversized client frames.

use super::*;

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
