//! The HTTP approvals API and signed webhook deliveries to an HTTPS receiver.

use super::*;

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
