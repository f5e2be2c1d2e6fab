//! Harness of the HTTP root tests: a Python HTTP(S) upstream on 127.0.0.2
//! (support/http_upstream.py), a test CA made with rcgen, Python with requests and httpx.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

use crate::support::Env;

pub const HOST: &str = "127.0.0.2";
/// What the daemon injects; the agent must never see it.
pub const TOKEN: &str = "tok-7d1f0c9e-daemon-only";

pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The upstream server; killed on drop.
pub struct Upstream {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Upstream {
    /// Plain HTTP, or HTTPS with `tls = Some((cert, key))`.
    pub fn start(dir: &Path, name: &str, tls: Option<(&Path, &Path)>) -> Upstream {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/http_upstream.py");
        let log = dir.join(format!("{name}.log"));
        let mut c = Command::new("python3");
        c.arg(script).arg(HOST).arg(&log).arg(TOKEN);
        if let Some((cert, key)) = tls {
            c.arg(cert).arg(key);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 for the upstream server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("upstream server said {line:?}"))
            .parse()
            .unwrap();
        Upstream { port, log, child }
    }

    /// The requests the server received (one JSON object each).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate it signed for api.test, cdn.test and 127.0.0.2.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn make(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "upstream test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(p, ca_key);
        let key = KeyPair::generate().unwrap();
        let sp = CertificateParams::new(vec![
            "api.test".to_owned(),
            "cdn.test".to_owned(),
            HOST.to_owned(),
        ])
        .unwrap();
        let cert = sp.signed_by(&key, &issuer).unwrap();
        let t = TestCa {
            ca: dir.join("upstream-ca.pem"),
            cert: dir.join("upstream.crt"),
            key: dir.join("upstream.key"),
        };
        std::fs::write(&t.ca, ca_cert.pem()).unwrap();
        std::fs::write(&t.cert, cert.pem()).unwrap();
        std::fs::write(&t.key, key.serialize_pem()).unwrap();
        t
    }
}

/// `python3` able to import requests, httpx and h2 (installed with pip when missing; the
/// CI machine gets them from `cargo xtask setup`).
pub fn python_ok() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        let has = || {
            Command::new("python3")
                .args(["-c", "import requests, httpx, h2"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if has() {
            return Ok(());
        }
        for extra in [&[][..], &["--break-system-packages"][..]] {
            let _ = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .args(["requests", "httpx", "h2"])
                .status();
            if has() {
                return Ok(());
            }
        }
        Err("python3 cannot import requests, httpx and h2 (pip install failed)".to_owned())
    });
    match r {
        Ok(()) => true,
        Err(why) if ci() => panic!("{why}, and CI=true"),
        Err(why) => {
            eprintln!("SKIP: {why}");
            false
        }
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(p: &Path) -> Value {
    let s = read(p);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}: {s:?}", p.display()))
}

/// `interceptor run --policy P -- sh -c SCRIPT` with the daemon holding API_TOKEN.
pub fn run_sh(env: &Env, policy: &Path, script: &str) -> Output {
    let out = env
        .cmd()
        .env("API_TOKEN", TOKEN)
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--audit-log")
        .arg(env.audit_path())
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    eprintln!(
        "--- interceptor run stderr ---\n{}\n--- stdout ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "  {name}:
    address: 127.0.0.2
    port: {port}
    hosts: [{name}.test]
    header_timeout_secs: 2
    masking:
      detectors:
        - kind: email
          strategy: partial
{extra}"
    )
}

pub fn policy(ports: &[u16], services: &str) -> String {
    // The rules name three services; unused ones get a port nothing listens on.
    let mut services = services.to_owned();
    for (name, port) in [("cdn", 9), ("untrusted", 10)] {
        if !services.contains(&format!("  {name}:\n")) {
            services += &service(name, port, "");
        }
    }
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "version: 1
identities:
  agent:
    cgroup: \"/interceptor/**\"
rules:
  - name: allow-upstreams
    identity: agent
    action: allow
    to:
      - cidr: 127.0.0.2/32
        ports: [{}]
http_services:
{services}http_rules:
  - name: no-deletes
    identity: agent
    action: deny
    methods: [DELETE]
    reason: agents may not delete
  - name: read-api
    identity: agent
    service: [api, untrusted]
    action: allow
    methods: [GET, HEAD]
    paths: [\"/v1/users/*\", \"/chunked\", \"/gzip\", \"/typed\", \"/blob\", \"/events\", \"/release\", \"/tecoded\", \"/v1/echo\"]
    inject:
      - header: Authorization
        prefix: \"Bearer \"
        secret_env: API_TOKEN
    mask: true
    mask_fields:
      - path: $..ssn
        strategy: redact
  - name: echo
    identity: agent
    service: api
    action: allow
    methods: [POST]
    paths: [\"/v1/echo\"]
  - name: cdn-files
    identity: agent
    service: cdn
    action: allow
",
        ports.join(", ")
    )
}

pub fn http_records(env: &Env) -> Vec<Value> {
    env.audit()
        .into_iter()
        .filter(|r| r["type"] == "http_request" || r["type"] == "http_passthrough")
        .collect()
}

pub fn assert_masked_user(v: &Value, what: &str) {
    assert_eq!(v["auth"], "ok", "{what}: token injected upstream: {v}");
    assert_eq!(v["ssn"], "[REDACTED]", "{what}: {v}");
    assert_eq!(v["email"], "a***@example.com", "{what}: {v}");
    assert_eq!(v["note"], "call b***@example.org", "{what}: {v}");
    assert_eq!(v["name"], "Alice Example", "{what}: {v}");
}

pub fn no_token_in(dir: &Path, env: &Env) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "log") || !p.is_file() {
            continue;
        }
        let data = std::fs::read(&p).unwrap();
        assert!(
            !data.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the injected secret leaked into {}",
            p.display()
        );
    }
    let audit = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(
        !audit.contains(TOKEN),
        "the injected secret is in the audit log"
    );
}

