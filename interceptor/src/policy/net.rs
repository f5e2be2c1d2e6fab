//! `Cidr` and `HostName`: the address forms a destination can name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject, StringValidation};
use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An IPv4 or IPv6 network. A bare address means a /32 or /128; host bits
/// are cleared (`10.1.2.3/8` is `10.0.0.0/8`); an IPv4-mapped IPv6 network
/// with prefix >= 96 (`::ffff:10.0.0.0/104`) is turned into its IPv4 network,
/// because destinations are normalised to IPv4 before matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let t = text.trim();
        let bad = |why: String| format!("{text:?} is not a valid CIDR ({why})");
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            if addr.is_empty() {
                bad("missing address".to_owned())
            } else if looks_like_dns_name(addr) {
                bad(format!(
                    "{addr:?} is not an IP address; use `host:` for DNS names"
                ))
            } else {
                bad(format!("{addr:?} is not an IPv4 or IPv6 address"))
            }
        })?;
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let p = p.trim();
                let ok = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                match p.parse::<u8>() {
                    Ok(n) if ok && n <= max => n,
                    _ => return Err(bad(format!("prefix length must be 0..={max} for {family}"))),
                }
            }
        };
        // Cannot fail: prefix checked above.
        let net = IpNet::new(ip, prefix).map_err(|e| bad(e.to_string()))?;
        Ok(Cidr::from_net(net))
    }

    /// Normalises: clears host bits; IPv4-mapped /96+ becomes IPv4.
    pub fn from_net(net: IpNet) -> Cidr {
        let net = net.trunc();
        if let IpNet::V6(v6) = net {
            if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return Cidr(IpNet::V4(n.trunc()));
                }
            }
        }
        Cidr(net)
    }

    pub fn net(&self) -> IpNet {
        self.0
    }

    /// Whether `ip` is inside. `ip` should already be canonical
    /// (`IpAddr::to_canonical`), so that `::ffff:a.b.c.d` matches IPv4 networks.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

fn looks_like_dns_name(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_alphabetic()) && !s.contains(':')
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Ipv4Addr> for Cidr {
    fn from(a: Ipv4Addr) -> Cidr {
        Cidr(IpNet::V4(Ipv4Net::from(a)))
    }
}

impl From<Ipv6Addr> for Cidr {
    fn from(a: Ipv6Addr) -> Cidr {
        Cidr::from_net(IpNet::V6(Ipv6Net::from(a)))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(
            "a CIDR such as 10.0.0.0/8 or fd00::/8",
            Cidr::parse,
        ))
    }
}

/// A DNS name, stored lower-case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    pub fn parse(text: &str) -> Result<HostName, String> {
        let t = text.trim();
        let bad = |why: &str| format!("{text:?} is not a valid DNS name ({why})");
        if t.parse::<IpAddr>().is_ok() || t.parse::<IpNet>().is_ok() {
            return Err(format!(
                "{text:?} is an IP address, not a DNS name; use `cidr: {t}` instead"
            ));
        }
        let name = t.strip_suffix('.').unwrap_or(t);
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > 253 {
            return Err(bad("longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(bad("empty label"));
            }
            if label.len() > 63 {
                return Err(bad("label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label cannot start or end with '-'"));
            }
        }
        Ok(HostName(name.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HostName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(
            "a DNS name such as api.example.com",
            HostName::parse,
        ))
    }
}

