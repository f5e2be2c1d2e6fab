//! The agent's TLS server name (SNI) in canonical form, checked before the handshake.
//!
//! The name is read by rustls' own rules (`ServerName::try_from`, what its server side
//! applies to the ClientHello): a DNS name (one trailing dot allowed and removed, at most
//! 253 bytes, no empty label), compared and keyed in lower case, or an IP address literal
//! (kept as the canonical address, so `::ffff:127.0.0.1` is `127.0.0.1`). Anything else is
//! refused before rustls sees it (rustls would log the whole name at WARN per
//! connection), and a certificate is minted, and cached, only for a canonical name the
//! service serves: however the agent spells the names, at most one certificate per host
//! name and one for the address.

use std::fmt;
use std::net::IpAddr;

use rustls::pki_types::ServerName;

use crate::policy::HttpService;

/// A server name as the CA mints it and keys its cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Canonical {
    /// Lower case, no trailing dot.
    Dns(String),
    /// `IpAddr::to_canonical` of the address.
    Ip(IpAddr),
}

impl fmt::Display for Canonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Canonical::Dns(n) => f.write_str(n),
            Canonical::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl From<IpAddr> for Canonical {
    fn from(ip: IpAddr) -> Self {
        Canonical::Ip(ip.to_canonical())
    }
}

/// The canonical form of `raw`, or why it is not a server name.
pub fn canonical(raw: &str) -> Result<Canonical, String> {
    match ServerName::try_from(raw) {
        Ok(ServerName::DnsName(d)) => Ok(Canonical::Dns(d.as_ref().to_ascii_lowercase())),
        Ok(ServerName::IpAddress(ip)) => Ok(IpAddr::from(ip).into()),
        Ok(_) | Err(_) => Err(format!(
            "server name {} is not a valid DNS name or IP address",
            shown(raw)
        )),
    }
}

/// The name the CA presents (and the upstream is verified for) on an intercepted
/// connection of `service`: the agent's SNI in canonical form, which the service must
/// serve, or the service's address when there is no SNI. `Err`: why the connection is
/// refused before the handshake.
pub fn for_service(
    service: &str,
    svc: &HttpService,
    sni: Option<&str>,
) -> Result<Canonical, String> {
    let Some(raw) = sni else {
        return Ok(svc.address.into());
    };
    let name = canonical(raw).map_err(|e| format!("SNI refused: {e}"))?;
    if !svc.serves(&name.to_string()) {
        return Err(format!(
            "forged host: SNI {} is not served at {}:{} (service {service} serves {})",
            shown(raw),
            svc.address,
            svc.port,
            svc.hosts.join(", ")
        ));
    }
    Ok(name)
}

const MAX_SHOWN: usize = 64;

/// `raw` cut after 64 characters (an SNI can be kilobytes long), for audit records.
pub fn cut(raw: &str) -> &str {
    raw.char_indices()
        .nth(MAX_SHOWN)
        .map_or(raw, |(at, _)| &raw[..at])
}

/// `raw` for messages: quoted, cut after 64 characters, with its length when cut.
pub fn shown(raw: &str) -> String {
    let c = cut(raw);
    if c.len() == raw.len() {
        format!("{raw:?}")
    } else {
        format!("{c:?}… ({} bytes)", raw.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_by_rustls_rules() {
        let dns = |s: &str| Ok(Canonical::Dns(s.into()));
        assert_eq!(canonical("api.test"), dns("api.test"));
        assert_eq!(canonical("API.Test."), dns("api.test"), "one trailing dot");
        for bad in [
            "api.test..",
            "api.test...",
            "..",
            ".",
            "",
            "a b.test",
            "[::1]",
            "api.test:443",
        ] {
            assert!(canonical(bad).is_err(), "{bad:?}");
        }
        let long = format!("api.test{}", ".".repeat(15000));
        let err = canonical(&long).unwrap_err();
        assert!(err.len() < 200, "the name is cut in messages: {err}");
        assert!(canonical(&"a".repeat(300)).is_err(), "longer than 253");
        let v4 = Ok(Canonical::Ip("127.0.0.51".parse().unwrap()));
        for spelling in ["127.0.0.51", "::ffff:127.0.0.51", "0:0::ffff:7f00:33"] {
            assert_eq!(canonical(spelling), v4, "{spelling}");
        }
        assert_eq!(canonical("::1").unwrap().to_string(), "::1");
        assert_eq!(shown("api.test"), "\"api.test\"");
        assert!(shown(&long).ends_with("(15008 bytes)"), "{}", shown(&long));
    }

    #[test]
    fn names_a_service_serves() {
        let svc: HttpService =
            serde_yaml::from_str("{address: 127.0.0.51, port: 443, hosts: [api.test]}").unwrap();
        let f = |s: Option<&str>| for_service("api", &svc, s).map(|n| n.to_string());
        assert_eq!(f(None).unwrap(), "127.0.0.51");
        assert_eq!(f(Some("API.test.")).unwrap(), "api.test");
        assert_eq!(f(Some("::ffff:127.0.0.51")).unwrap(), "127.0.0.51");
        let e = f(Some(&format!("api.test{}", ".".repeat(15000)))).unwrap_err();
        assert!(e.starts_with("SNI refused") && e.len() < 200, "{e}");
        let e = f(Some("other.test")).unwrap_err();
        assert!(e.starts_with("forged host"), "{e}");
    }
}
