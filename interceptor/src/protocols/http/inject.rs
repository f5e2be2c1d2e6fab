//! Header hygiene and credential injection on requests the policy allows.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::policy::InjectHeader;

/// Errors reading an injected secret.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("secret for header {header}: environment variable {var} of the daemon is not set (set it where the daemon starts)")]
    MissingEnv { header: String, var: String },
    #[error("secret for header {header}: cannot read {path}: {source} (the daemon must be able to read the file)")]
    File {
        header: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret for header {header} is not a valid header value (control characters?)")]
    BadValue { header: String },
}

/// How long a secret read from its file or the environment is reused: a rotated file is
/// picked up within this time, without a file read per request.
const SECRET_TTL: Duration = Duration::from_secs(1);

/// (header, prefix, env var or file) → when read, the header value.
type SecretCache = HashMap<(String, String, String), (Instant, HeaderValue)>;

/// Secrets recently read.
fn cache() -> &'static Mutex<SecretCache> {
    static C: OnceLock<Mutex<SecretCache>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

/// The header value of `i`: its prefix and secret, read at most once per `SECRET_TTL`.
fn value(i: &InjectHeader) -> Result<HeaderValue, InjectError> {
    let source = match (&i.secret_env, &i.secret_file) {
        (Some(var), _) => format!("env:{var}"),
        (None, Some(path)) => format!("file:{}", path.display()),
        (None, None) => String::new(),
    };
    let key = (i.header.clone(), i.prefix.clone(), source);
    let now = Instant::now();
    if let Some((at, v)) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if now.duration_since(*at) < SECRET_TTL {
            return Ok(v.clone());
        }
    }
    let mut v = HeaderValue::from_str(&format!("{}{}", i.prefix, secret(i)?)).map_err(|_| {
        InjectError::BadValue {
            header: i.header.clone(),
        }
    })?;
    v.set_sensitive(true);
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (now, v.clone()));
    Ok(v)
}

/// Reads the secret of `i` from its file or the daemon's environment.
fn secret(i: &InjectHeader) -> Result<String, InjectError> {
    if let Some(var) = &i.secret_env {
        return std::env::var(var).map_err(|_| InjectError::MissingEnv {
            header: i.header.clone(),
            var: var.clone(),
        });
    }
    let path = i.secret_file.as_deref().expect("checked: env or file");
    let s = std::fs::read_to_string(path).map_err(|source| InjectError::File {
        header: i.header.clone(),
        path: path.display().to_string(),
        source,
    })?;
    Ok(s.strip_suffix('\n').unwrap_or(&s).to_owned())
}

/// Replaces each injected header: the agent's copies are removed, the daemon's value set.
/// Returns the names injected.
pub fn apply(headers: &mut HeaderMap, inject: &[InjectHeader]) -> Result<Vec<String>, InjectError> {
    let mut names = Vec::with_capacity(inject.len());
    for i in inject {
        let name = HeaderName::from_bytes(i.header.as_bytes()).expect("checked when loading");
        let v = value(i)?;
        headers.remove(&name);
        headers.insert(name, v);
        names.push(i.header.clone());
    }
    Ok(names)
}

/// Why a request the policy allows is refused anyway because of what its rule injects:
/// `TRACE` echoes the request — injected secrets included — back to the agent.
pub fn refused_method(method: &http::Method, inject: &[InjectHeader]) -> Option<String> {
    (method == http::Method::TRACE && !inject.is_empty()).then(|| {
        let names: Vec<&str> = inject.iter().map(|i| i.header.as_str()).collect();
        format!(
            "TRACE is refused on a request whose rule injects headers ({}): the server would echo them to the agent",
            names.join(", ")
        )
    })
}

/// Why an `Upgrade` a rule's `allow_upgrade` lets through is still refused: only WebSocket
/// is let through. After the switch the connection is a tunnel the policy cannot see into;
/// for WebSocket that is what the operator allowed, but `h2c` (HTTP/2 in the clear) would
/// carry requests — `DELETE /admin` to any host — that no rule ever checks.
pub fn refused_upgrade(upgrade: &http::HeaderValue) -> Option<String> {
    let value = String::from_utf8_lossy(upgrade.as_bytes());
    let websocket = value.split(',').all(|p| {
        let name = p.trim().split('/').next().unwrap_or("");
        name.eq_ignore_ascii_case("websocket")
    });
    (!websocket).then(|| {
        format!("upgrade to {:?} refused: only websocket is let through (requests inside another protocol would not be checked)", value.trim())
    })
}