/// Visitor for string newtypes validated by a parse function. The error is
/// raised inside `visit_str`, so serde_yaml attaches the scalar's location.
pub(crate) struct StrVisitor<T>(pub &'static str, pub fn(&str) -> Result<T, String>);

impl<'de, T> Visitor<'de> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

pub(crate) fn string_schema(description: &str, pattern: Option<&str>) -> Schema {
    SchemaObject {
        metadata: Some(Box::new(Metadata {
            description: Some(description.to_owned()),
            ..Default::default()
        })),
        instance_type: Some(InstanceType::String.into()),
        string: Some(Box::new(StringValidation {
            min_length: Some(1),
            pattern: pattern.map(str::to_owned),
            ..Default::default()
        })),
        ..Default::default()
    }
    .into()
}

impl JsonSchema for Cidr {
    fn schema_name() -> String {
        "Cidr".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        string_schema(
            "An IPv4 or IPv6 network in CIDR notation (10.0.0.0/8, fd00::/8). A bare address \
             means /32 (IPv4) or /128 (IPv6). IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) \
             match IPv4 networks.",
            None,
        )
    }
}

impl JsonSchema for HostName {
    fn schema_name() -> String {
        "HostName".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        string_schema(
            "A DNS name. It is resolved when the policy is loaded and every dns_refresh_secs; \
             the entry matches the addresses it resolved to. A name that does not resolve \
             matches nothing.",
            Some(
                r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$",
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse::<IpAddr>().unwrap().to_canonical()
    }

    #[test]
    fn cidr_parse() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("127.0.0.2").unwrap().to_string(),
            "127.0.0.2/32"
        );
        assert_eq!(Cidr::parse(" ::1 ").unwrap().to_string(), "::1/128");
        assert_eq!(Cidr::parse("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            Cidr::parse("::ffff:10.1.0.0/112").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(
            Cidr::parse("::ffff:127.0.0.2").unwrap().to_string(),
            "127.0.0.2/32"
        );
    }

    #[test]
    fn cidr_errors() {
        let cases = [
            (
                "10.0.0.0/33",
                "\"10.0.0.0/33\" is not a valid CIDR (prefix length must be 0..=32 for IPv4)",
            ),
            ("::/129", "prefix length must be 0..=128 for IPv6"),
            ("10.0.0.0/", "prefix length must be 0..=32"),
            ("10.0.0.0/-1", "prefix length must be 0..=32"),
            ("10.0.0.0/+8", "prefix length must be 0..=32"),
            (
                "10.0.0.256/8",
                "\"10.0.0.256\" is not an IPv4 or IPv6 address",
            ),
            ("example.com", "use `host:` for DNS names"),
            ("/8", "missing address"),
        ];
        for (text, want) in cases {
            let err = Cidr::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn cidr_contains() {
        let v4 = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(v4.contains(&ip("10.20.30.40")));
        assert!(v4.contains(&ip("::ffff:10.20.30.40")));
        assert!(!v4.contains(&ip("11.0.0.1")));
        assert!(!v4.contains(&ip("fd00::1")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(&ip("fd12::1")));
        assert!(!v6.contains(&ip("10.0.0.1")));
        assert!(!v6.contains(&ip("fe80::1")));
    }

    #[test]
    fn host_names() {
        assert_eq!(
            HostName::parse("API.Example.com.").unwrap().as_str(),
            "api.example.com"
        );
        assert_eq!(HostName::parse("localhost").unwrap().as_str(), "localhost");
        assert_eq!(
            HostName::parse("_svc.internal").unwrap().as_str(),
            "_svc.internal"
        );
        for (text, want) in [
            ("10.0.0.1", "use `cidr: 10.0.0.1` instead"),
            ("::1", "is an IP address"),
            ("10.0.0.0/8", "is an IP address"),
            ("", "empty"),
            ("a..b", "empty label"),
            ("a b", "only letters"),
            ("-a.b", "cannot start or end with '-'"),
            ("https://x.y", "only letters"),
        ] {
            let err = HostName::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert!(HostName::parse(&"a".repeat(64)).unwrap_err().contains("63"));
        assert!(HostName::parse(&"a.".repeat(130))
            .unwrap_err()
            .contains("253"));
    }

    #[test]
    fn yaml_errors_carry_location() {
        let err = serde_yaml::from_str::<Cidr>("\"10.0.0.0/33\"").unwrap_err();
        assert!(err.to_string().contains("prefix length"), "{err}");
        assert_eq!(err.location().unwrap().line(), 1);
        let err = serde_yaml::from_str::<Cidr>("[1]").unwrap_err();
        assert!(err.to_string().contains("expected a CIDR"), "{err}");
    }
}
