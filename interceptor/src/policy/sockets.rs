//! `sockets:` and `dns:` sections: which socket kinds a cgroup may create, which UDP
//! destinations are allowed, and the DNS resolvers and names the DNS proxy serves.
//!
//! The kernel enforces these (see `interceptor-ebpf/src/{sockets,udp}.rs`), so they are
//! compiled into plain tables here (`socket_bits`, `udp_entries`, `dns_resolvers`); the DNS
//! proxy asks `evaluate_dns` for each query. All functions are pure.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::de::{checked_list, Checked};
use super::eval::{Decision, Verdict};
use super::glob::Pattern;
use super::net::Cidr;
use super::ports::PortSet;
use super::scalars::Action;

/// Most exact (address, port) pairs the UDP allow list may expand to (kernel map size).
pub const MAX_UDP_ENTRIES: usize = 4096;
/// The DNS port; only this port of a resolver is proxied.
pub const DNS_PORT: u16 = 53;

/// Socket kinds and UDP. Absent: raw and packet sockets denied, no UDP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sockets {
    /// Raw IPv4/IPv6 sockets (`SOCK_RAW`) and ICMP "ping" sockets (default: deny).
    #[serde(default)]
    pub raw: Action,
    /// `AF_PACKET` sockets (default: deny).
    #[serde(default)]
    pub packet: Action,
    /// Per-cgroup exceptions; the first entry whose `cgroup` glob matches decides the kinds it
    /// names; kinds it leaves out keep the defaults above.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "checked_list"
    )]
    pub cgroups: Vec<SocketGrant>,
    /// UDP destinations allowed besides DNS (which `dns:` governs). Everything else: EPERM.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "checked_list"
    )]
    pub udp: Vec<UdpDestination>,
}

/// Socket kinds for the cgroups matching `cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketGrant {
    /// Glob on the cgroup v2 path relative to the cgroup2 mount root, e.g. "/agents/netdiag".
    #[serde(deserialize_with = "super::model::path_glob")]
    pub cgroup: Pattern,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet: Option<Action>,
}

impl Checked for SocketGrant {
    const EXPECTING: &'static str = "a mapping with `cgroup` and `raw` and/or `packet`";
    const EXPECTING_LIST: &'static str = "a list of cgroup grants";
    const LIST: &'static str = "sockets.cgroups";

    fn check(&self) -> Result<(), String> {
        if self.raw.is_none() && self.packet.is_none() {
            return Err("a `sockets.cgroups` entry needs `raw` and/or `packet`".to_owned());
        }
        Ok(())
    }
}

/// One allowed UDP destination: a single address, optionally limited to ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UdpDestination {
    /// One IPv4 or IPv6 address (`/32` or `/128`): the kernel matches UDP destinations exactly.
    pub cidr: Cidr,
    /// Ports this entry is limited to. Absent: all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortSet>,
}

impl Checked for UdpDestination {
    const EXPECTING: &'static str = "a UDP destination mapping (cidr, optional ports)";
    const EXPECTING_LIST: &'static str = "a list of UDP destinations";
    const LIST: &'static str = "sockets.udp";

    fn check(&self) -> Result<(), String> {
        let net = self.cidr.net();
        if net.prefix_len() != net.max_prefix_len() {
            return Err(format!(
                "UDP destination {} is a network; UDP allows single addresses only \
                 (write one `cidr: ADDRESS` entry per host)",
                self.cidr
            ));
        }
        Ok(())
    }
}

/// The DNS proxy: which resolvers the agent may ask, and for which names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Resolver addresses (port 53). UDP DNS to them goes through the interceptor's DNS
    /// proxy, which logs every query; DNS to any other address is denied.
    #[serde(default)]
    pub resolvers: Vec<IpAddr>,
    /// Globs on query names (lower case, no trailing dot), e.g. "*.example.com". Absent:
    /// every name. A query for another name is answered REFUSED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_names: Option<Vec<Pattern>>,
}

/// Allow bits (`interceptor_common::sockets`) for a cgroup path, or for the default when
/// `cgroup` is `None`.
pub fn socket_bits(s: &Sockets, cgroup: Option<&str>) -> u32 {
    let (mut raw, mut packet) = (s.raw, s.packet);
    if let Some(g) = cgroup.and_then(|cg| s.cgroups.iter().find(|g| g.cgroup.is_match(cg))) {
        raw = g.raw.unwrap_or(raw);
        packet = g.packet.unwrap_or(packet);
    }
    let bit = |a: Action, b: u32| if a == Action::Allow { b } else { 0 };
    bit(raw, interceptor_common::sockets::ALLOW_RAW)
        | bit(packet, interceptor_common::sockets::ALLOW_PACKET)
}

