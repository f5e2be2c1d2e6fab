//! Root tests of HTTP and HTTPS enforcement through the transparent path: real curl,
//! Python requests and httpx under `interceptor run`, against a Python HTTP(S) upstream
//! on 127.0.0.2 (http_support/).

mod http_support;
mod support;

use std::path::PathBuf;

use http_support::*;
use serde_json::Value;
use support::*;

/// The Python client (after `PY_RESOLVE`): requests (one keep-alive session) and httpx.
/// Prints one JSON object.
const PY_CLIENT: &str = r#"
import json, sys
import requests, httpx
base = sys.argv[1]
out = {}
with requests.Session() as s:
    rs = [s.get(f"{base}/v1/users/{i}", headers={"Authorization": "Bearer agent-guess"}) for i in (1, 2, 3)]
    out["requests"] = [[r.status_code, r.json()] for r in rs]
    d = s.delete(f"{base}/v1/users/1")
    out["requests_delete"] = [d.status_code, d.json()]
with httpx.Client() as c:
    r = c.get(f"{base}/v1/users/4")
    out["httpx"] = [r.status_code, r.json()]
    r = c.post(f"{base}/v1/echo", content=b"x" * 100000)
    out["httpx_post"] = [r.status_code, r.json()]
if "--sse" in sys.argv:
    out["sse"] = read_sse(httpx.Client(timeout=60), base, "sse")
print(json.dumps(out))
"#;

