//! Root tests of just-in-time approvals and token-bound identities: a real PostgreSQL 15 on
//! 127.0.0.2, psql inside an attached test cgroup, approvers using the CLI and the HTTP
//! API with Ed25519-signed JWTs (keys made with the openssl CLI), a local webhook receiver.

mod http_support;
mod pg_support;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use pg_support::{Pg, APP_PASSWORD};
use serde_json::{json, Value};
use support::*;

const ISS: &str = "https://idp.test";
const AUD: &str = "interceptor";

/// An Ed25519 issuer: private key PEM and its JWKS file.
struct Idp {
    key: jsonwebtoken::EncodingKey,
    jwks: PathBuf,
}

impl Idp {
    fn new(dir: &Path, name: &str) -> Idp {
        let pem = dir.join(format!("{name}.pem"));
        let ok = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()
            .unwrap();
        assert!(ok.success(), "openssl genpkey");
        let der = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&pem)
            .output()
            .unwrap()
            .stdout;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        let jwks = dir.join(format!("{name}.jwks.json"));
        std::fs::write(
            &jwks,
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": name, "alg": "EdDSA", "use": "sig"}]})
                .to_string(),
        )
        .unwrap();
        let key = jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&pem).unwrap()).unwrap();
        Idp { key, jwks }
    }

    fn token(&self, kid: &str, iss: &str, sub: &str, groups: &[&str], exp_in: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.into());
        let claims = json!({"iss": iss, "aud": AUD, "sub": sub, "groups": groups,
                            "iat": now, "exp": now + exp_in});
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

struct Setup {
    pg: Pg,
    env: Env,
    idp: Idp,
    cg: TestCgroup,
}

fn setup(name: &str) -> Setup {
    let pg = Pg::start();
    let env = Env::new();
    let idp = Idp::new(env.dir.path(), "idp");
    let cg = TestCgroup::new(name);
    Setup { pg, env, idp, cg }
}

