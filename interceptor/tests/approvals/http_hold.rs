//! A held HTTP request approved through the API, another denied.

use super::*;

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
