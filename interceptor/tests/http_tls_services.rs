//! Root tests of what a TLS service keeps to TLS: plain HTTP to a `tls: intercept`
//! service never reaches its upstream (and an injected secret never goes out in plain
//! HTTP), and one HTTP/2 agent connection with many stalled streams holds at most
//! `MAX_H1_PER_AGENT` upstream connections while another client is served.

mod http_support;
mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_support::*;
use support::*;

/// A plain TCP listener that records every byte it is sent and answers 400.
struct Capture {
    port: u16,
    got: Arc<Mutex<Vec<u8>>>,
}

fn capture() -> Capture {
    let l = std::net::TcpListener::bind((HOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                g.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    Capture { port, got }
}

#[test]
fn plain_http_to_a_tls_service_never_goes_upstream_with_a_secret() {
    if !root_or_skip("plain_http_to_a_tls_service_never_goes_upstream_with_a_secret") {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let (tls, unspecified, plain) = (capture(), capture(), capture());
    let (p1, p2, p3) = (tls.port, unspecified.port, plain.port);
    // api: declared TLS; untrusted: no `tls`; cdn: declared plain. read-api (GET
    // /v1/users/*) injects the token on api and untrusted; cdn-files allows anything.
    let services = service("api", p1, "    tls: intercept\n")
        + &service("untrusted", p2, "")
        + &service("cdn", p3, "    tls: plain\n");
    let pol = env.policy("plain.yaml", &policy(&[p1, p2, p3], &services));
    let dd = d.display();
    let script = format!(
        "set -u; D={dd}
C='curl -sS --max-time 20 --resolve api.test:{p1}:127.0.0.2 --resolve untrusted.test:{p2}:127.0.0.2 --resolve cdn.test:{p3}:127.0.0.2'
$C -o $D/tls.json -w '%{{http_code}}' http://api.test:{p1}/v1/users/1 > $D/tls.code
$C -o $D/inj.json -w '%{{http_code}}' http://untrusted.test:{p2}/v1/users/1 > $D/inj.code
$C -o $D/plain.json -w '%{{http_code}}' http://cdn.test:{p3}/files/a > $D/plain.code
"
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);

    // Declared TLS: refused before any rule, nothing sent.
    assert_eq!(read(&d.join("tls.code")), "400");
    let r = json(&d.join("tls.json"));
    assert_eq!(r["error"], "this service is reached over TLS; use https://");
    assert!(tls.got.lock().unwrap().is_empty(), "sent upstream");
    // No `tls`: the injecting rule's request is refused, nothing sent.
    assert_eq!(read(&d.join("inj.code")), "400");
    let r = json(&d.join("inj.json"));
    assert!(r["reason"].as_str().unwrap().contains("tls: plain"), "{r}");
    assert!(unspecified.got.lock().unwrap().is_empty(), "sent upstream");
    // Declared plain: forwarded in plain HTTP as before (here to a server answering 400).
    assert_eq!(read(&d.join("plain.code")), "400");
    let got = String::from_utf8_lossy(&plain.got.lock().unwrap()).to_string();
    assert!(got.starts_with("GET /files/a HTTP/1.1"), "{got}");
    for c in [&tls, &unspecified, &plain] {
        let got = c.got.lock().unwrap();
        assert!(!got.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    }
    no_token_in(&d, &env);
    let recs = http_records(&env);
    let refused: Vec<_> = recs
        .iter()
        .filter(|r| r["status"] == 400 && r["decision"] == "deny")
        .collect();
    assert_eq!(refused.len(), 2, "{recs:#?}");
}

/// An HTTPS HTTP/1.1 upstream (test CA certificate) answering each request once its body
/// is complete; writes `full` when it has accepted `full_at` connections.
struct Counted {
    port: u16,
    requests: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

fn counted_upstream(ca: &TestCa, full: PathBuf, full_at: usize) -> Counted {
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&ca.key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
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
    let (accepted, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let r = requests.clone();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            if accepted.fetch_add(1, SeqCst) + 1 == full_at {
                let _ = std::fs::write(&full, "");
            }
            let (acceptor, r) = (acceptor.clone(), r.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let r = r.clone();
                            async move {
                                let body = req.into_body().collect().await?.to_bytes();
                                r.fetch_add(1, SeqCst);
                                let b = format!("{{\"len\": {}}}", body.len());
                                Ok::<_, hyper::Error>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(b)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    Counted {
        port,
        requests,
        _rt: rt,
    }
}

/// One TLS + HTTP/2 connection opening N POST streams whose bodies never end; reports
/// how each stream ended.
const PY_HOLD: &str = r#"
import json, socket, ssl, sys, time
import h2.connection, h2.config, h2.events
port, n, ready, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.2", port)), server_hostname="api.test")
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
c.initiate_connection()
for i in range(n):
    c.send_headers(c.get_next_available_stream_id(), [(":method", "POST"), (":path", "/v1/echo"),
        (":scheme", "https"), (":authority", f"api.test:{port}")], end_stream=False)
s.sendall(c.data_to_send())
open(ready, "w").close()
ended, statuses = set(), {}
s.settimeout(60)
deadline = time.time() + 120
while len(ended) < n and time.time() < deadline:
    try:
        data = s.recv(65536)
    except (socket.timeout, TimeoutError):
        break
    if not data:
        break
    for ev in c.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived):
            statuses[ev.stream_id] = dict(ev.headers).get(b":status", b"").decode()
        if isinstance(ev, h2.events.DataReceived):
            c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
            ended.add(ev.stream_id)
    s.sendall(c.data_to_send())
json.dump({"ended": len(ended), "statuses": sorted(set(statuses.values()))}, open(out, "w"))
"#;

/// Client-side TCP connections to `port` now ESTABLISHED (the daemon's, to the upstream:
/// a connection it closed is in FIN_WAIT at once, whenever the server notices).
fn established_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&want) && f[3] == "01"
        })
        .count()
}

fn wait_file(p: &Path) -> String {
    format!(
        "i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        p.display()
    )
}

#[test]
fn stalled_http2_streams_hold_few_upstream_connections() {
    if !root_or_skip("stalled_http2_streams_hold_few_upstream_connections") || !python_ok() {
        return;
    }
    const CAP: usize = 8; // upstream::MAX_H1_PER_AGENT
    const STREAMS: usize = 40;
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let ca = TestCa::make(&d);
    let held = counted_upstream(&ca, d.join("full"), CAP);
    let other = counted_upstream(&ca, d.join("unused"), usize::MAX);
    let (p1, p2) = (held.port, other.port);
    let tls = format!("    tls: intercept\n    ca_file: {}\n", ca.ca.display());
    let services = service("api", p1, &tls)
        + &service("untrusted", p2, &tls).replace("[untrusted.test]", "[api.test]");
    let pol = env.policy("h2hold.yaml", &policy(&[p1, p2], &services));
    std::fs::write(d.join("hold.py"), PY_HOLD).unwrap();
    let dd = d.display();
    let script = format!(
        "set -u; D={dd}
python3 $D/hold.py {p1} {STREAMS} $D/ready $D/hold.json &
{}
{}
curl -sS --max-time 30 --resolve api.test:{p2}:127.0.0.2 -o $D/other.json -w '%{{http_code}}' https://api.test:{p2}/v1/users/1 > $D/other.code
wait
",
        wait_file(&d.join("ready")),
        wait_file(&d.join("full")),
    );
    // Samples the daemon's connections to the held upstream while the agent runs.
    let (done, max) = (
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = {
        let (done, max) = (done.clone(), max.clone());
        std::thread::spawn(move || {
            while !done.load(SeqCst) {
                max.fetch_max(established_to(p1), SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = run_sh(&env, &pol, &script);
    done.store(true, SeqCst);
    sampler.join().unwrap();
    assert!(out.status.success(), "{:?}", out.status);

    // The other client was served while the streams were held.
    assert_eq!(read(&d.join("other.code")), "200");
    assert_eq!(other.requests.load(SeqCst), 1);
    // The stalled streams never had more than CAP upstream connections at once …
    let max = max.load(SeqCst);
    assert!(
        max <= CAP,
        "{max} upstream connections for one agent connection"
    );
    assert_eq!(max, CAP, "the streams did fill the cap");
    // … and each ended with a 408 once its body had stalled for header_timeout_secs.
    let hold = json(&d.join("hold.json"));
    assert_eq!(hold["ended"], STREAMS, "{hold}");
    assert_eq!(hold["statuses"], serde_json::json!(["408"]), "{hold}");
    assert_eq!(
        held.requests.load(SeqCst),
        0,
        "no stalled body reached a handler"
    );
    let recs = http_records(&env);
    let timed_out = recs.iter().filter(|r| r["status"] == 408).count();
    assert_eq!(timed_out, STREAMS, "{recs:#?}");
}
