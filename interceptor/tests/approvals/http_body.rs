//! The body of a held HTTP request: read before approvers are asked and shown to them, sent
//! upstream byte for byte once approved; a body over `max_held_body_bytes` refused with 413,
//! one that never completes ended by `header_timeout_secs` (408) while others are served.

use super::http_setup::{status_of, HttpHold};
use super::*;

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `http_request` audit records of `method` so far.
fn http_records(h: &HttpHold, method: &str) -> Vec<Value> {
    h.env
        .audit()
        .into_iter()
        .filter(|r| r["type"] == "http_request" && r["method"] == method)
        .collect()
}

/// `interceptor approvals ARGS` as carol; its stdout.
fn cli(h: &HttpHold, args: &[&str]) -> String {
    let out = h
        .env
        .cmd()
        .arg("approvals")
        .args(args)
        .env("INTERCEPTOR_APPROVER_TOKEN", &h.carol)
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "approvals {args:?}: {:?}\n{so}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "approvals {args:?} failed");
    so
}

#[test]
fn approvers_see_the_held_body_and_the_upstream_gets_it_unchanged() {
    if !root_or_skip("approvers_see_the_held_body_and_the_upstream_gets_it_unchanged") {
        return;
    }
    let h = HttpHold::start("apr-http-body", 60, |_, _| Vec::new());
    let body = "{\n  \"amount\": 4200,\n  \"to\": \"acct-77\"\n}";
    let file = h.env.dir.path().join("payment.json");
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    let agent = h.agent_with(
        "POST",
        "/v1/echo",
        &[
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/json",
        ],
    );
    let req = h.pending();
    let id = req["id"].as_str().unwrap().to_owned();
    let head = format!(
        "POST api.test/v1/echo (body: {} bytes, application/json)",
        body.len()
    );
    assert_eq!(req["command"], format!("{head}\n{body}"), "{req}");
    assert!(h.up.requests().is_empty(), "nothing upstream while held");

    // The CLI shows the body line by line, each marked as the command's.
    let shown = cli(&h, &["show", &id]);
    assert!(
        shown.contains(&format!(
            "  command:   {head}\n           | {{\n           |   \"amount\": 4200,\n           |   \"to\": \"acct-77\"\n           | }}\n"
        )),
        "{shown}"
    );
    let listed = cli(&h, &["list", "--json"]);
    assert!(listed.contains(r#"\"amount\": 4200"#), "{listed}");

    cli(&h, &["approve", &id, "--reason", "invoice 9"]);
    let (so, code) = status_of(agent);
    assert_eq!(code, "200", "{so}");
    let echoed: Value = serde_json::from_str(so.lines().next().unwrap()).unwrap();
    assert_eq!(echoed["len"], body.len(), "{so}");
    assert_eq!(echoed["sha256"], sha256_hex(body.as_bytes()), "{so}");
    assert_eq!(h.up.requests().len(), 1);

    // An agent that hangs up while its body waits withdraws the request.
    let mut agent = h.agent_with(
        "POST",
        "/v1/echo",
        &[
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/json",
        ],
    );
    let id = h.pending()["id"].as_str().unwrap().to_owned();
    agent.kill().unwrap();
    agent.wait().unwrap();
    wait_for("the request withdrawn", Duration::from_secs(20), || {
        h.call(&[&format!("{}/{id}", h.base)])
            .get("state")
            .filter(|s| *s == "withdrawn")
            .cloned()
    });
    assert_eq!(h.up.requests().len(), 1, "the withdrawn request never left");

    // The body is on the approval's records only: not in the request's own records.
    let recs = wait_for("the POST's record", Duration::from_secs(10), || {
        let r = http_records(&h, "POST");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(recs[0]["decision"], "allow", "{recs:?}");
    assert_eq!(recs[0]["status"], 200, "{recs:?}");
    for r in h.env.audit() {
        let text = r.to_string();
        if r["type"] != "approval" {
            assert!(!text.contains("acct-77"), "the body leaked into {text}");
        }
    }
}

#[test]
fn a_held_body_over_the_limit_is_refused_with_413_and_never_sent() {
    if !root_or_skip("a_held_body_over_the_limit_is_refused_with_413_and_never_sent") {
        return;
    }
    let h = HttpHold::start("apr-http-413", 60, |_, _| Vec::new());
    let file = h.env.dir.path().join("big.bin");
    let limit = 1024 * 1024;
    std::fs::write(&file, vec![b'a'; limit + 1]).unwrap();
    let data = format!("@{}", file.display());
    let (so, code) = status_of(h.agent_with("POST", "/v1/echo", &["--data-binary", &data]));
    assert_eq!(code, "413", "{so}");
    let answer: Value = serde_json::from_str(so.lines().next().unwrap()).unwrap();
    assert_eq!(
        answer["error"], "request body too large to be shown to an approver",
        "{so}"
    );
    assert_eq!(answer["rule"], "hold-echo", "{so}");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{} bytes", limit + 1))
            && reason.contains(&format!("at most {limit} bytes"))
            && reason.contains("max_held_body_bytes"),
        "{reason}"
    );
    let recs = wait_for("the refusal's record", Duration::from_secs(10), || {
        let r = http_records(&h, "POST");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(recs[0]["decision"], "deny", "{recs:?}");
    assert_eq!(recs[0]["status"], 413, "{recs:?}");
    assert!(h.up.requests().is_empty(), "never sent upstream");
    assert_eq!(
        h.call(&[&h.base]),
        json!([]),
        "no approver was asked about it"
    );
}

#[test]
fn a_held_body_that_never_completes_times_out_and_others_are_served() {
    if !root_or_skip("a_held_body_that_never_completes_times_out_and_others_are_served") {
        return;
    }
    let h = HttpHold::start_with(
        "apr-http-slowbody",
        30,
        "\n    header_timeout_secs: 2",
        |_, _| Vec::new(),
    );
    // Headers and part of a body, then nothing (the connection stays open).
    let script = format!(
        r#"
import socket, sys
s = socket.create_connection(("127.0.0.2", {port}))
s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: api.test:{port}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{{"amount": ')
print("sent", flush=True)
s.settimeout(60)
got = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
except Exception as e:
    print("error:", e)
sys.stdout.write(got.decode(errors="replace"))
"#,
        port = h.up.port
    );
    let mut slow =
        h.cg.command("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
    let mut out = BufReader::new(slow.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "sent\n");
    // Meanwhile another request is served.
    let (so, code) = status_of(h.agent("GET", "/v1/other", None));
    assert_eq!(code, "200", "{so}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    slow.wait().unwrap();
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest}");
    assert!(
        rest.contains("rule hold-echo holds this request for approval")
            && rest.contains("header_timeout_secs"),
        "{rest}"
    );
    let recs = wait_for("the timeout's record", Duration::from_secs(10), || {
        let r = http_records(&h, "POST");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(recs[0]["decision"], "deny", "{recs:?}");
    assert_eq!(recs[0]["status"], 408, "{recs:?}");
    let up = h.up.requests();
    assert_eq!(up.len(), 1, "only the GET went upstream: {up:?}");
    assert_eq!(up[0]["method"], "GET");
    assert_eq!(h.call(&[&h.base]), json!([]), "no approver was asked");
}