#[test]
fn plain_http_policy_injection_masking_with_curl_and_python() {
    if !root_or_skip("plain_http_policy_injection_masking_with_curl_and_python") || !python_ok() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let up = Upstream::start(&d, "upstream", None);
    let p = up.port;
    let pol = env.policy(
        "http.yaml",
        &policy(&[p], &service("api", p, "    tls: plain\n")),
    );
    std::fs::write(
        d.join("client.py"),
        [PY_RESOLVE, PY_SSE, PY_CLIENT].concat(),
    )
    .unwrap();
    let dd = d.display();
    let script = format!(
        "set -u; D={dd}; R='--resolve api.test:{p}:127.0.0.2'; U=http://api.test:{p}
curl -sS $R -H 'Authorization: Bearer agent-guess' -o $D/get.json -w '%{{http_code}}' $U/v1/users/7 > $D/get.code
curl -sS $R -X DELETE -o $D/del.json -w '%{{http_code}}' $U/v1/users/7 > $D/del.code
curl -sS $R -o $D/other.json -w '%{{http_code}}' $U/v2/secret > $D/other.code
curl -sS -H 'Host: evil.test' -o $D/forged.json -w '%{{http_code}}' http://127.0.0.2:{p}/v1/users/7 > $D/forged.code
curl -sS $R -o $D/chunked.json -D $D/chunked.h $U/chunked
curl -sS $R --compressed -o $D/gzip.json $U/gzip
head -c 300000 /dev/urandom > $D/up.bin
curl -sS $R -H 'Transfer-Encoding: chunked' --data-binary @$D/up.bin -o $D/echo.json $U/v1/echo
curl -sS $R -o $D/untyped.json $U/typed?ct=none
curl -sS $R -o $D/octet.json $U/typed?ct=application/octet-stream
curl -sS $R -o $D/textjson.json $U/typed?ct=text/json
curl -sS $R -o $D/lines.json \"$U/typed?ct=application/x-ndjson&lines=2\"
curl -sS $R -o $D/badlines.json \"$U/typed?ct=application/x-ndjson&lines=2&bad=1\"; echo $? > $D/badlines.rc
curl -sS $R -o $D/blob.out \"$U/blob?file=$D/up.bin\"
env > $D/agent.env
python3 $D/client.py $U --sse > $D/py.json
"
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);

    // Allowed, token injected (the agent's own Authorization replaced), JSON masked.
    assert_eq!(read(&d.join("get.code")), "200");
    let get = json(&d.join("get.json"));
    assert_masked_user(&get, "curl GET");
    assert_eq!(get["id"], "7");
    // Denied by rule, with a JSON body naming it; never reached the upstream.
    assert_eq!(read(&d.join("del.code")), "403");
    let del = json(&d.join("del.json"));
    assert_eq!(del["rule"], "no-deletes", "{del}");
    assert_eq!(del["reason"], "agents may not delete", "{del}");
    // Denied by default.
    assert_eq!(read(&d.join("other.code")), "403");
    let other = json(&d.join("other.json"));
    assert_eq!(other["rule"], Value::Null);
    assert!(other["reason"]
        .as_str()
        .unwrap()
        .contains("no HTTP rule allows GET /v2/secret"));
    // Forged Host: an allowed address, but the Host names another server.
    assert_eq!(read(&d.join("forged.code")), "403");
    let forged = json(&d.join("forged.json"));
    assert!(
        forged["reason"]
            .as_str()
            .unwrap()
            .starts_with("forged host"),
        "{forged}"
    );
    // Chunked upstream response: masked, re-framed with Content-Length.
    assert_masked_user(&json(&d.join("chunked.json")), "chunked");
    let h = read(&d.join("chunked.h")).to_ascii_lowercase();
    assert!(h.contains("content-length:"), "{h}");
    assert!(!h.contains("transfer-encoding"), "{h}");
    // Compressed: Accept-Encoding was removed, so the response came plain and masked.
    assert_masked_user(&json(&d.join("gzip.json")), "gzip");
    // A chunked upload streams through unchanged.
    let echo = json(&d.join("echo.json"));
    assert_eq!(echo["len"], 300000);
    assert_eq!(echo["sha256"], sha256_file(&d.join("up.bin")));
    // Bodies whose type does not say JSON are still masked: no type or octet-stream
    // (sniffed), text/json, JSON lines line by line; a binary body passes untouched.
    for f in ["untyped", "octet", "textjson"] {
        assert_masked_user(&json(&d.join(format!("{f}.json"))), f);
    }
    let lines = read(&d.join("lines.json"));
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for l in lines.lines() {
        assert_masked_user(&serde_json::from_str(l).unwrap(), "x-ndjson");
    }
    // A line that is not JSON cuts the stream: the lines before it arrived masked, the
    // transfer is broken (curl fails), the line itself never reaches the agent.
    assert_ne!(read(&d.join("badlines.rc")), "0");
    let bad = read(&d.join("badlines.json"));
    assert!(!bad.contains("alice@example.com"), "{bad}");
    assert_eq!(bad.lines().count(), 2, "{bad}");
    assert_eq!(
        sha256_file(&d.join("blob.out")),
        sha256_file(&d.join("up.bin"))
    );
    // Python requests (keep-alive) and httpx.
    let py = json(&d.join("py.json"));
    for (i, r) in py["requests"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r[0], 200, "requests #{i}: {r}");
        assert_masked_user(&r[1], "requests");
    }
    assert_eq!(py["requests_delete"][0], 403);
    assert_eq!(py["requests_delete"][1]["rule"], "no-deletes");
    assert_eq!(py["httpx"][0], 200);
    assert_masked_user(&py["httpx"][1], "httpx");
    assert_eq!(py["httpx_post"][1]["len"], 100000);
    check_masked_event_stream(&py["sse"]);

    // Upstream's view: no DELETE, no forged host, no Accept-Encoding when masking.
    let seen = up.requests();
    assert!(seen.iter().all(|r| r["method"] != "DELETE"), "{seen:?}");
    assert!(seen.iter().all(|r| r["host"] != "evil.test"), "{seen:?}");
    let gz = seen.iter().find(|r| r["path"] == "/gzip").unwrap();
    assert_eq!(gz["accept_encoding"], Value::Null, "{gz}");
    // The secret: not in the agent's environment, outputs, or the audit log.
    let agent_env = read(&d.join("agent.env"));
    assert!(
        !agent_env.contains("API_TOKEN"),
        "secret env var leaked to the child"
    );
    no_token_in(&d, &env);

    // One audit record per request, with decision, rule, status and masking counts.
    let recs = http_records(&env);
    assert_eq!(recs.len(), 13 + 6 + 2, "{recs:#?}");
    let get = recs
        .iter()
        .find(|r| r["path"] == "/v1/users/7" && r["method"] == "GET" && r["host"] == "api.test")
        .unwrap();
    assert_eq!(get["decision"], "allow");
    assert_eq!(get["rule"], "read-api");
    assert_eq!(get["status"], 200);
    assert_eq!(get["injected"], serde_json::json!(["Authorization"]));
    assert_eq!(get["fields_masked"], 3, "{get}");
    assert!(get["bytes_down"].as_u64().unwrap() > 50, "{get}");
    assert_eq!(get["identity"]["comm"], "curl");
    let del = recs.iter().find(|r| r["method"] == "DELETE").unwrap();
    assert_eq!(
        (&del["decision"], del["status"].as_u64()),
        (&Value::from("deny"), Some(403))
    );
    let upload = recs
        .iter()
        .find(|r| r["method"] == "POST" && r["identity"]["comm"] == "curl")
        .unwrap();
    assert_eq!(upload["bytes_up"], 300000);
    let sse = recs
        .iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/events")))
        .unwrap();
    assert_eq!(
        (sse["status"].as_u64(), &sse["fields_masked"]),
        (Some(200), &Value::from(8)),
        "{sse}"
    );
    let cut = recs.iter().find(|r| r["error"].is_string()).unwrap();
    assert!(
        cut["error"]
            .as_str()
            .unwrap()
            .starts_with("stream cut: the response says it is JSON but does not parse (line 3"),
        "{cut}"
    );
    // requests' three GETs went over one kept-alive connection (one session).
    let py_sessions: std::collections::BTreeSet<&str> = recs
        .iter()
        .filter(|r| {
            r["identity"]["comm"] == "python3"
                && r["method"] == "GET"
                && r["path"] != "/v1/users/4"
                && r["path"].as_str().unwrap().starts_with("/v1/users/")
        })
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    assert_eq!(py_sessions.len(), 1, "{py_sessions:?}");
}

