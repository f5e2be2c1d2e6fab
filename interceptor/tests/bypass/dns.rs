//! DNS: proxied, audited and answered from the real resolver; names and resolvers outside
//! the policy refused.

use super::*;

/// A DNS/UDP peer on `ip`, a fresh test environment and the usual policy naming the peer as
/// the resolver.
fn resolver_and_policy(ip: &str) -> (UdpPeer, Env, std::path::PathBuf) {
    let peer = UdpPeer::start(ip);
    let env = Env::new();
    let p = env.policy("p.yaml", &policy(&peer.ip, peer.echo_port, 1, ""));
    (peer, env, p)
}

root_test!(dns_sendto_is_proxied_audited_and_reply_source_restored, {
    let (peer, env, p) = resolver_and_policy("127.0.53.1");
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "sendto", "4", &peer.ip, "www.example.test"],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["rcode"], 0);
    assert_eq!(
        r["answers"][0], "127.0.0.99",
        "the real server's answer: {r}"
    );
    // recvmsg4 turned the proxy's source back into the resolver the client asked.
    assert_eq!(r["reply_from"], format!("{}:53", peer.ip));
    assert_eq!(peer.seen(), vec!["dns www.example.test"]);
    let recs = records(&env, "dns");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(rec["qname"], "www.example.test");
    assert_eq!(rec["qtype"], "A");
    assert_eq!(rec["rcode"], "NOERROR");
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["resolver"], format!("{}:53", peer.ip));
    assert_eq!(rec["identity"]["pid"], r["pid"], "{rec}");
});

root_test!(dns_connected_socket_and_v4_mapped_are_proxied, {
    let (peer, env, p) = resolver_and_policy("127.0.53.2");
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "connect", "4", &peer.ip, "a.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(
        r["peer"],
        format!("{}:53", peer.ip),
        "getpeername shows the resolver"
    );
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "connect", "mapped", &peer.ip, "b.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(r["reply_from"], format!("[::ffff:{}]:53", peer.ip));
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "sendmsg", "mapped", &peer.ip, "c.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(peer.seen().len(), 3);
    let names: Vec<Value> = records(&env, "dns")
        .iter()
        .map(|r| r["qname"].clone())
        .collect();
    assert_eq!(
        names,
        ["a.example.test", "b.example.test", "c.example.test"]
    );
});

root_test!(
    dns_name_outside_policy_is_refused_and_never_reaches_the_resolver,
    {
        let (peer, env, p) = resolver_and_policy("127.0.53.3");
        let r = attempt(
            &env,
            &p,
            None,
            &["dns", "sendto", "4", &peer.ip, "exfil.evil.org"],
        );
        assert_eq!(r["rcode"], 5, "REFUSED: {r}");
        assert!(peer.seen().is_empty(), "{:?}", peer.seen());
        let rec = &records(&env, "dns")[0];
        assert_eq!(
            (rec["decision"].as_str(), rec["rcode"].as_str()),
            (Some("deny"), Some("REFUSED"))
        );
        assert_eq!(rec["qname"], "exfil.evil.org");
    }
);

root_test!(dns_to_a_resolver_not_in_the_policy_is_denied, {
    let allowed = UdpPeer::start("127.0.53.4");
    let other = UdpPeer::start("127.0.53.5");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy(&allowed.ip, allowed.echo_port, 1, ""));
    for mode in ["sendto", "connect", "sendmsg"] {
        let r = attempt(
            &env,
            &p,
            None,
            &["dns", mode, "4", &other.ip, "www.example.test"],
        );
        denied_eperm(&r, &format!("DNS {mode} to an unlisted resolver"));
    }
    assert!(other.seen().is_empty());
});

root_test!(dns_flood_to_a_silent_resolver_is_bounded_and_answered, {
    // An agent sends 2,000 queries at once for a name the resolver never answers. The proxy
    // forwards at most MAX_IN_FLIGHT of them (each holds a socket until the 5 s timeout),
    // answers the rest SERVFAIL at once, audits every answer, and serves again afterwards.
    let (peer, env, p) = resolver_and_policy("127.0.53.23");
    let r = attempt(
        &env,
        &p,
        None,
        &["dnsflood", &peer.ip, "silent.example.test", "2000"],
    );
    assert_eq!(
        r["parent"], "interceptor",
        "the flood's parent is the daemon: {r}"
    );
    let servfail = r["rcodes"]["2"].as_u64().unwrap_or(0);
    assert!(
        servfail > 0,
        "beyond the limit the proxy answers SERVFAIL at once: {r}"
    );
    let grown = r["peak_fds"].as_u64().unwrap() - r["base_fds"].as_u64().unwrap();
    let limit = interceptor::dns::MAX_IN_FLIGHT as u64;
    assert!(
        grown <= limit + 32,
        "the daemon opened {grown} descriptors during the flood (limit {limit}): {r}"
    );
    assert_eq!(
        r["after_rcode"], 0,
        "served again once the flood timed out: {r}"
    );
    let recs = records(&env, "dns");
    let overloaded = recs
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("overloaded"))
        })
        .count() as u64;
    assert!(
        overloaded >= servfail,
        "every SERVFAIL the agent got is audited ({overloaded} records, {servfail} replies)"
    );
    let forwarded = peer
        .seen()
        .iter()
        .filter(|l| *l == "dns silent.example.test")
        .count() as u64;
    assert!(
        forwarded <= limit,
        "at most {limit} queries reached the resolver, not {forwarded}"
    );
});
