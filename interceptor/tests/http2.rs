//! Root test of HTTP/2 on intercepted TLS: curl (nghttp2) and httpx (h2) negotiate h2 with
//! the interceptor through the transparent path; requests go on to an HTTP/1.1 upstream
//! (Python) and to an HTTP/2 upstream (hyper, below), with policy, injection and masking.

mod http_support;
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use http_support::*;
use serde_json::{json, Value};
use support::*;

/// An HTTPS upstream that speaks only HTTP/2 (ALPN h2) and records what it saw.
struct H2Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
    _rt: tokio::runtime::Runtime,
}

fn start_h2(cert: &Path, key: &Path) -> H2Upstream {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((HOST, 0)))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let auth = match req.headers().get("authorization") {
                            None => "missing",
                            Some(v) if v.as_bytes() == format!("Bearer {TOKEN}").as_bytes() => "ok",
                            Some(_) => "wrong",
                        };
                        seen.lock().unwrap().push(json!({
                            "version": format!("{:?}", req.version()),
                            "method": req.method().as_str(),
                            "path": req.uri().path(),
                            "authority": req.uri().authority().map(|a| a.to_string()),
                            "auth": auth,
                        }));
                        let body = json!({
                            "auth": auth,
                            "ssn": "123-45-6789",
                            "email": "alice@example.com",
                            "note": "call bob@example.org",
                            "name": "Alice Example",
                            "upstream_version": format!("{:?}", req.version()),
                        });
                        let resp = http::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                body.to_string(),
                            )))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    H2Upstream {
        port,
        seen,
        _rt: rt,
    }
}

const PY_H2: &str = r#"
import json, sys
import httpx
out = []
with httpx.Client(http2=True) as c:
    for url in sys.argv[1:]:
        r = c.get(url)
        out.append([r.http_version, r.status_code, r.json()])
base = sys.argv[1].rsplit("/v1/", 1)[0]
out.append(read_sse(httpx.Client(http2=True, timeout=60), base, "h2"))
# A JSON-lines stream whose third line is not JSON: cut there (the stream is reset).
cut = {"lines": []}
with httpx.Client(http2=True, timeout=60) as c:
    try:
        with c.stream("GET", f"{base}/typed?ct=application/x-ndjson&lines=2&bad=1") as r:
            for line in r.iter_lines():
                cut["lines"].append(line)
        cut["error"] = None
    except httpx.HTTPError as e:
        cut["error"] = type(e).__name__
out.append(cut)
print(json.dumps(out))
"#;

