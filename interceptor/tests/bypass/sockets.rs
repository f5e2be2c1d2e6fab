//! Raw and packet sockets: denied unless the policy grants them, per cgroup.

use super::*;

root_test!(raw_sockets_are_denied_unless_the_policy_allows_them, {
    let env = Env::new();
    let deny = env.policy("deny.yaml", &policy("127.0.53.13", 53, 1, ""));
    for kind in ["raw4", "raw6"] {
        // We run as root: only the sock_create hook can make this fail.
        denied_eperm(&attempt(&env, &deny, None, &["socket", kind]), kind);
    }
    let allow = env.policy(
        "allow.yaml",
        &policy("127.0.53.13", 53, 1, "  raw: allow\n"),
    );
    for kind in ["raw4", "raw6"] {
        let r = attempt(&env, &allow, None, &["socket", kind]);
        assert_eq!(r["ok"], true, "policy allows {kind}: {r}");
    }
});

root_test!(raw_socket_grant_is_per_cgroup, {
    let env = Env::new();
    // `run` puts the command in /interceptor/run-PID.
    let elsewhere = env.policy(
        "elsewhere.yaml",
        &policy(
            "127.0.53.14",
            53,
            1,
            "  cgroups:\n    - cgroup: \"/other/**\"\n      raw: allow\n",
        ),
    );
    denied_eperm(
        &attempt(&env, &elsewhere, None, &["socket", "raw4"]),
        "raw4, grant for another cgroup",
    );
    let here = env.policy(
        "here.yaml",
        &policy(
            "127.0.53.14",
            53,
            1,
            "  cgroups:\n    - cgroup: \"/interceptor/run-*\"\n      raw: allow\n",
        ),
    );
    let r = attempt(&env, &here, None, &["socket", "raw4"]);
    assert_eq!(r["ok"], true, "grant for this cgroup: {r}");
});

root_test!(packet_socket_is_denied_to_the_agent_user, {
    let env = Env::new();
    let p = env.policy("p.yaml", &policy("127.0.53.15", 53, 1, ""));
    for kind in ["packet", "packet-dgram"] {
        denied_eperm(&attempt(&env, &p, Some("nobody"), &["socket", kind]), kind);
    }
});