/// Python prelude: names under `.test` (api.test, cdn.test) resolve to 127.0.0.2 inside
/// the process, so clients send the real Host/SNI to the test upstream.
pub const PY_RESOLVE: &str = r#"
import socket
_real_getaddrinfo = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: _real_getaddrinfo("127.0.0.2" if host.endswith(".test") else host, *a, **k)
"#;

/// A Python function reading `/events?gate=G` (+ `query`) of the test upstream with an httpx client
/// (a dict for `check_masked_event_stream`): event 1 must arrive while the upstream still
/// holds the rest back (it sends them once /release is called, else `gate-timeout`). The
/// release goes over the same client (on HTTP/2: another stream of the same connection).
pub const PY_SSE: &str = r#"
def read_sse(c, base, gate, query=""):
    with c, c.stream("GET", f"{base}/events?gate={gate}{query}") as r:
        lines = r.iter_lines()
        first = []
        for line in lines:
            if line == "":
                break
            first.append(line)
        released = c.get(f"{base}/release?gate={gate}").json()
        return {"ct": r.headers.get("content-type"), "version": r.http_version,
                "first": first, "released": released, "rest": list(lines)}
"#;

/// The event stream read by `PY_SSE`: masked event by event, event 1 handed on
/// before the upstream sent the rest.
pub fn check_masked_event_stream(sse: &Value) {
    let all = sse.to_string();
    for raw in [
        "123-45-6789",
        "alice@example.com",
        "bob@example.org",
        "gate-timeout",
    ] {
        assert!(!all.contains(raw), "{raw} in the event stream: {sse:#}");
    }
    assert!(
        sse["ct"].as_str().unwrap().starts_with("text/event-stream"),
        "{sse}"
    );
    assert_eq!(
        sse["released"]["released"], true,
        "the stream was waiting for the release: {sse}"
    );
    let data = |l: &Value| -> Value {
        let l = l.as_str().unwrap();
        serde_json::from_str(l.strip_prefix("data: ").unwrap_or(l)).unwrap()
    };
    let first = sse["first"].as_array().unwrap();
    assert_eq!(first.len(), 2, "{sse}");
    assert_eq!(first[0], "id: 1");
    assert_masked_user(&data(&first[1]), "event 1");
    let rest: Vec<&str> = sse["rest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        rest[..5],
        [
            "event: note",
            "id: b***@example.org",
            "data: write to",
            "data: a***@example.com",
            ""
        ],
        "{sse:#}"
    );
    // Event 3's JSON came split over six data lines and two chunks: masked as one value,
    // its lines kept (a client joins them with newlines).
    let end = 5 + rest[5..].iter().position(|l| l.is_empty()).unwrap();
    assert_eq!(end - 5, 6, "event 3's data lines: {sse:#}");
    let joined: Vec<&str> = rest[5..end]
        .iter()
        .map(|l| l.strip_prefix("data: ").unwrap())
        .collect();
    assert_masked_user(&data(&Value::from(joined.join("\n"))), "event 3");
    assert_eq!(
        rest[end..],
        ["", ": done", "", "data: [DONE]", ""],
        "{sse:#}"
    );
}
