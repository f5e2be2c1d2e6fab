//! Root test: edges of response masking and of per-request decisions, with real curl and
//! Python under `interceptor run` — a `Range` request (the upstream would answer a slice
//! that is valid JSON alone) and an upstream that answers 206 anyway; JSON labelled as
//! text, escaped, or behind a byte order mark; JSON with duplicate keys; masked JSON that
//! keeps every byte not masked (a big integer, decimals, key order); and a policy
//! reload applied to the next request of an open keep-alive connection.

mod http_support;
mod support;

use http_support::*;
use serde_json::Value;
use support::*;

/// One keep-alive connection: GET, then the policy file replaced and reloaded, then the
/// same GET on the same connection. argv: port, policy path, new policy path, binary,
/// state dir.
const PY_RELOAD: &str = r#"
import http.client, json, shutil, subprocess, sys
port, policy, new, binary, state = sys.argv[1:6]
c = http.client.HTTPConnection("127.0.0.2", int(port), timeout=30)
def get():
    c.request("GET", "/v1/users/1", headers={"Host": "api.test"})
    r = c.getresponse()
    return r.status, r.read().decode()
first, body1 = get()
local = c.sock.getsockname()
shutil.copyfile(new, policy)
reload = subprocess.run([binary, "--state-dir", state, "reload"], capture_output=True, text=True)
second, body2 = get()
print(json.dumps({"first": first, "second": second, "body2": body2,
                  "same_connection": c.sock is not None and c.sock.getsockname() == local,
                  "reload": reload.returncode, "said": reload.stdout + reload.stderr}))
"#;

