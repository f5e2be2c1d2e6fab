//! The proxy's own guards: connections without a kernel record, to its own listener, and
//! its upstream connects not being looped back.

use std::{
    io::{Read, Write},
    time::Duration,
};

use super::{allow_policy, expect_ok, only_record};
use crate::check;
use crate::harness::{move_pid, own_cgroup, probe_in, Attached, Echo, Env, TestCgroup, TestResult};

pub(super) fn no_kernel_record(env: &Env) -> TestResult {
    let cg = TestCgroup::new("norecord")?;
    let policy = env.policy("version: 1\ndefault: allow\n")?;
    let daemon = Attached::start(env, &cg, &policy)?;
    // This process is outside the cgroup: its connect to the listener has no kernel record.
    // The reset may already arrive while connect() is still waiting (then it reports it).
    let res = std::net::TcpStream::connect_timeout(&daemon.listeners[0], Duration::from_secs(10))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let _ = s.write_all(b"hi\n");
            let mut buf = [0u8; 16];
            s.read(&mut buf)
        });
    check!(
        matches!(res, Ok(0))
            || res
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, got {res:?}"
    );
    daemon.stop()?;
    let recs = env.connections()?;
    check!(recs.len() == 1, "records: {recs:?}");
    check!(recs[0]["decision"] == "deny", "{}", recs[0]);
    check!(
        recs[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no kernel record")),
        "{}",
        recs[0]
    );
    Ok(())
}

pub(super) fn own_listener(env: &Env) -> TestResult {
    let cg = TestCgroup::new("ownlistener")?;
    let policy = env.policy("version: 1\ndefault: allow\n")?;
    let daemon = Attached::start(env, &cg, &policy)?;
    let l = daemon.listeners[0];
    let port = l.port().to_string();
    let ip = l.ip().to_string();
    let r = probe_in(&cg, &env.ctx.me, &["probe", "4", &ip, &port, "loop"])?;
    check!(
        !r.ok,
        "the proxy's own listener was reachable: {}",
        r.line()
    );
    daemon.stop()?;
    let recs = env.connections()?;
    check!(
        recs.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("own listener"))),
        "no audit record names the own listener: {recs:?}"
    );
    Ok(())
}

pub(super) fn not_looped_back(env: &Env) -> TestResult {
    let echo = Echo::start("127.0.0.2")?;
    let cg = TestCgroup::new("mark")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        echo.port(),
    )]))?;
    let daemon = Attached::start(env, &cg, &policy)?;
    let home = own_cgroup()?;
    // Move the daemon into the cgroup it guards: only the SO_MARK check keeps its upstream
    // connects from being redirected back to itself.
    cg.add_pid(daemon.pid())?;
    let port = echo.port().to_string();
    let r = probe_in(
        &cg,
        &env.ctx.me,
        &["probe", "4", "127.0.0.2", &port, "marked"],
    );
    // Out again before stopping, so that the stop does not race the cgroup's removal.
    let moved_back = move_pid(&home, daemon.pid());
    let r = r?;
    moved_back?;
    expect_ok(&r, "echo:marked", &format!("127.0.0.2:{}", echo.port()))?;
    daemon.stop()?;
    let rec = only_record(env)?;
    check!(rec["decision"] == "allow", "{rec}");
    check!(
        echo.accepted() == 1,
        "upstream saw {} connections, expected 1",
        echo.accepted()
    );
    Ok(())
}