/// The UDP allow list as exact (address, port) pairs; port 0 = every port. IPv4-mapped
/// addresses are given as IPv4.
pub fn udp_entries(s: &Sockets) -> Result<Vec<(IpAddr, u16)>, String> {
    let mut out = Vec::new();
    for d in &s.udp {
        let ip = d.cidr.net().addr().to_canonical();
        match &d.ports {
            None => out.push((ip, 0)),
            Some(p) => {
                for &(lo, hi) in p.ranges() {
                    out.extend((lo..=hi).map(|port| (ip, port)));
                    if out.len() > MAX_UDP_ENTRIES {
                        return Err(format!(
                            "sockets.udp expands to more than {MAX_UDP_ENTRIES} address/port \
                             pairs; list fewer ports or leave `ports` out for all ports"
                        ));
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Resolver addresses, canonical (IPv4-mapped → IPv4), deduplicated, in policy order.
pub fn dns_resolvers(d: &Dns) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for r in &d.resolvers {
        let r = r.to_canonical();
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Decides one DNS query name (any case, trailing dot allowed).
pub fn evaluate_dns(d: &Dns, qname: &str) -> Decision {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    match &d.allow_names {
        None => Decision {
            verdict: Verdict::Allow,
            rule: None,
            reason: "dns: every name allowed".to_owned(),
        },
        Some(globs) => match globs.iter().find(|g| g.is_match(&name)) {
            Some(g) => Decision {
                verdict: Verdict::Allow,
                rule: Some(format!("dns.allow_names[{g}]")),
                reason: format!("name matches {g}"),
            },
            None => Decision {
                verdict: Verdict::Deny,
                rule: None,
                reason: "name not in dns.allow_names".to_owned(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn policy(yaml: &str) -> Result<Policy, String> {
        Policy::from_str(yaml, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_deny_everything() {
        let p = policy("version: 1\n").unwrap();
        assert_eq!(socket_bits(&p.sockets(), Some("/a")), 0);
        assert!(udp_entries(&p.sockets()).unwrap().is_empty());
        assert!(dns_resolvers(&p.dns()).is_empty());
    }

    #[test]
    fn cgroup_grants_override_per_kind() {
        let p = policy(
            "version: 1\nsockets:\n  packet: allow\n  cgroups:\n    - cgroup: \"/net/**\"\n      raw: allow\n    - cgroup: \"/**\"\n      packet: deny\n",
        )
        .unwrap();
        let s = p.sockets();
        use interceptor_common::sockets::{ALLOW_PACKET, ALLOW_RAW};
        assert_eq!(socket_bits(&s, None), ALLOW_PACKET);
        assert_eq!(socket_bits(&s, Some("/net/a")), ALLOW_RAW | ALLOW_PACKET);
        assert_eq!(socket_bits(&s, Some("/other")), 0);
    }

    #[test]
    fn udp_expands_ports_and_rejects_networks() {
        let p = policy("version: 1\nsockets:\n  udp:\n    - cidr: 127.0.0.2\n      ports: \"9000-9002\"\n    - cidr: \"::ffff:127.0.0.3\"\n").unwrap();
        let e = udp_entries(&p.sockets()).unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let ip3: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(e, vec![(ip2, 9000), (ip2, 9001), (ip2, 9002), (ip3, 0)]);
        let err = policy("version: 1\nsockets:\n  udp:\n    - cidr: 10.0.0.0/8\n").unwrap_err();
        assert!(
            err.contains("single addresses") && err.contains(":4:"),
            "{err}"
        );
        let big =
            policy("version: 1\nsockets:\n  udp:\n    - cidr: 127.0.0.2\n      ports: 1-5000\n")
                .unwrap_err();
        assert!(big.contains("4096") && big.contains(":2:"), "{big}");
    }

    #[test]
    fn grant_needs_a_kind_and_unknown_fields_fail() {
        let err = policy("version: 1\nsockets:\n  cgroups:\n    - cgroup: /a\n").unwrap_err();
        assert!(err.contains("raw` and/or `packet"), "{err}");
        let err = policy("version: 1\nsockets:\n  rwa: allow\n").unwrap_err();
        assert!(err.contains("rwa"), "{err}");
        let err = policy("version: 1\ndns:\n  resolvers: [not-an-ip]\n").unwrap_err();
        assert!(err.contains("dns"), "{err}");
    }

    /// The `sockets:`/`dns:` example in policies/README.md is valid.
    #[test]
    fn readme_example_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme
            .find("```yaml\nsockets:")
            .expect("README has the example")
            + 8;
        let len = readme[start..].find("```").unwrap();
        let p = policy(&format!("version: 1\n{}", &readme[start..start + len])).unwrap();
        assert_eq!(dns_resolvers(&p.dns()).len(), 2);
        assert_eq!(udp_entries(&p.sockets()).unwrap().len(), 11);
        assert_eq!(
            socket_bits(&p.sockets(), Some("/agents/netdiag")),
            interceptor_common::sockets::ALLOW_RAW
        );
    }

    #[test]
    fn dns_names() {
        let p = policy("version: 1\ndns:\n  resolvers: [127.0.0.2, \"::ffff:127.0.0.2\", \"::1\"]\n  allow_names: [\"*.example.test\", localhost]\n").unwrap();
        let d = p.dns();
        assert_eq!(dns_resolvers(&d).len(), 2);
        assert!(evaluate_dns(&d, "WWW.Example.Test.").is_allow());
        assert!(evaluate_dns(&d, "localhost").is_allow());
        assert!(!evaluate_dns(&d, "example.test").is_allow());
        assert!(!evaluate_dns(&d, "evil.org").is_allow());
        let all = policy("version: 1\ndns:\n  resolvers: [127.0.0.2]\n").unwrap();
        assert!(evaluate_dns(&all.dns(), "anything.org").is_allow());
    }
}
