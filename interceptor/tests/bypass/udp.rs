//! UDP: allowed flows go through; every other way of sending (connect, sendto, sendmsg,
//! v4-mapped, IPv6) to an unlisted port is denied.

use super::*;

root_test!(udp_allowed_flow_goes_through, {
    let peer = UdpPeer::start("127.0.53.6");
    let env = Env::new();
    let port = peer.echo_port.to_string();
    let p = env.policy("p.yaml", &policy(&peer.ip, peer.echo_port, 1, ""));
    for mode in ["sendto", "connect", "sendmsg"] {
        let r = attempt(&env, &p, None, &["udp", mode, "4", &peer.ip, &port, mode]);
        assert_eq!(r["reply"], format!("echo:{mode}"), "{r}");
    }
    assert_eq!(peer.seen().len(), 3);
});

/// UDP to a port the policy does not list, for each way of sending.
fn udp_denied(mode: &str, family: &str, ip: &str) {
    let peer = UdpPeer::start(ip);
    let env = Env::new();
    // The policy allows UDP to the DNS port only; the echo port is not listed.
    let p = env.policy("p.yaml", &policy(&peer.ip, 53, 1, ""));
    let port = peer.echo_port.to_string();
    let r = attempt(
        &env,
        &p,
        None,
        &["udp", mode, family, &peer.ip, &port, "leak"],
    );
    denied_eperm(&r, &format!("UDP {mode} ({family}) to an unlisted port"));
    assert!(
        peer.seen().is_empty(),
        "datagram arrived: {:?}",
        peer.seen()
    );
}

root_test!(
    udp_connect_and_send_to_arbitrary_port_is_denied,
    udp_denied("connect", "4", "127.0.53.7")
);
root_test!(
    udp_sendto_arbitrary_port_is_denied,
    udp_denied("sendto", "4", "127.0.53.8")
);
root_test!(
    udp_sendmsg_arbitrary_port_is_denied,
    udp_denied("sendmsg", "4", "127.0.53.9")
);
root_test!(
    udp_v4_mapped_arbitrary_port_is_denied,
    udp_denied("sendto", "mapped", "127.0.53.10")
);

root_test!(udp_ipv6_is_denied_and_ipv6_dns_is_proxied, {
    let peer = UdpPeer::start("::1");
    let env = Env::new();
    // ::1 is the resolver; its echo port is not an allowed UDP destination.
    let p = env.policy("p.yaml", &policy("::1", 53, 1, ""));
    let port = peer.echo_port.to_string();
    for mode in ["sendto", "connect", "sendmsg"] {
        let r = attempt(&env, &p, None, &["udp", mode, "6", "::1", &port, "leak"]);
        denied_eperm(&r, &format!("UDP {mode} over IPv6"));
    }
    let r = attempt(
        &env,
        &p,
        None,
        &["dns", "sendto", "6", "::1", "v6.example.test"],
    );
    assert_eq!(r["answers"][0], "127.0.0.99", "{r}");
    assert_eq!(
        r["reply_from"], "[::1]:53",
        "recvmsg6 restored the source: {r}"
    );
    assert_eq!(peer.seen(), vec!["dns v6.example.test"]);
    // DNS over IPv6 to a resolver the policy does not list.
    let other = env.policy("o.yaml", &policy("127.0.53.11", 53, 1, ""));
    let r = attempt(
        &env,
        &other,
        None,
        &["dns", "sendto", "6", "::1", "www.example.test"],
    );
    denied_eperm(&r, "DNS to an unlisted ::1");
    assert_eq!(peer.seen().len(), 1);
});