/// Bad clients get clear errors quickly and do not stall a good client.
const PY_BAD: &str = r#"
import json, socket, sys, threading, time
import requests
port = int(sys.argv[1])
out = {}
def conn():
    return socket.create_connection(("127.0.0.2", port), timeout=10)
def answer(s):
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except OSError:
        pass
    return data.decode("latin-1")
# Slowloris: a request head that never ends, and a connection that says nothing.
slow = conn(); slow.sendall(b"GET /v1/users/1 HTTP/1.1\r\nHost: api.test\r\nX-A: 1\r\n")
mute = conn()
t0 = time.time()
# Meanwhile a good client is served at once.
good = requests.get(f"http://127.0.0.2:{port}/v1/users/5", headers={"Host": "api.test"}, timeout=5)
out["good"] = [good.status_code, round(time.time() - t0, 3)]
t1 = time.time()
out["slow"] = [answer(slow).split("\r\n")[0], round(time.time() - t1 + (t1 - t0), 3)]
out["mute"] = answer(mute).split("\r\n")[0]
# An idle keep-alive connection is closed quietly after the head timeout (no 408).
s = conn(); s.sendall(b"GET /v1/users/1 HTTP/1.1\r\nHost: api.test\r\n\r\n")
first = s.recv(65536).decode("latin-1").split("\r\n")[0]
time.sleep(3)
out["idle"] = [first, answer(s)]
# Malformed request line / header.
s = conn(); s.sendall(b"GET /v1/users/1 HTTP/1.1\r\nHost api.test\r\n\r\n")
out["malformed"] = answer(s).split("\r\n")[0]
# Two Host headers: the policy would see the first, a server may use the last.
s = conn(); s.sendall(b"GET /v1/users/1 HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\nConnection: close\r\n\r\n")
out["twohosts"] = answer(s).split("\r\n")[0]
# Huge headers.
s = conn(); s.sendall(b"GET /v1/users/1 HTTP/1.1\r\nHost: api.test\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
out["huge"] = answer(s).split("\r\n")[0]
# Not HTTP at all: refused (reset or closed without an answer).
s = conn()
try:
    s.sendall(b"\x00\x01binary-protocol\r\n\r\n")
    out["binary"] = answer(s)
except OSError as e:
    out["binary"] = "error: " + type(e).__name__
# A WebSocket upgrade is refused: no rule allows it.
s = conn(); s.sendall(b"GET /v1/users/1 HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
s.settimeout(3)
out["upgrade"] = answer(s).split("\r\n")[0]
print(json.dumps(out))
"#;

#[test]
fn bad_clients_get_clear_errors_and_do_not_stall_others() {
    if !root_or_skip("bad_clients_get_clear_errors_and_do_not_stall_others") || !python_ok() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let up = Upstream::start(&d, "upstream", None);
    let p = up.port;
    let pol = env.policy(
        "http.yaml",
        &policy(&[p], &service("api", p, "    tls: plain\n")),
    );
    std::fs::write(d.join("bad.py"), PY_BAD).unwrap();
    let script = format!(
        "python3 {}/bad.py {p} > {}/bad.json",
        d.display(),
        d.display()
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);
    let v = json(&d.join("bad.json"));
    eprintln!("{v:#}");
    assert_eq!(v["good"][0], 200);
    assert!(
        v["good"][1].as_f64().unwrap() < 1.5,
        "good client stalled: {v}"
    );
    assert_eq!(v["slow"][0], "HTTP/1.1 408 Request Timeout", "{v}");
    let slow_secs = v["slow"][1].as_f64().unwrap();
    assert!((1.5..6.0).contains(&slow_secs), "header timeout 2 s: {v}");
    assert_eq!(v["mute"], "HTTP/1.1 408 Request Timeout", "{v}");
    assert_eq!(v["malformed"], "HTTP/1.1 400 Bad Request", "{v}");
    assert_eq!(v["twohosts"], "HTTP/1.1 400 Bad Request", "{v}");
    assert_eq!(v["idle"][0], "HTTP/1.1 200 OK", "{v}");
    assert_eq!(
        v["idle"][1], "",
        "idle keep-alive closed without an answer: {v}"
    );
    assert_eq!(
        v["huge"], "HTTP/1.1 431 Request Header Fields Too Large",
        "{v}"
    );
    assert!(!v["binary"].as_str().unwrap().starts_with("HTTP"), "{v}");
    assert_eq!(v["upgrade"], "HTTP/1.1 403 Forbidden", "{v}");
    let recs = http_records(&env);
    let reasons: Vec<&str> = recs.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("not HTTP or TLS")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("2 Host headers")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("protocol upgrade refused")),
        "{reasons:?}"
    );
    assert!(
        recs.iter().filter(|r| r["status"] == 408).count() >= 2,
        "{recs:#?}"
    );
    // The upstream saw only the good requests.
    assert_eq!(up.requests().len(), 2, "{:?}", up.requests());
}