impl Setup {
    /// A policy: reads allowed for any process (or, with `subject`, only for agents whose
    /// token has this subject), writes to `orders` held for the `dba` group.
    fn policy(&self, timeout: u64, subject: Option<&str>, extra: &str) -> PathBuf {
        let pw = self.env.dir.path().join("app.pass");
        std::fs::write(&pw, APP_PASSWORD).unwrap();
        let identity = match subject {
            Some(s) => format!("{{subject: \"{s}\"}}"),
            None => "{}".into(),
        };
        let yaml = format!(
            "version: 1
identities:
  agent: {identity}
rules:
  - {{name: allow-db, action: allow, to: [{{cidr: 127.0.0.2/32, ports: {port}}}]}}
resources:
  appdb:
    postgres: {{address: 127.0.0.2, port: {port}, database: app, user: app, password_file: {pw}, tls: disable}}
sql_rules:
  - name: hold-order-writes
    identity: agent
    resource: appdb
    action: hold
    operations: [write]
    tables: [orders]
    timeout_secs: {timeout}
  - name: agent-read
    identity: agent
    resource: appdb
    action: allow
    operations: [read, transaction, session]
auth:
  issuers:
    - {{name: idp, issuer: \"{ISS}\", audience: {AUD}, jwks_file: {jwks}}}
approvals:
  approvers:
    - {{name: dbas, issuer: idp, groups: [dba], rules: [\"hold-*\"]}}
{extra}",
            port = self.pg.port,
            pw = pw.display(),
            jwks = self.idp.jwks.display(),
        );
        self.env.policy("approvals.yaml", &yaml)
    }

    /// psql in the test cgroup running `sql`, in the background.
    fn psql(&self, sql: &str) -> Child {
        self.cg
            .command(pg_support::psql().to_str().unwrap())
            .args(["-X", "-A", "-t", "-v", "VERBOSITY=verbose"])
            .arg(format!(
                "host=127.0.0.2 port={} user=agent password=x dbname=app",
                self.pg.port
            ))
            .args(["-c", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn approvals(&self, token: &str, args: &[&str]) -> Output {
        let out = self
            .env
            .cmd()
            .arg("approvals")
            .args(args)
            .env("INTERCEPTOR_APPROVER_TOKEN", token)
            .output()
            .unwrap();
        eprintln!(
            "approvals {args:?}: {:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Waits for a pending request and returns its id.
    fn pending(&self, token: &str) -> Value {
        wait_for(
            "a pending approval request",
            Duration::from_secs(20),
            || {
                let out = self.approvals(token, &["list", "--json"]);
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                v.as_array()?
                    .iter()
                    .find(|r| r["state"] == "pending")
                    .cloned()
            },
        )
    }
}

fn finish(child: Child) -> (String, String) {
    let out = child.wait_with_output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- psql ---\n{so}\n{se}");
    (so, se)
}

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
    let _ = try_wait_for(Duration::from_secs(10), || {
        let ev = approval_events();
        wanted
            .iter()
            .all(|e| ev.iter().any(|(i, x)| *i == e.0 && x == e.1))
            .then_some(())
    });
    let events = approval_events();
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

/// (headers, body) of each delivery.
type Deliveries = Arc<Mutex<Vec<(String, String)>>>;

/// A one-request-at-a-time HTTPS receiver on 127.0.0.1 recording what it got; its
/// certificate comes from a CA made in `dir` (returned: the CA's PEM file, for `ca_file`).
fn webhook_receiver(dir: &Path) -> (u16, Deliveries, PathBuf) {
    use interceptor::protocols::http::tls;
    let ca = tls::Ca::load_or_init(dir).unwrap();
    let config = ca.server_config("127.0.0.1").unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            g.lock()
                .unwrap()
                .push((head, String::from_utf8_lossy(&body).into_owned()));
            let s = r.get_mut();
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            let _ = s.flush();
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
    (port, got, tls::ca_paths(dir).0)
}

#[test]
fn http_api_approves_and_webhook_is_signed() {
    if !root_or_skip("http_api_approves_and_webhook_is_signed") {
        return;
    }
    let s = setup("apr-api");
    // The receiver speaks https with a certificate of a private CA, trusted by `ca_file`.
    let (hook_port, hooks, hook_ca) = webhook_receiver(&s.env.dir.path().join("hook-ca"));
    let secret = s.env.dir.path().join("hook.key");
    std::fs::write(&secret, "webhook-signing-key\n").unwrap();
    let extra = format!(
        "  webhook: {{url: \"https://127.0.0.1:{hook_port}/hooks/approvals\", secret_file: {}, ca_file: {}}}\n",
        secret.display(),
        hook_ca.display()
    );
    let policy = s.policy(60, None, &extra);
    let api = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _d = Attached::start_with(
        &s.env,
        &s.cg,
        &policy,
        &["--approvals-listen", &api.to_string()],
    );
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);
    let before = s.pg.count("orders");
    let psql = s.psql("DELETE FROM orders WHERE id = 7");
    let id = s.pending(&bob)["id"].as_str().unwrap().to_owned();

    let curl = |args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (body.to_owned(), code.to_owned())
    };
    let base = format!("http://{api}/v1/approvals");
    let (_, code) = curl(&[&base]);
    assert_eq!(code, "401", "no token, no answer");
    let auth = format!("Authorization: Bearer {bob}");
    let (body, code) = curl(&["-H", &auth, &format!("{base}/{id}")]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("DELETE FROM orders WHERE id = 7"), "{body}");
    let (body, code) = curl(&[
        "-H",
        &auth,
        "-X",
        "POST",
        "-d",
        r#"{"reason": "approved over HTTP"}"#,
        &format!("{base}/{id}/approve"),
    ]);
    assert_eq!(code, "200", "{body}");
    let (so, _) = finish(psql);
    assert!(so.contains("DELETE 1"), "{so}");
    assert_eq!(s.pg.count("orders"), before - 1);

    // Webhook: created and approved, each signed with HMAC-SHA256 of its body.
    let got = wait_for("two webhook deliveries", Duration::from_secs(10), || {
        let g = hooks.lock().unwrap();
        (g.len() >= 2).then(|| g.clone())
    });
    for (head, body) in &got {
        let sig = head
            .lines()
            .find_map(|l| {
                let name = "x-interceptor-signature: sha256=";
                l.to_ascii_lowercase()
                    .starts_with(name)
                    .then(|| &l[name.len()..])
            })
            .expect("signature header")
            .trim();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"webhook-signing-key").unwrap();
        mac.update(body.as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, want, "signature of {body}");
        assert!(head.starts_with("POST /hooks/approvals"), "{head}");
    }
    let events: Vec<String> = got
        .iter()
        .map(|(_, b)| {
            serde_json::from_str::<Value>(b).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(&events[..2], ["created", "approved"]);
}

#[test]
fn agent_token_expiry_denies_and_a_fresh_token_restores_access() {
    if !root_or_skip("agent_token_expiry_denies_and_a_fresh_token_restores_access") {
        return;
    }
    let s = setup("apr-token");
    let policy = s.policy(60, Some("agent-7"), "");
    // Bad tokens are refused when the daemon starts.
    for (what, token, expect) in [
        (
            "expired",
            s.idp.token("idp", ISS, "agent-7", &[], -600),
            "expired",
        ),
        (
            "wrong issuer",
            s.idp.token("idp", "https://evil.test", "agent-7", &[], 600),
            "not configured",
        ),
    ] {
        let f = s.env.dir.path().join("bad.jwt");
        std::fs::write(&f, token).unwrap();
        let out = s
            .env
            .cmd()
            .args(["run", "--policy"])
            .arg(&policy)
            .arg("--token")
            .arg(&f)
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}");
        assert!(err.contains(expect), "{what}: {err}");
    }

    // Valid long enough for the daemon to start and one query to pass on a loaded
    // machine (a 3 s token made this test flaky), then waited out.
    let token_file = s.env.dir.path().join("agent.jwt");
    let lifetime = Duration::from_secs(10);
    let expires = std::time::Instant::now() + lifetime;
    std::fs::write(
        &token_file,
        s.idp.token(
            "idp",
            ISS,
            "agent-7",
            &["agents"],
            lifetime.as_secs() as i64,
        ),
    )
    .unwrap();
    let _d = Attached::start_with(
        &s.env,
        &s.cg,
        &policy,
        &["--token", token_file.to_str().unwrap()],
    );
    let (so, se) = finish(s.psql("SELECT count(*) FROM users"));
    assert_eq!(so.trim(), "3", "{se}");
    // JWT times are whole seconds: past `expires` plus a margin, the token is expired.
    std::thread::sleep(
        expires.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(1500),
    );
    // Expired: new connections are refused (reset before any byte).
    let (so, se) = finish(s.psql("SELECT count(*) FROM users"));
    assert!(so.trim().is_empty(), "{so}");
    assert!(!se.is_empty());
    // The record is written by the audit thread, possibly a moment after the reset.
    let denied = try_wait_for(Duration::from_secs(10), || {
        s.env
            .audit()
            .into_iter()
            .any(|r| {
                r["type"] == "connection"
                    && r["reason"].as_str().unwrap_or("").contains("token expired")
            })
            .then_some(())
    });
    assert!(denied.is_some(), "the refusal names the expired token");
    // A fresh token through the control socket.
    let fresh = s.env.dir.path().join("fresh.jwt");
    std::fs::write(&fresh, s.idp.token("idp", ISS, "agent-7", &["agents"], 600)).unwrap();
    let out = s
        .env
        .cmd()
        .args(["token", "set"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (so, se) = finish(s.psql("SELECT count(*) FROM users"));
    assert_eq!(so.trim(), "3", "{se}");
}

#[test]
fn held_http_request_is_approved_through_the_api_and_another_denied() {
    if !root_or_skip("held_http_request_is_approved_through_the_api_and_another_denied") {
        return;
    }
    let env = Env::new();
    let idp = Idp::new(env.dir.path(), "idp");
    let cg = TestCgroup::new("apr-http");
    let up = http_support::Upstream::start(env.dir.path(), "api", None);
    let yaml = format!(
        "version: 1
identities:
  agent: {{}}
rules:
  - {{name: allow-api, action: allow, to: [{{cidr: 127.0.0.2/32, ports: {port}}}]}}
http_services:
  api:
    address: 127.0.0.2
    port: {port}
    hosts: [api.test]
http_rules:
  - {{name: hold-echo, identity: agent, service: api, action: hold, methods: [POST], paths: [\"/v1/echo\"], timeout_secs: 60}}
  - {{name: reads, identity: agent, service: api, action: allow, methods: [GET]}}
auth:
  issuers:
    - {{name: idp, issuer: \"{ISS}\", audience: {AUD}, jwks_file: {jwks}}}
approvals:
  approvers:
    - {{name: ops, issuer: idp, groups: [ops]}}
",
        port = up.port,
        jwks = idp.jwks.display()
    );
    let policy = env.policy("http-hold.yaml", &yaml);
    let api = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _d = Attached::start_with(
        &env,
        &cg,
        &policy,
        &["--approvals-listen", &api.to_string()],
    );
    let curl_agent = |body: &str| {
        cg.command("curl")
            .args(["-s", "-w", "\n%{http_code}", "--resolve"])
            .arg(format!("api.test:{}:127.0.0.2", up.port))
            .args(["-X", "POST", "-d", body])
            .arg(format!("http://api.test:{}/v1/echo", up.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let carol = idp.token("idp", ISS, "carol", &["ops"], 600);
    let auth = format!("Authorization: Bearer {carol}");
    let base = format!("http://{api}/v1/approvals");
    let api_call = |args: &[&str]| -> Value {
        let out = Command::new("curl")
            .args(["-s", "-H", &auth])
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let pending = || {
        wait_for("a pending HTTP approval", Duration::from_secs(20), || {
            api_call(&[&base])
                .as_array()?
                .iter()
                .find(|r| r["state"] == "pending")
                .cloned()
        })
    };

    let agent = curl_agent("first");
    let req = pending();
    assert_eq!(req["protocol"], "http");
    assert_eq!(req["rule"], "hold-echo");
    assert!(
        req["command"]
            .as_str()
            .unwrap()
            .starts_with("POST api.test/v1/echo"),
        "{req}"
    );
    assert!(
        up.requests().is_empty(),
        "nothing reached the upstream while held"
    );
    let id = req["id"].as_str().unwrap();
    let d = api_call(&["-X", "POST", &format!("{base}/{id}/approve")]);
    assert_eq!(d["request"]["state"], "approved", "{d}");
    let (so, _) = finish(agent);
    assert!(so.trim_end().ends_with("200"), "{so}");
    assert_eq!(up.requests().len(), 1);

    let agent = curl_agent("second");
    let id = pending()["id"].as_str().unwrap().to_owned();
    api_call(&[
        "-X",
        "POST",
        "-d",
        r#"{"reason": "no more echoes"}"#,
        &format!("{base}/{id}/deny"),
    ]);
    let (so, _) = finish(agent);
    assert!(so.trim_end().ends_with("403"), "{so}");
    assert!(
        so.contains("denied by carol") && so.contains("no more echoes"),
        "{so}"
    );
    assert_eq!(up.requests().len(), 1, "the denied request never left");
}