/// End-to-end headers a `Connection` token cannot make hop-by-hop: the host and the
/// framing and meaning of the body, credentials.
fn end_to_end(n: &HeaderName) -> bool {
    n == header::HOST
        || n == header::CONTENT_LENGTH
        || n == header::CONTENT_TYPE
        || n == header::CONTENT_ENCODING
        || n == header::CONTENT_RANGE
        || n == header::AUTHORIZATION
        || n == header::COOKIE
        || n == header::SET_COOKIE
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::PROXY_AUTHENTICATE
        || n == header::PROXY_AUTHORIZATION
        || n == header::TE
        || n == header::TRAILER
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == "keep-alive"
        || n == "proxy-connection"
}

/// Removes hop-by-hop headers (and those the `Connection` header names, except `end_to_end`
/// ones: `Connection: host` must not take the Host away) before forwarding. Injected headers
/// are set after this, so a `Connection` token cannot remove them either.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names instead of a lookup per kind.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !end_to_end(n))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_agents_copy_and_marks_it_sensitive() {
        let mut h = HeaderMap::new();
        h.append("authorization", "Bearer agent-guess".parse().unwrap());
        h.append("Authorization", "Basic x".parse().unwrap());
        std::env::set_var("INJECT_TEST_TOKEN", "s3cret");
        let i = InjectHeader {
            header: "Authorization".into(),
            prefix: "Bearer ".into(),
            secret_file: None,
            secret_env: Some("INJECT_TEST_TOKEN".into()),
        };
        let names = apply(&mut h, std::slice::from_ref(&i)).unwrap();
        assert_eq!(names, ["Authorization"]);
        let all: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0], "Bearer s3cret");
        assert!(all[0].is_sensitive());
        let missing = InjectHeader {
            secret_env: Some("INJECT_TEST_UNSET_VAR".into()),
            ..i
        };
        assert!(matches!(
            apply(&mut h, &[missing]),
            Err(InjectError::MissingEnv { .. })
        ));
    }

    #[test]
    fn a_rotated_secret_file_is_picked_up_within_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first\n").unwrap();
        let i = InjectHeader {
            header: "X-Api-Key".into(),
            prefix: String::new(),
            secret_file: Some(file.clone()),
            secret_env: None,
        };
        let mut h = HeaderMap::new();
        apply(&mut h, std::slice::from_ref(&i)).unwrap();
        assert_eq!(h["x-api-key"], "first");
        std::fs::write(&file, "second\n").unwrap();
        std::thread::sleep(SECRET_TTL + Duration::from_millis(50));
        apply(&mut h, std::slice::from_ref(&i)).unwrap();
        assert_eq!(h["x-api-key"], "second");
        assert_eq!(h.get_all("x-api-key").iter().count(), 1);
    }

    #[test]
    fn requests_without_hop_by_hop_headers_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert("accept", "*/*".parse().unwrap());
        h.insert("x-request-id", "7".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn connection_cannot_name_end_to_end_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "Host, content-length, Authorization, content-type, content-encoding, x-hop"
                .parse()
                .unwrap(),
        );
        for k in [
            "host",
            "content-length",
            "authorization",
            "content-type",
            "content-encoding",
            "x-hop",
        ] {
            h.insert(k, "1".parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "authorization",
                "content-encoding",
                "content-length",
                "content-type",
                "host"
            ]
        );
    }

    #[test]
    fn only_websocket_upgrades_pass() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        for ok in ["websocket", "WebSocket", " websocket ", "websocket/13"] {
            assert_eq!(refused_upgrade(&v(ok)), None, "{ok}");
        }
        for no in ["h2c", "websocket, h2c", "TLS/1.2", ""] {
            assert!(refused_upgrade(&v(no)).is_some(), "{no}");
        }
    }

    #[test]
    fn trace_is_refused_when_the_rule_injects() {
        let i = InjectHeader {
            header: "Authorization".into(),
            prefix: String::new(),
            secret_file: None,
            secret_env: Some("X".into()),
        };
        let reason = refused_method(&http::Method::TRACE, std::slice::from_ref(&i));
        assert!(reason.is_some_and(|r| r.contains("TRACE")));
        assert_eq!(refused_method(&http::Method::TRACE, &[]), None);
        assert_eq!(refused_method(&http::Method::GET, &[i]), None);
    }
}