#[test]
fn tls_interception_and_sni_passthrough() {
    if !root_or_skip("tls_interception_and_sni_passthrough") || !python_ok() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let ca = TestCa::make(&d);
    let tls = Some((ca.cert.as_path(), ca.key.as_path()));
    let api = Upstream::start(&d, "api", tls);
    let cdn = Upstream::start(&d, "cdn", tls);
    let untrusted = Upstream::start(&d, "untrusted", tls);
    let (p1, p2, p3) = (api.port, cdn.port, untrusted.port);
    let services = service(
        "api",
        p1,
        &format!("    tls: intercept\n    ca_file: {}\n", ca.ca.display()),
    ) + &service("cdn", p2, "    tls: passthrough\n")
        + &service("untrusted", p3, "    tls: intercept\n")
            .replace("[untrusted.test]", "[api.test]");
    let pol = env.policy("https.yaml", &policy(&[p1, p2, p3], &services));
    // 2 MiB of random bytes for the passthrough digest.
    let blob: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("blob.bin"), &blob).unwrap();
    std::fs::write(
        d.join("client.py"),
        [PY_RESOLVE, PY_SSE, PY_CLIENT].concat(),
    )
    .unwrap();
    let dd = d.display();
    let tca = ca.ca.display();
    let script = format!(
        "set -u; D={dd}
curl -sS -v --resolve api.test:{p1}:127.0.0.2 -H 'Authorization: Bearer agent-guess' -o $D/get.json -w '%{{http_code}}' https://api.test:{p1}/v1/users/9 > $D/get.code 2> $D/get.err
curl -sS --resolve api.test:{p1}:127.0.0.2 -X DELETE -o $D/del.json -w '%{{http_code}}' https://api.test:{p1}/v1/users/9 > $D/del.code
curl -sS --resolve cdn.test:{p2}:127.0.0.2 --cacert {tca} -o $D/blob.out 'https://cdn.test:{p2}/blob?file={dd}/blob.bin'
curl -sS -k --resolve evil.test:{p2}:127.0.0.2 -o /dev/null 'https://evil.test:{p2}/blob?file={dd}/blob.bin'; echo $? > $D/forged_sni.rc
curl -sS -k --resolve evil.test:{p1}:127.0.0.2 -o /dev/null https://evil.test:{p1}/v1/users/1; echo $? > $D/forged_sni_intercept.rc
curl -sS --resolve api.test:{p3}:127.0.0.2 -o $D/untrusted.json -w '%{{http_code}}' https://api.test:{p3}/v1/users/1 > $D/untrusted.code
env > $D/agent.env
python3 $D/client.py https://api.test:{p1} > $D/py.json
"
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);

    // The child was handed the CA bundle, and curl/Python trusted it without options.
    let agent_env = read(&d.join("agent.env"));
    for var in [
        "SSL_CERT_FILE=",
        "REQUESTS_CA_BUNDLE=",
        "CURL_CA_BUNDLE=",
        "NODE_EXTRA_CA_CERTS=",
    ] {
        assert!(agent_env.contains(var), "{var} missing");
    }
    let bundle: PathBuf = env.state().join("ca/bundle.pem");
    assert!(read(&bundle).contains("BEGIN CERTIFICATE"));
    assert_eq!(
        read(&d.join("get.code")),
        "200",
        "{}",
        read(&d.join("get.err"))
    );
    assert!(
        read(&d.join("get.err")).contains("interceptor local CA"),
        "the agent saw the local CA's certificate"
    );
    assert_masked_user(&json(&d.join("get.json")), "curl https");
    assert_eq!(read(&d.join("del.code")), "403");
    assert_eq!(json(&d.join("del.json"))["rule"], "no-deletes");
    let py = json(&d.join("py.json"));
    for r in py["requests"].as_array().unwrap() {
        assert_eq!(r[0], 200, "{r}");
        assert_masked_user(&r[1], "requests https");
    }
    assert_eq!(py["httpx"][0], 200);
    assert_masked_user(&py["httpx"][1], "httpx https");
    // Upstream certificate not trusted (no ca_file for that service): 502, not a bypass.
    assert_eq!(read(&d.join("untrusted.code")), "502");
    let u = json(&d.join("untrusted.json"));
    assert!(u["reason"].as_str().unwrap().contains("TLS"), "{u}");
    assert!(untrusted.requests().is_empty());
    // Passthrough: byte-identical (the upstream's certificate, verified with its CA).
    assert_eq!(
        sha256_file(&d.join("blob.out")),
        sha256_file(&d.join("blob.bin"))
    );
    // A forged SNI is reset, in passthrough and in interception.
    assert_ne!(read(&d.join("forged_sni.rc")).trim(), "0");
    assert_ne!(read(&d.join("forged_sni_intercept.rc")).trim(), "0");
    assert_eq!(cdn.requests().len(), 1, "{:?}", cdn.requests());
    no_token_in(&d, &env);

    let recs = http_records(&env);
    let pass: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "http_passthrough")
        .collect();
    assert_eq!(pass.len(), 2, "{pass:#?}");
    let ok = pass.iter().find(|r| r["decision"] == "allow").unwrap();
    assert_eq!(ok["rule"], "cdn-files");
    assert_eq!(ok["host"], "cdn.test");
    assert!(ok["bytes_down"].as_u64().unwrap() > 2 * 1024 * 1024);
    let bad = pass.iter().find(|r| r["decision"] == "deny").unwrap();
    assert!(
        bad["reason"].as_str().unwrap().starts_with("forged host"),
        "{bad}"
    );
    let get = recs
        .iter()
        .find(|r| r["tls"] == "intercept" && r["path"] == "/v1/users/9" && r["method"] == "GET")
        .unwrap();
    assert_eq!(get["injected"], serde_json::json!(["Authorization"]));
    assert_eq!(get["status"], 200);
    // `ca export` prints the CA the agent trusted.
    let exported = env.cmd().args(["ca", "export"]).output().unwrap();
    assert!(exported.status.success());
    let pem = String::from_utf8(exported.stdout).unwrap();
    assert!(read(&bundle).ends_with(&pem));
}

