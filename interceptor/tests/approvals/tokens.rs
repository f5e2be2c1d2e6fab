//! Agent tokens: bad ones refused at start, expiry denies, a fresh token restores access.

use super::*;

#[test]
fn agent_token_expiry_denies_and_a_fresh_token_restores_access() {
    if !root_or_skip("agent_token_expiry_denies_and_a_fresh_token_restores_access") {
        return;
    }
    let s = setup("apr-token");
    let policy = s.policy(60, Some("agent-7"), "");
    // Bad tokens are refused when the daemon starts.
    for (what, token, expect) in [
        (
            "expired",
            s.idp.token("idp", ISS, "agent-7", &[], -600),
            "expired",
        ),
        (
            "wrong issuer",
            s.idp.token("idp", "https://evil.test", "agent-7", &[], 600),
            "not configured",
        ),
    ] {
        let f = s.env.dir.path().join("bad.jwt");
        std::fs::write(&f, token).unwrap();
        let out = s
            .env
            .cmd()
            .args(["run", "--policy"])
            .arg(&policy)
            .arg("--token")
            .arg(&f)
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}");
        assert!(err.contains(expect), "{what}: {err}");
    }

    // Valid long enough for the daemon to start and one query to pass on a loaded
    // machine (a 3 s token made this test flaky), then waited out.
    let token_file = s.env.dir.path().join("agent.jwt");
    let lifetime = Duration::from_secs(10);
    let expires = std::time::Instant::now() + lifetime;
    std::fs::write(
        &token_file,
        s.idp.token(
            "idp",
            ISS,
            "agent-7",
            &["agents"],
            lifetime.as_secs() as i64,
        ),
    )
    .unwrap();
    let _d = Attached::start_with(
        &s.env,
        &s.cg,
        &policy,
        &["--token", token_file.to_str().unwrap()],
    );
    let (so, se) = finish(s.psql("SELECT count(*) FROM users"));
    assert_eq!(so.trim(), "3", "{se}");
    // JWT times are whole seconds: past `expires` plus a margin, the token is expired.
    std::thread::sleep(
        expires.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(1500),
    );
    // Expired: new connections are refused (reset before any byte).
    let (so, se) = finish(s.psql("SELECT count(*) FROM users"));
    assert!(so.trim().is_empty(), "{so}");
    assert!(!se.is_empty());
    // The record is written by the audit thread, possibly a moment after the reset.
    let denied = try_wait_for(Duration::from_secs(10), || {
        s.env
            .audit()
            .into_iter()
            .any(|r| {
                r["type"] == "connection"
                    && r["reason"].as_str().unwrap_or("").contains("token expired")
            })
            .then_some(())
    });
    assert!(denied.is_some(), "the refusal names the expired token");
    // A fresh token through the control socket.
    let fresh = s.env.dir.path().join("fresh.jwt");
    std::fs::write(&fresh, s.idp.token("idp", ISS, "agent-7", &["agents"], 600)).unwrap();
    let out = s
        .env
        .cmd()
        .args(["token", "set"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (so, se) = finish(s.psql("SELECT count(*) FROM users"));
    assert_eq!(so.trim(), "3", "{se}");
}

#[test]
fn an_http_request_approved_after_its_token_expired_is_not_sent() {
    if !root_or_skip("an_http_request_approved_after_its_token_expired_is_not_sent") {
        return;
    }
    // Valid long enough for the daemon to start and the request to be held on a loaded
    // machine, then waited out while it is held.
    let lifetime = Duration::from_secs(15);
    let expires = std::time::Instant::now() + lifetime;
    let h = super::http_setup::HttpHold::start("apr-http-exp", 120, |env, idp| {
        let f = env.dir.path().join("agent.jwt");
        let t = idp.token("idp", ISS, "agent-7", &[], lifetime.as_secs() as i64);
        std::fs::write(&f, t).unwrap();
        vec!["--token".into(), f.display().to_string()]
    });
    let agent = h.agent("POST", "/v1/echo", Some("late"));
    let req = h.pending();
    assert_eq!(req["agent_subject"], "agent-7", "{req}");
    // JWT times are whole seconds: past `expires` plus a margin, the token is expired.
    std::thread::sleep(
        expires.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(1500),
    );
    let d = h.decide(req["id"].as_str().unwrap(), "approve", "");
    assert_eq!(d["request"]["state"], "approved", "{d}");
    let (so, code) = super::http_setup::status_of(agent);
    assert_eq!(code, "403", "{so}");
    assert!(so.contains("token expired"), "{so}");
    assert!(h.up.requests().is_empty(), "nothing reached the upstream");
}
