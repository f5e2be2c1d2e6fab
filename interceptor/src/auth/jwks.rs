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