/// HTTP/2 connections that never carry a request: one idle after its preface, one stuck
/// in a HEADERS frame without END_HEADERS. Both must be closed (header_timeout_secs: 2).
const PY_H2_IDLE: &str = r#"
import json, socket, ssl, sys
port, res = int(sys.argv[1]), {}
for case in ["idle", "half_headers"]:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.2", port)), server_hostname="api.test")
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    if case == "half_headers":
        s.sendall(b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82")
    s.settimeout(60)
    closed = False
    try:
        while s.recv(65536):
            pass
        closed = True
    except (ConnectionResetError, ssl.SSLError):
        closed = True
    except (socket.timeout, TimeoutError):
        pass
    res[case] = {"closed": closed, "alpn": s.selected_alpn_protocol()}
print(json.dumps(res))
"#;

#[test]
fn http2_agents_through_tls_interception() {
    if !root_or_skip("http2_agents_through_tls_interception") || !python_ok() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let ca = TestCa::make(&d);
    let api = Upstream::start(&d, "api", Some((ca.cert.as_path(), ca.key.as_path())));
    let h2 = start_h2(&ca.cert, &ca.key);
    let (p1, p2) = (api.port, h2.port);
    let tls = format!("    tls: intercept\n    ca_file: {}\n", ca.ca.display());
    // The HTTP/2 upstream is the `untrusted` service of the shared policy (same rules as
    // `api`), here with the test CA, under the name api.test as its certificate says.
    let services = service("api", p1, &tls)
        + &service("untrusted", p2, &tls).replace("[untrusted.test]", "[api.test]");
    let pol = env.policy("h2.yaml", &policy(&[p1, p2], &services));
    std::fs::write(d.join("client.py"), [PY_RESOLVE, PY_SSE, PY_H2].concat()).unwrap();
    std::fs::write(d.join("idle.py"), PY_H2_IDLE).unwrap();
    let dd = d.display();
    let script = format!(
        "set -u; D={dd}
C='curl -sS --http2 --resolve api.test:{p1}:127.0.0.2 --resolve api.test:{p2}:127.0.0.2'
$C -H 'Authorization: Bearer agent-guess' -o $D/h1up.json -w '%{{http_version}} %{{http_code}}' https://api.test:{p1}/v1/users/5 > $D/h1up.code
$C -o $D/h2up.json -w '%{{http_version}} %{{http_code}}' https://api.test:{p2}/v1/users/6 > $D/h2up.code
$C -X DELETE -o $D/del.json -w '%{{http_version}} %{{http_code}}' https://api.test:{p1}/v1/users/5 > $D/del.code
$C -H 'Host: evil.test' -o $D/forged.json -w '%{{http_version}} %{{http_code}}' https://api.test:{p1}/v1/users/5 > $D/forged.code
head -c 300000 /dev/urandom > $D/up.bin
$C --data-binary @$D/up.bin -o $D/echo.json -w '%{{http_version}} %{{http_code}}' https://api.test:{p1}/v1/echo > $D/echo.code
$C --parallel --parallel-max 8 -o $D/par_#1.json 'https://api.test:{p1}/v1/users/[1-8]'
$C --parallel --parallel-max 8 -o $D/par2_#1.json 'https://api.test:{p2}/v1/users/[1-8]'
python3 $D/client.py https://api.test:{p1}/v1/users/9 https://api.test:{p2}/v1/users/10 > $D/py.json
python3 $D/idle.py {p1} > $D/idle.json
"
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);

    // curl spoke HTTP/2 to the interceptor, whichever version the upstream speaks.
    assert_eq!(read(&d.join("h1up.code")), "2 200");
    assert_masked_user(&json(&d.join("h1up.json")), "curl h2 → HTTP/1.1 upstream");
    assert_eq!(read(&d.join("h2up.code")), "2 200");
    let h2up = json(&d.join("h2up.json"));
    assert_masked_user(&h2up, "curl h2 → HTTP/2 upstream");
    assert_eq!(h2up["upstream_version"], "HTTP/2.0", "{h2up}");
    // A denial is a 403 over HTTP/2 too.
    assert_eq!(read(&d.join("del.code")), "2 403");
    assert_eq!(json(&d.join("del.json"))["rule"], "no-deletes");
    // :authority naming another host than the SNI is a forged host, as Host is in HTTP/1.1.
    assert_eq!(read(&d.join("forged.code")), "2 403");
    let forged = json(&d.join("forged.json"));
    assert!(
        forged["reason"].as_str().unwrap().contains("evil.test"),
        "{forged}"
    );
    // A request body streamed from HTTP/2 DATA frames to an HTTP/1.1 upstream, intact.
    assert_eq!(read(&d.join("echo.code")), "2 200");
    let echo = json(&d.join("echo.json"));
    assert_eq!(echo["len"], 300000);
    assert_eq!(echo["sha256"], sha256_file(&d.join("up.bin")));
    // Parallel streams on one connection, to both upstreams.
    for i in 1..=8 {
        assert_masked_user(&json(&d.join(format!("par_{i}.json"))), "parallel h1");
        assert_masked_user(&json(&d.join(format!("par2_{i}.json"))), "parallel h2");
    }
    let py = json(&d.join("py.json"));
    let (py, sse) = py.as_array().unwrap().split_at(2);
    // Server-sent events over HTTP/2, masked event by event as they stream.
    assert_eq!(sse[0]["version"], "HTTP/2", "{}", sse[0]);
    check_masked_event_stream(&sse[0]);
    // A JSON-lines stream cut at a line that is not JSON: the stream is reset, the masked
    // lines before it arrived, the bad line never did.
    let cut = &sse[1];
    assert!(
        cut["error"].is_string(),
        "the cut must fail the transfer: {cut}"
    );
    assert!(!cut.to_string().contains("alice@example.com"), "{cut}");
    let lines = cut["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{cut}");
    for l in lines {
        assert_masked_user(
            &serde_json::from_str(l.as_str().unwrap()).unwrap(),
            "h2 cut",
        );
    }
    for r in py {
        assert_eq!(r[0], "HTTP/2", "{r}");
        assert_eq!(r[1], 200, "{r}");
        assert_masked_user(&r[2], "httpx http2");
    }

    // Connections that never carried a request were closed after header_timeout_secs.
    let idle = json(&d.join("idle.json"));
    for case in ["idle", "half_headers"] {
        assert_eq!(idle[case]["alpn"], "h2", "{idle}");
        assert_eq!(idle[case]["closed"], true, "{case}: {idle}");
    }

    // The HTTP/2 upstream got HTTP/2 with the right :authority and the injected token.
    let seen = h2.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1 + 8 + 1, "{seen:#?}");
    for s in &seen {
        assert_eq!(s["version"], "HTTP/2.0", "{s}");
        assert_eq!(s["authority"], format!("api.test:{p2}"), "{s}");
        assert_eq!(s["auth"], "ok", "{s}");
    }
    // The HTTP/1.1 upstream got Host from :authority, the token on every GET, and never
    // the DELETE or the forged host.
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1 + 1 + 8 + 1 + 2 + 1, "{reqs:#?}");
    for r in &reqs {
        assert_eq!(r["host"], format!("api.test:{p1}"), "{r}");
        if r["method"] == "GET" {
            assert_eq!(r["auth"], "ok", "{r}");
        } else {
            assert_eq!(r["method"], "POST", "{r}");
        }
    }
    no_token_in(&d, &env);

    let recs: Vec<Value> = http_records(&env)
        .into_iter()
        .filter(|r| r["tls"] == "intercept")
        .collect();
    // GETs to both upstreams, the DELETE, the forged host, the upload, events and release,
    // the cut stream.
    assert_eq!(recs.len(), 2 * (1 + 8 + 1) + 3 + 2 + 1, "{recs:#?}");
    let del = recs.iter().find(|r| r["method"] == "DELETE").unwrap();
    assert_eq!(del["status"], 403);
    assert_eq!(del["decision"], "deny");
}
