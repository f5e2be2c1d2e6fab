//! Loading an issuer's JSON Web Key Set: from a file, or fetched once from a URL when the
//! policy is loaded (blocking; `policy check` and reloads do the same) with the daemon's
//! HTTP client (`crate::http_client`); HTTPS URLs are verified against the system roots.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use crate::http_client::{self, Call, Url};

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BYTES: usize = 1 << 20;

pub fn from_file(path: &Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read JWKS file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("JWKS file {}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON Web Key Set ({{\"keys\": [...]}}): {e}"))?;
    if set.keys.is_empty() {
        return Err("the key set holds no keys".into());
    }
    Ok(set)
}

/// GET `url` and parse the body as a key set.
pub fn fetch(url: &str) -> Result<JwkSet, String> {
    let body = get(url).map_err(|e| format!("fetching JWKS {url}: {e}"))?;
    parse(&body).map_err(|e| format!("JWKS {url}: {e}"))
}

fn get(url: &str) -> Result<String, String> {
    let url = Url::parse(url).map_err(|e| e.to_string())?;
    let answer = http_client::blocking(http_client::send(Call {
        method: hyper::Method::GET,
        url: &url,
        headers: &[("accept", "application/json")],
        body: bytes::Bytes::new(),
        ca_file: None,
        timeout: TIMEOUT,
        max_body: MAX_BYTES,
    }))
    .map_err(|e| e.to_string())?;
    if answer.status != hyper::StatusCode::OK {
        return Err(format!("answered HTTP {}", answer.status));
    }
    String::from_utf8(answer.body.into()).map_err(|_| "the answer is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Serves `answers` in turn, one per connection, on 127.0.0.1.
    fn server(answers: Vec<Vec<u8>>) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (answer, s) in answers.into_iter().zip(l.incoming()) {
                let mut s = s.unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(&answer);
            }
        });
        port
    }

    #[test]
    fn fetches_a_key_set_chunked_and_reports_bad_answers() {
        if !crate::http_client::tests::root_or_skip(
            "fetches_a_key_set_chunked_and_reports_bad_answers",
        ) {
            return;
        }
        let jwks = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../policies/examples/keys/example-idp.jwks.json"),
        )
        .unwrap();
        let (a, b) = jwks.split_at(jwks.len() / 2);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let port = server(vec![
            chunked.into_bytes(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"keys\": []}".to_vec(),
        ]);
        let url = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
        let set = fetch(&url).unwrap();
        assert_eq!(set.keys.len(), parse(&jwks).unwrap().keys.len());
        let e = fetch(&url).unwrap_err();
        assert!(e.contains("answered HTTP 404"), "{e}");
        let e = fetch(&url).unwrap_err();
        assert!(e.contains("holds no keys"), "{e}");
        let e = fetch("ftp://127.0.0.1/x").unwrap_err();
        assert!(e.contains("not a usable URL"), "{e}");
    }
}
