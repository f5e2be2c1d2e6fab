use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// The client marks its sockets (SO_MARK needs CAP_NET_ADMIN): root only; fails under CI.
pub(crate) fn root_or_skip(name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name}: needs root (SO_MARK) and CI=true"
    );
    eprintln!("{name}: skipped: needs root (SO_MARK on the client's socket)");
    false
}

fn call<'a>(url: &'a Url, ca_file: Option<&'a Path>) -> Call<'a> {
    Call {
        method: Method::GET,
        url,
        headers: &[("accept", "application/json")],
        body: Bytes::new(),
        ca_file,
        timeout: Duration::from_secs(5),
        max_body: 1 << 20,
    }
}

/// Reads one request head and answers `answer` (raw bytes), on every connection.
async fn raw_server(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer).await;
        }
    });
    (port, task)
}

#[test]
fn parses_urls() {
    let u = Url::parse("https://hooks.example.com/a/b?x=1").unwrap();
    assert_eq!(
        u,
        Url {
            tls: true,
            host: "hooks.example.com".into(),
            port: 443,
            authority: "hooks.example.com".into(),
            path: "/a/b?x=1".into(),
        }
    );
    let u = Url::parse("http://[::1]:8080").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str()),
        ("::1", 8080, "/")
    );
    assert_eq!(u.authority, "[::1]:8080");
    assert_eq!(Url::parse("http://127.0.0.2/x").unwrap().port, 80);
    for bad in [
        "ftp://h/x",
        "hooks.example.com/x",
        "http://user:pw@h/x",
        "http:///x",
        "",
    ] {
        let e = Url::parse(bad).unwrap_err().to_string();
        assert!(e.contains("not a usable URL"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn https_with_a_private_ca_and_refused_without_it() {
    if !root_or_skip("https_with_a_private_ca_and_refused_without_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::protocols::http::tls::Ca::load_or_init(dir.path()).unwrap();
    let (ca_file, _) = crate::protocols::http::tls::ca_paths(dir.path());
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config("127.0.0.1").unwrap());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let host = req.headers()["host"].to_str().unwrap().to_owned();
                        let body = format!("{{\"path\":\"{}\",\"host\":\"{host}\"}}", req.uri());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let url = Url::parse(&format!("https://127.0.0.1:{port}/keys?v=2")).unwrap();
    let a = send(call(&url, Some(&ca_file))).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        &a.body[..],
        format!("{{\"path\":\"/keys?v=2\",\"host\":\"127.0.0.1:{port}\"}}").as_bytes()
    );
    // Without the private CA the server is not trusted: a TLS error, nothing sent.
    let e = send(call(&url, None)).await.unwrap_err();
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[tokio::test]
async fn chunked_answer_body_limit_and_timeout() {
    if !root_or_skip("chunked_answer_body_limit_and_timeout") {
        return;
    }
    let (port, _server) = raw_server(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let a = send(call(&url, None)).await.unwrap();
    assert_eq!(
        (a.status, &a.body[..]),
        (StatusCode::CREATED, &b"hello world"[..])
    );
    let small = Call {
        max_body: 4,
        ..call(&url, None)
    };
    let e = send(small).await.unwrap_err();
    assert!(matches!(e, ClientError::TooLarge(4)), "{e}");

    // A server that accepts and never answers: the whole exchange is bounded.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!(
        "http://127.0.0.1:{}/",
        silent.local_addr().unwrap().port()
    ))
    .unwrap();
    let quick = Call {
        timeout: Duration::from_millis(300),
        ..call(&url, None)
    };
    let e = send(quick).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout(_)), "{e}");
    drop(silent);
}

#[test]
fn blocking_works_outside_and_inside_a_runtime() {
    if !root_or_skip("blocking_works_outside_and_inside_a_runtime") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, _server) = rt.block_on(raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ));
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let get = || blocking(send(call(&url, None))).unwrap().body;
    assert_eq!(&get()[..], b"ok");
    let inside = rt.block_on(async { tokio::task::block_in_place(get) });
    assert_eq!(&inside[..], b"ok");
}
