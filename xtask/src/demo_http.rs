//! `cargo xtask demo`, part 3: HTTPS. A local HTTPS API on 127.0.0.2 (the Python upstream of
//! the HTTP tests, with a certificate of a throwaway CA); curl as the "agent" under
//! `interceptor run` with policies/examples/demo-http.yaml: an allowed GET that gets the
//! daemon's token injected and its JSON masked, a denied DELETE with its JSON 403, a stream
//! of server-sent events masked event by event, and the per-request audit records.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::util::workspace_root;

/// What the daemon injects; shown nowhere but in the API's check.
const TOKEN: &str = "crm-demo-token-held-by-the-daemon";

struct Api(std::process::Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(interceptor: &Path, dir: &Path) -> Result<()> {
    let root = workspace_root();
    let dir = dir.join("http");
    fs::create_dir_all(&dir)?;
    println!("\n==> demo, part 3: HTTPS API");
    let (ca, cert, key) = crate::bench_http::certs(&dir, "api.crm.test")?;
    let log = dir.join("api-requests.log");
    let _ = fs::remove_file(&log);
    let mut child = Command::new("python3")
        .arg(root.join("interceptor/tests/support/http_upstream.py"))
        .args(["127.0.0.2"])
        .arg(&log)
        .arg(TOKEN)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 for the demo API")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("API stdout")?).read_line(&mut line)?;
    let _api = Api(child);
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .context("the demo API did not start")?
        .parse()?;
    println!(
        "    HTTPS API https://api.crm.test:{port} on 127.0.0.2 (certificate of a throwaway CA)"
    );
    let mut text = fs::read_to_string(root.join("policies/examples/demo-http.yaml"))?;
    for (from, to) in [
        ("8443".to_owned(), port.to_string()),
        (
            "/var/lib/interceptor/demo/crm-api-ca.pem".to_owned(),
            ca.display().to_string(),
        ),
    ] {
        text = text.replace(&from, &to);
    }
    let policy = dir.join("demo-http.yaml");
    fs::write(&policy, text)?;
    let audit = dir.join("audit-http.jsonl");
    let _ = fs::remove_file(&audit);
    println!(
        "    policy {}: GET /v1/users/* and /events with an injected token and masking; DELETE denied",
        policy.display()
    );
    let r = format!("--resolve api.crm.test:{port}:127.0.0.2");
    let base = format!("https://api.crm.test:{port}");
    let url = format!("{base}/v1/users/42");
    // The API sends the first event of /events, then the rest once /release is called.
    let script = format!(
        "echo '$ curl {url}   (no token, no --cacert: the bundle comes from interceptor run)'
curl -sS {r} {url}; echo
echo '$ curl -X DELETE {url}'
curl -sS {r} -X DELETE -w '    (HTTP %{{http_code}})\\n' {url}
echo '$ curl -N {base}/events   (a streamed answer, server-sent events: masked event by event)'
curl -sSN {r} '{base}/events?gate=demo' & sleep 1
echo '    (1 s later the API sends the rest)'
curl -sS {r} -o /dev/null '{base}/release?gate=demo'; wait"
    );
    println!("==> interceptor run -- sh -c 'curl …'\n");
    let status = Command::new(interceptor)
        .env("CRM_API_TOKEN", TOKEN)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log", "warn", "run", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(&audit)
        .args(["--", "sh", "-c", &script])
        .status()?;
    if !status.success() {
        bail!("the HTTPS agent failed: {status}");
    }
    println!("\n==> what the API saw");
    let seen = fs::read_to_string(&log).unwrap_or_default();
    for l in seen.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        println!(
            "    {} {}  Authorization header checked by the API: {}",
            v["method"].as_str().unwrap_or(""),
            v["path"].as_str().unwrap_or(""),
            v["auth"].as_str().unwrap_or("")
        );
    }
    if seen.contains("\"DELETE\"") {
        bail!("the DELETE reached the API: the demo failed");
    }
    println!("\n==> audit records ({})", audit.display());
    for l in fs::read_to_string(&audit)?.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        if v["type"] != "http_request" {
            continue;
        }
        let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
        println!(
            "    {} {} {} {} -> {} {} (rule {}, injected {}, {} fields masked)",
            s("tls"),
            s("method"),
            s("host"),
            s("path"),
            v["status"],
            s("decision"),
            s("rule"),
            if v["injected"].is_null() {
                "none".to_owned()
            } else {
                v["injected"].to_string()
            },
            v["fields_masked"]
        );
        println!("        reason: {}", s("reason"));
    }
    if fs::read_to_string(&audit)?.contains(TOKEN) {
        bail!("the injected token is in the audit log: the demo failed");
    }
    println!("\n    the token never appears in the agent's output or in the audit log");
    Ok(())
}
