//! DNS names in destinations: unresolved names, fake and real resolution, refreshes.

use std::net::IpAddr;

use super::*;

#[test]
fn unresolved_names_match_nothing() {
    let src = "version: 1\nrules:\n  - {name: api, action: allow, to: [{host: api.example.invalid, ports: 443}, {host: API.example.invalid.}]}\n  - {name: other, action: allow, to: [{host: other.invalid}]}\n";
    let mut p = policy(src);
    assert_eq!(p.host_names(), ["api.example.invalid", "other.invalid"]);
    assert_eq!(p.host_addrs("api.example.invalid"), Some(&[][..]));
    assert!(!decide(&p, "192.0.2.10:443").is_allow());

    // Fake resolver: never touches the network.
    let res = p.resolve_names_with(|name| match name {
        "api.example.invalid" => Ok(vec![
            "192.0.2.10".parse().unwrap(),
            "::ffff:192.0.2.11".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        ]),
        _ => Err("no such host".into()),
    });
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        res,
        [
            NameResolution {
                name: "api.example.invalid".into(),
                result: Ok(vec![ip("192.0.2.10"), ip("192.0.2.11")]),
            },
            NameResolution {
                name: "other.invalid".into(),
                result: Err("no such host".into()),
            },
        ]
    );
    assert_eq!(decide(&p, "192.0.2.10:443").rule.as_deref(), Some("api"));
    assert_eq!(
        decide(&p, "[::ffff:192.0.2.11]:443").rule.as_deref(),
        Some("api")
    );
    assert_eq!(
        decide(&p, "192.0.2.11:80").rule.as_deref(),
        Some("api"),
        "second entry has no ports"
    );
    assert!(!decide(&p, "192.0.2.12:443").is_allow());

    // A refresh replaces the addresses; a failure clears them (fail closed).
    p.resolve_names_with(|_| Ok(vec![ip("192.0.2.99")]));
    assert!(!decide(&p, "192.0.2.10:443").is_allow());
    assert!(decide(&p, "192.0.2.99:443").is_allow());
    let res = p.resolve_names_with(|_| Ok(vec![]));
    assert_eq!(res[0].result, Err("resolved to no addresses".into()));
    assert!(!decide(&p, "192.0.2.99:443").is_allow());
}

#[test]
fn localhost_resolves_to_loopback() {
    // The only name the tests resolve for real (from /etc/hosts).
    let mut p = policy(
        "version: 1\nrules: [{name: lo, action: allow, to: [{host: localhost, ports: 443}]}]\n",
    );
    let res = p.resolve_names();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].name, "localhost");
    let addrs = res[0].result.clone().expect("localhost resolves");
    assert!(!addrs.is_empty());
    let loopback = [
        "127.0.0.1".parse::<IpAddr>().unwrap(),
        "::1".parse().unwrap(),
    ];
    assert!(addrs.iter().any(|a| loopback.contains(a)), "{addrs:?}");
    assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
    for a in &addrs {
        let d = evaluate(&p, &req(subject(), &SocketAddr::new(*a, 443).to_string()));
        assert_eq!(d.rule.as_deref(), Some("lo"), "{a}");
        let d = evaluate(&p, &req(subject(), &SocketAddr::new(*a, 80).to_string()));
        assert!(!d.is_allow());
    }
}
