//! What a request names, in the form the policy decides on and the upstream receives: the
//! host (`Host`, else the URI's authority; port removed, lower case) and the origin-form
//! target (the normalised path of `path.rs` and the query as sent). Requests whose meaning
//! depends on the server are refused here, before the policy.

use http::{header, Request, Uri};

use super::path;

/// The host the request names: `Host`, else the authority of an absolute URI; port
/// removed, lower case, an IPv6 address without its brackets. `Err` (answered 400): a host
/// that is not a DNS name (letters, digits, `-`, `.`, `_`), an IPv4 address or
/// `[IPv6 address]`, optionally followed by `:port` (digits) — anything else (`other.test:\xff`,
/// `[::1]evil.test`, `a b`) is read differently by different servers, and what they read
/// would be forwarded without having been decided on. A `Host` header that is there is
/// always the one checked, never replaced by the URI's authority.
pub(super) fn host<B>(req: &Request<B>) -> Result<Option<String>, String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => String::from_utf8_lossy(h.as_bytes()).into_owned(),
        None => match req.uri().authority() {
            Some(a) => a.as_str().to_owned(),
            None => return Ok(None),
        },
    };
    let bad = || {
        format!("Host {raw:?} is not a host name, IPv4 address or [IPv6 address] with an optional :port")
    };
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let h = if let Some(rest) = raw.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        if !port_ok || addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        addr.to_owned()
    } else {
        let name = match raw.split_once(':') {
            Some((h, p)) if port_ok(p) => h,
            Some(_) => return Err(bad()),
            None => raw.as_str(),
        };
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !name_ok {
            return Err(bad());
        }
        name.to_owned()
    };
    Ok(Some(h.to_ascii_lowercase()))
}

/// The host of an absolute-form request URI, in the form `host` gives (lower case, no
/// brackets), to be compared with it.
pub(super) fn uri_host<B>(req: &Request<B>) -> Option<String> {
    req.uri().host().map(|h| {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
            .to_ascii_lowercase()
    })
}

/// The normalised path and the origin-form URI to send upstream, or why the request is
/// refused (answered 400): more than one `Host` (the policy would decide on the first, a
/// server may use the last — RFC 9112 §3.2 demands 400), a path `path::normalize` refuses,
/// or a method with lower-case letters — methods are case-sensitive (RFC 9110 §9.1), but
/// some servers upper-case them, and a rule denying DELETE must not be sidestepped with
/// `delete`.
pub(super) fn origin_form<B>(req: &Request<B>) -> Result<(String, Uri), String> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(format!(
            "the request has {hosts} Host headers; servers disagree on which one counts, so send exactly one"
        ));
    }
    let (method, uri) = (req.method(), req.uri());
    if method.as_str().bytes().any(|c| c.is_ascii_lowercase()) {
        return Err(format!(
            "method {:?} has lower-case letters; methods are case-sensitive and servers disagree on them, so send it in upper case",
            method.as_str()
        ));
    }
    let p = path::normalize(uri.path())
        .map_err(|e| e.to_string())?
        .into_owned();
    let target = match uri.query() {
        Some(q) => format!("{p}?{q}"),
        None => p.clone(),
    };
    let target = Uri::try_from(target)
        .map_err(|e| format!("the normalised request target is not a valid URI: {e}"))?;
    Ok((p, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_normalises_the_path_and_keeps_the_query() {
        let req = |m: &str, uri: &str| Request::builder().method(m).uri(uri).body(()).unwrap();
        let uri = "http://api.test/public/%61//b/./c?x=%2F";
        let (p, t) = origin_form(&req("GET", uri)).unwrap();
        assert_eq!(
            (p.as_str(), t.to_string().as_str()),
            ("/public/a/b/c", "/public/a/b/c?x=%2F")
        );
        assert!(origin_form(&req("delete", uri))
            .unwrap_err()
            .contains("upper case"));
        assert!(origin_form(&req("GET", "/a%2Fb"))
            .unwrap_err()
            .contains("encoded separator"));
        let mut two = req("GET", "/");
        two.headers_mut()
            .append(header::HOST, "api.test".parse().unwrap());
        assert!(origin_form(&two).is_ok());
        two.headers_mut()
            .append(header::HOST, "other.test".parse().unwrap());
        assert!(origin_form(&two).unwrap_err().contains("2 Host headers"));
    }

    fn host_of<B>(req: &Request<B>) -> Option<String> {
        host(req).unwrap()
    }

    #[test]
    fn host_without_port_lower_case() {
        let r = Request::get("/")
            .header("host", "API.test:8080")
            .body(())
            .unwrap();
        assert_eq!(host_of(&r).as_deref(), Some("api.test"));
        let r = Request::get("/")
            .header("host", "[::1]:80")
            .body(())
            .unwrap();
        assert_eq!(host_of(&r).as_deref(), Some("::1"));
        let r = Request::get("http://Example.test:1/x").body(()).unwrap();
        assert_eq!(host_of(&r).as_deref(), Some("example.test"));
    }

    #[test]
    fn bracketed_hosts_are_an_ipv6_address_and_a_port_only() {
        let with = |h: &str| host(&Request::get("/").header("host", h).body(()).unwrap());
        for bad in [
            "[127.0.0.6]evil.test",
            "[::1]evil.test",
            "[::1]:",
            "[::1]:80x",
            "[::1]:80:81",
            "[evil.test]:80",
            "[::1",
            "[]",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
        assert_eq!(with("[::1]:8080"), Ok(Some("::1".into())));
        assert_eq!(
            with("[::FFFF:127.0.0.6]"),
            Ok(Some("::ffff:127.0.0.6".into()))
        );
        assert_eq!(with("api.test:80"), Ok(Some("api.test".into())));
        assert_eq!(with("127.0.0.9"), Ok(Some("127.0.0.9".into())));
        assert_eq!(with("my_host.test"), Ok(Some("my_host.test".into())));
        // Anything a server may cut or read differently is refused.
        for bad in [
            "other.test:\u{ff}",
            "other.test:",
            "other.test:80:81",
            "other.test:123456",
            "a b",
            "api.test,other.test",
            "user@api.test",
            "api.test/x",
            "",
        ] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        let raw = http::HeaderValue::from_bytes(b"other.test:\xff").unwrap();
        let r = Request::get("http://api.test/x")
            .header("host", raw)
            .body(())
            .unwrap();
        assert!(
            host(&r).is_err(),
            "a Host that is not text is not replaced by the URI"
        );
        // The URI's host compares with Host's: brackets removed on both sides.
        let r = Request::get("http://[::FFFF:127.0.0.6]/x")
            .header("host", "[::ffff:127.0.0.6]")
            .body(())
            .unwrap();
        assert_eq!(uri_host(&r), host(&r).unwrap());
        let r = Request::get("http://api.test:81/x").body(()).unwrap();
        assert_eq!(uri_host(&r).as_deref(), Some("api.test"));
    }
}
