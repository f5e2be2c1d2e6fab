//! Redirect, policy and identity: v4, v6 and v4-mapped connects, denied destinations,
//! child processes.

use super::*;

#[test]
fn v4_connect_is_redirected_allowed_and_attributed() {
    if !root_or_skip("v4_connect_is_redirected_allowed_and_attributed") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    let r = env.run_probe(&policy, "once", "4", "127.0.0.2", echo.port(), "hello");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["reply"], "echo:hello");
    // getpeername shows the address the application asked for, not the proxy's.
    assert_eq!(r["peer"], format!("127.0.0.2:{}", echo.port()));
    // The upstream saw the proxy (outside the cgroup), exactly once.
    assert_eq!(echo.accepted(), 1);

    let recs = connection_records(&env);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["rule"], "allow-echo");
    assert_eq!(rec["destination"], format!("127.0.0.2:{}", echo.port()));
    assert_eq!(
        rec["identity"]["pid"], r["pid"],
        "audit pid is the probe's pid"
    );
    assert_eq!(
        rec["identity"]["exe"], r["exe"],
        "audit exe is the probe's executable"
    );
    assert_eq!(rec["identity"]["uid"], 0);
    assert!(rec["identity"]["cmdline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a.as_str().unwrap().ends_with("probe.py")));
    assert!(
        rec["identity"]["cgroup"]
            .as_str()
            .unwrap()
            .starts_with("/interceptor/run-"),
        "{rec}"
    );
    assert_eq!(rec["bytes_up"], 6);
    assert_eq!(rec["bytes_down"], 11);
    assert!(rec["session"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn denied_destination_is_reset_and_never_reaches_upstream() {
    if !root_or_skip("denied_destination_is_reset_and_never_reaches_upstream") {
        return;
    }
    let allowed = Echo::start("127.0.0.2");
    let other = Echo::start("127.0.0.2");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", allowed.port())]),
    );
    let r = env.run_probe(&policy, "once", "4", "127.0.0.2", other.port(), "hello");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("Reset") || r["errno"] == 104,
        "reset expected: {r}"
    );
    assert_eq!(
        other.accepted(),
        0,
        "a denied connect must not reach the destination"
    );
    let recs = connection_records(&env);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["decision"], "deny");
    assert_eq!(recs[0]["rule"], Value::Null, "default deny has no rule");
    assert!(
        recs[0]["reason"].as_str().unwrap().contains("default"),
        "{}",
        recs[0]
    );
}

#[test]
fn v6_connect_is_redirected() {
    if !root_or_skip("v6_connect_is_redirected") {
        return;
    }
    let echo = Echo::start("::1");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-v6", "::1/128", echo.port())]),
    );
    let r = env.run_probe(&policy, "once", "6", "::1", echo.port(), "six");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["reply"], "echo:six");
    assert_eq!(r["peer"], format!("[::1]:{}", echo.port()));
    let recs = connection_records(&env);
    assert_eq!(recs[0]["destination"], format!("[::1]:{}", echo.port()));
    assert_eq!(recs[0]["rule"], "allow-v6");
}

#[test]
fn v4_mapped_connect_is_redirected_and_matches_v4_rules() {
    if !root_or_skip("v4_mapped_connect_is_redirected_and_matches_v4_rules") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    let r = env.run_probe(
        &policy,
        "once",
        "mapped",
        "127.0.0.2",
        echo.port(),
        "mapped",
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["peer"], format!("[::ffff:127.0.0.2]:{}", echo.port()));
    let recs = connection_records(&env);
    assert_eq!(recs[0]["destination"], format!("127.0.0.2:{}", echo.port()));
    assert_eq!(recs[0]["rule"], "allow-echo");

    // And a mapped connect to a port the policy does not allow is denied.
    let other = Echo::start("127.0.0.2");
    let r = env.run_probe(&policy, "once", "mapped", "127.0.0.2", other.port(), "x");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(other.accepted(), 0);
}

#[test]
fn child_process_of_the_agent_is_covered() {
    if !root_or_skip("child_process_of_the_agent_is_covered") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    let r = env.run_probe(&policy, "fork", "4", "127.0.0.2", echo.port(), "child");
    assert_eq!(r["ok"], true, "{r}");
    assert_ne!(r["pid"], r["parent_pid"]);
    let recs = connection_records(&env);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0]["identity"]["pid"], r["pid"],
        "attributed to the child, not the parent"
    );
}
