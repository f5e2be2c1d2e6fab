//! TCP: IPv6 and v4-mapped, io_uring, TCP Fast Open and forged sources all go through the
//! same hooks.

use super::*;

root_test!(
    tcp_ipv6_and_v4_mapped_to_denied_destinations_never_arrive,
    {
        let echo6 = Echo::start("::1");
        let echo4 = Echo::start("127.0.0.2");
        let env = Env::new();
        let p = env.policy("p.yaml", &policy("127.0.53.12", 53, 1, ""));
        let r = attempt(
            &env,
            &p,
            None,
            &["tcp", "6", "::1", &echo6.port().to_string(), "x"],
        );
        assert_eq!(r["ok"], false, "{r}");
        let r = attempt(
            &env,
            &p,
            None,
            &["tcp", "mapped", "127.0.0.2", &echo4.port().to_string(), "x"],
        );
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!((echo6.accepted(), echo4.accepted()), (0, 0));
        let denied = records(&env, "connection");
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(denied.iter().all(|r| r["decision"] == "deny"));
    }
);

root_test!(io_uring_connect_goes_through_the_same_hooks, {
    let echo = Echo::start("127.0.0.2");
    let closed = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.17", 53, echo.port(), ""));
    let r = attempt(
        &env,
        &p,
        None,
        &["iouring", "127.0.0.2", &echo.port().to_string(), "ring"],
    );
    assert_eq!(r["via"], "io_uring");
    assert_eq!(r["reply"], "echo:ring", "{r}");
    assert_eq!(r["peer"], format!("127.0.0.2:{}", echo.port()));
    let r = attempt(
        &env,
        &p,
        None,
        &["iouring", "127.0.0.2", &closed.port().to_string(), "x"],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        closed.accepted(),
        0,
        "denied io_uring connect never reached the server"
    );
    let recs = records(&env, "connection");
    assert_eq!(
        recs.len(),
        2,
        "both io_uring connects were seen by the proxy: {recs:?}"
    );
    assert_eq!(recs[0]["decision"], "allow");
    assert_eq!(recs[1]["decision"], "deny");
});

root_test!(tcp_fast_open_is_redirected_and_denied, {
    let echo = Echo::start("127.0.0.2");
    let closed = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.18", 53, echo.port(), ""));
    let r = attempt(
        &env,
        &p,
        None,
        &["tfo", "127.0.0.2", &closed.port().to_string(), "x"],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(closed.accepted(), 0);
    let r = attempt(
        &env,
        &p,
        None,
        &["tfo", "127.0.0.2", &echo.port().to_string(), "fast"],
    );
    assert_eq!(
        r["reply"], "echo:fast",
        "allowed TFO goes through the proxy: {r}"
    );
    let recs = records(&env, "connection");
    assert_eq!(recs.len(), 2, "{recs:?}");
});

root_test!(forged_source_addresses_do_not_help, {
    let echo = Echo::start("127.0.0.2");
    let closed = Echo::start("127.0.0.2");
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.20", 53, echo.port(), ""));
    // Binding another loopback source: still redirected, still decided, attributed to us.
    let r = attempt(
        &env,
        &p,
        None,
        &[
            "forge",
            "127.0.0.9",
            "127.0.0.2",
            &closed.port().to_string(),
            "x",
        ],
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(closed.accepted(), 0);
    let r = attempt(
        &env,
        &p,
        None,
        &[
            "forge",
            "127.0.0.9",
            "127.0.0.2",
            &echo.port().to_string(),
            "y",
        ],
    );
    assert_eq!(r["reply"], "echo:y", "{r}");
    let rec = records(&env, "connection").pop().unwrap();
    assert!(
        rec["client"].as_str().unwrap().starts_with("127.0.0.9:"),
        "{rec}"
    );
    assert_eq!(
        rec["identity"]["pid"], r["pid"],
        "the kernel record, not the address, names the caller"
    );
    // Transparent sockets (spoofing any source) need CAP_NET_ADMIN: not for the agent user.
    denied_eperm(
        &attempt(&env, &p, Some("nobody"), &["transparent"]),
        "IP_TRANSPARENT",
    );
});