#[test]
fn request_paths_are_normalised_before_the_policy() {
    if !root_or_skip("request_paths_are_normalised_before_the_policy") {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let up = Upstream::start(&d, "upstream", None);
    let p = up.port;
    // An allow rule with `**`: without normalisation `/public/../v2/secret` matched it and
    // the upstream, which resolves `..`, served /v2/secret.
    let pol = policy(&[p], &service("api", p, "    tls: plain\n"))
        + "  - name: public\n    identity: agent\n    service: api\n    action: allow\n    methods: [GET]\n    paths: [\"/public/**\"]\n";
    let pol = env.policy("http.yaml", &pol);
    let dd = d.display();
    let script = format!(
        "set -u; D={dd}; O='-sS --path-as-is --resolve api.test:{p}:127.0.0.2'; C=\"curl $O\"; U=http://api.test:{p}
$C -o $D/dots.json -w '%{{http_code}}' $U/public/../v2/secret > $D/dots.code
$C -o $D/encdots.json -w '%{{http_code}}' $U/public/%2e%2e/v2/secret > $D/encdots.code
$C -o $D/slash.json -w '%{{http_code}}' $U/public/a%2Fb > $D/slash.code
$C -o $D/param.json -w '%{{http_code}}' \"$U/public/..;/v2/secret\" > $D/param.code
$C -o $D/paramok.json -w '%{{http_code}}' \"$U/public/a;v=1/b\" > $D/paramok.code
$C -o /dev/null $U/public/y --next $O -X delete -o $D/lower.json -w '%{{http_code}}' $U/public/x > $D/lower.code
$C -o $D/ok.json -w '%{{http_code}}' \"$U/public/%61//b/./c?x=%2F\" > $D/ok.code
"
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);
    for f in ["dots", "encdots"] {
        assert_eq!(read(&d.join(format!("{f}.code"))), "403", "{f}");
        let body = json(&d.join(format!("{f}.json")));
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("no HTTP rule allows GET /v2/secret"),
            "{f}: decided on the normalised path: {body}"
        );
    }
    // Tomcat reads `..;` as `..`: the two readings are decided by different rules.
    assert_eq!(read(&d.join("param.code")), "403");
    let param = json(&d.join("param.json"));
    assert!(
        param["reason"]
            .as_str()
            .unwrap()
            .contains("reads as /v2/secret on servers that drop ';' path parameters"),
        "{param}"
    );
    assert_eq!(read(&d.join("paramok.code")), "200", "same rule either way");
    assert_eq!(read(&d.join("slash.code")), "400");
    let slash = json(&d.join("slash.json"));
    assert!(
        slash["reason"]
            .as_str()
            .unwrap()
            .contains("encoded separator"),
        "{slash}"
    );
    // A lower-case method could dodge `methods: [DELETE]` at a lenient server. (As the
    // first request of a connection it does not even look like HTTP to `detect`: reset;
    // here it is the second one on a keep-alive connection.)
    assert_eq!(read(&d.join("lower.code")), "400");
    let lower = json(&d.join("lower.json"));
    assert!(
        lower["reason"].as_str().unwrap().contains("upper case"),
        "{lower}"
    );
    assert_eq!(read(&d.join("ok.code")), "200");
    let ok = json(&d.join("ok.json"));
    assert_eq!(
        ok["path"], "/public/a/b/c?x=%2F",
        "the upstream gets the normalised path and the query as sent: {ok}"
    );
    let seen: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        seen,
        ["/public/a;v=1/b", "/public/y", "/public/a/b/c?x=%2F"],
        "nothing else reached it"
    );
    let paths: Vec<Value> = http_records(&env)
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/v2/secret",
            "/v2/secret",
            "/public/a%2Fb",
            "/public/..;/v2/secret",
            "/public/a;v=1/b",
            "/public/y",
            "/public/x",
            "/public/a/b/c"
        ],
        "audited as decided"
    );
}