#[test]
fn masking_edges_and_reload_on_an_open_connection() {
    if !root_or_skip("masking_edges_and_reload_on_an_open_connection") || !python_ok() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let up = Upstream::start(&d, "upstream", None);
    let p = up.port;
    let yaml = policy(&[p], &service("api", p, "    tls: plain\n"));
    let pol = env.policy("http.yaml", &yaml);
    // The same policy without /v1/users/* in the rule that allowed it.
    let narrowed = yaml.replace("\"/v1/users/*\", ", "");
    assert_ne!(narrowed, yaml);
    let new = env.policy("narrowed.yaml", &narrowed);
    std::fs::write(d.join("reload.py"), PY_RELOAD).unwrap();
    let dd = d.display();
    let script = format!(
        "set -u; D={dd}; R='--resolve api.test:{p}:127.0.0.2'; U=http://api.test:{p}
t() {{ n=$1; shift; curl -sS $R -o $D/$n.json -w '%{{http_code}}' \"$@\" > $D/$n.code; }}
t range -H 'Range: bytes=88-106' -H 'If-Range: \"v1\"' \"$U/typed?ct=application/json&range=1\"
t partial \"$U/typed?ct=application/json&partial=1\"
t text \"$U/typed?ct=text/plain\"
t js \"$U/typed?ct=application/javascript&esc=1\"
t form \"$U/typed?ct=application/x-www-form-urlencoded\"
t bom \"$U/typed?ct=none&bom=1\"
t dup \"$U/typed?ct=application/json&dup=1\"
t duptext \"$U/typed?ct=text/plain&dup=1\"
t fidelity \"$U/typed?ct=application/json&fidelity=1\"
t utf16 \"$U/typed?ct=text/plain;%20charset=utf-16&utf16=1\"
t utf16bom \"$U/typed?ct=none&utf16=1\"
t tecoded \"$U/tecoded\"
head -c 100000 /dev/urandom > $D/up.bin
t getbody -X GET -H 'Transfer-Encoding: chunked' --data-binary @$D/up.bin \"$U/v1/echo\"
python3 -c \"
import socket
s = socket.create_connection(('127.0.0.2', {p}))
s.sendall(b'GET http://api.test/v1/users/hostbyte HTTP/1.1\\r\\nHost: other.test:\\xff\\r\\nConnection: close\\r\\n\\r\\n')
print(s.recv(100).split(b' ')[1].decode())
\" > $D/hostbyte.code
python3 $D/reload.py {p} {pol} {new} {bin} {state} > $D/reload.out
",
        pol = pol.display(),
        new = new.display(),
        bin = bin(),
        state = env.state().display(),
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);
    let code = |f: &str| read(&d.join(format!("{f}.code")));
    // Every edge is checked and the broken ones reported together.
    let mut broken: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    let masked_user = |f: &str| {
        let body = read(&d.join(format!("{f}.json")));
        // A byte order mark comes through as it came, masked or not.
        let body = match f {
            "bom" => body.strip_prefix('\u{feff}')?.to_owned(),
            _ => body,
        };
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["ssn"] == "[REDACTED]" && v["email"] == "a***@example.com" && v["auth"] == "ok")
            .then_some(v)
    };

    // 1. Range: removed upstream, so the whole body comes back and is masked; an upstream
    //    answering 206 anyway is withheld.
    check(
        code("range") == "200" && masked_user("range").is_some(),
        format!("Range: {} {}", code("range"), read(&d.join("range.json"))),
    );
    let partial = read(&d.join("partial.json"));
    check(
        code("partial") == "502" && !partial.contains("bob@example.org") && partial.contains("206"),
        format!("206 answer: {} {partial}", code("partial")),
    );
    let ranged: Vec<Value> = up
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or("").starts_with("/typed"))
        .filter(|r| !r["range"].is_null() || !r["if_range"].is_null())
        .collect();
    check(ranged.is_empty(), format!("Range forwarded: {ranged:?}"));

    // 2. JSON labelled text, JavaScript or form data, escaped, or behind a BOM (kept): field
    //    paths apply, detectors see the decoded strings.
    for f in ["text", "js", "form", "bom"] {
        check(
            code(f) == "200" && masked_user(f).is_some(),
            format!("{f}: {} {}", code(f), read(&d.join(format!("{f}.json")))),
        );
    }

    // 3. Duplicate keys: each occurrence masked, the first one too; the rest as it came.
    for f in ["dup", "duptext"] {
        let body = read(&d.join(format!("{f}.json")));
        check(
            code(f) == "200"
                && body == r#"{"id": "d", "note": "call b***@example.org", "note": "clean"}"#,
            format!("{f}: {} {body}", code(f)),
        );
    }
    // Masked JSON keeps every byte it does not mask: a big integer, decimals, key order,
    // whitespace, escapes.
    let body = read(&d.join("fidelity.json"));
    check(
        code("fidelity") == "200"
            && body
                == "{\"zeta\": 12345678901234567890123,\n \"email\": \"a***@example.com\", \
                    \"alpha\": [1.10, -0, 1e2, 0.1000000000000000055],\n \
                    \"ssn\": \"[REDACTED]\", \"b\": \"caf\\u00e9\"}\n",
        format!("fidelity: {} {body}", code("fidelity")),
    );

    // 4. Text the detectors cannot read (UTF-16, by charset or by byte order mark) and a
    //    transfer coding the client library does not undo: withheld, never passed on.
    for f in ["utf16", "utf16bom", "tecoded"] {
        let body = read(&d.join(format!("{f}.json")));
        check(
            code(f) == "502" && !body.contains("123-45-6789"),
            format!("{f}: {} {body}", code(f)),
        );
    }
    // 5. A GET with a chunked body reaches the upstream with its body.
    let echo: Value = serde_json::from_str(&read(&d.join("getbody.json"))).unwrap_or_default();
    check(
        code("getbody") == "200" && echo["len"] == 100000,
        format!("GET with a body: {} {echo}", code("getbody")),
    );
    // 6. A Host that is not text is refused, not replaced by the URI's host.
    check(
        read(&d.join("hostbyte.code")).trim() == "400",
        format!("Host with a raw byte: {}", read(&d.join("hostbyte.code"))),
    );
    let reached: Vec<Value> = up
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or("").contains("hostbyte"))
        .collect();
    check(reached.is_empty(), format!("forwarded: {reached:?}"));
    // 7. The query string is on record.
    let recs = http_records(&env);
    check(
        recs.iter()
            .any(|r| r["path"] == "/typed" && r["query"] == "ct=text/plain"),
        "no http_request record with query ct=text/plain".into(),
    );

    // 8. A reload applies to the next request of an already open connection.
    let r = json(&d.join("reload.out"));
    assert_eq!(r["reload"], 0, "{r}");
    assert_eq!(r["first"], 200, "{r}");
    assert_eq!(r["same_connection"], true, "{r}");
    check(r["second"] == 403, format!("after the reload: {r}"));
    let users: Vec<&Value> = recs.iter().filter(|r| r["path"] == "/v1/users/1").collect();
    assert_eq!(users.len(), 2, "{recs:#?}");
    assert_eq!(users[0]["session"], users[1]["session"], "one connection");
    check(
        users[1]["decision"] == "deny",
        format!("audited after the reload: {}", users[1]),
    );
    assert!(broken.is_empty(), "broken edges:\n{}", broken.join("\n"));
    no_token_in(&d, &env);
}
