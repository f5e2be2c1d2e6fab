//! Root tests of just-in-time approvals and token-bound identities: a real PostgreSQL 15 on
//! 127.0.0.2, psql inside an attached test cgroup, approvers using the CLI and the HTTP
//! API with Ed25519-signed JWTs (keys made with the openssl CLI), a local webhook receiver.

#[path = "../http_support/mod.rs"]
mod http_support;
#[path = "../pg_support/mod.rs"]
mod pg_support;
#[path = "../support/mod.rs"]
mod support;

mod held;
mod http_body;
mod http_grant;
mod http_hold;
mod http_setup;
mod peers;
mod tokens;
mod webhook;

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
