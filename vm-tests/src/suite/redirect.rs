//! TCP redirection through the proxy: v4, v6, v4-mapped, children, Fast Open, denials.

use std::fs;

use super::{allow_policy, expect_ok, only_record};
use crate::check;
use crate::harness::{Echo, Env, Fail, TestResult};
use crate::probe::ProbeResult;

/// A denied connect: accepted locally, then reset (or refused outright).
fn expect_refused(r: &ProbeResult) -> TestResult {
    check!(!r.ok, "connect should have failed: {}", r.line());
    check!(
        matches!(
            r.errno,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNREFUSED)
        ) || r.error.as_deref() == Some("closed without reply"),
        "reset expected: {}",
        r.line()
    );
    Ok(())
}

pub(super) fn redirect_v4(env: &Env) -> TestResult {
    let echo = Echo::start("127.0.0.2")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        echo.port(),
    )]))?;
    let r = env.run_probe(&policy, "probe", "4", "127.0.0.2", echo.port(), "hello")?;
    expect_ok(&r, "echo:hello", &format!("127.0.0.2:{}", echo.port()))?;
    check!(
        echo.accepted() == 1,
        "upstream saw {} connections, expected 1",
        echo.accepted()
    );
    let rec = only_record(env)?;
    check!(rec["decision"] == "allow", "decision: {rec}");
    check!(rec["rule"] == "allow-echo", "rule: {rec}");
    check!(
        rec["destination"] == format!("127.0.0.2:{}", echo.port()),
        "destination: {rec}"
    );
    check!(
        rec["identity"]["pid"] == r.pid,
        "audit pid {} is not the probe's {}",
        rec["identity"]["pid"],
        r.pid
    );
    check!(
        rec["identity"]["exe"] == r.exe.as_str(),
        "audit exe {} is not the probe's {}",
        rec["identity"]["exe"],
        r.exe
    );
    check!(rec["identity"]["uid"] == 0, "uid: {rec}");
    check!(
        rec["identity"]["cgroup"]
            .as_str()
            .is_some_and(|c| c.starts_with("/interceptor/run-")),
        "cgroup: {rec}"
    );
    check!(
        rec["bytes_up"] == 6 && rec["bytes_down"] == 11,
        "bytes: {rec}"
    );
    Ok(())
}

pub(super) fn denied_destination(env: &Env) -> TestResult {
    let allowed = Echo::start("127.0.0.2")?;
    let other = Echo::start("127.0.0.2")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        allowed.port(),
    )]))?;
    let r = env.run_probe(&policy, "probe", "4", "127.0.0.2", other.port(), "hello")?;
    expect_refused(&r)?;
    check!(
        other.accepted() == 0,
        "a denied connect reached the destination ({} connections)",
        other.accepted()
    );
    let rec = only_record(env)?;
    check!(rec["decision"] == "deny", "decision: {rec}");
    check!(rec["rule"].is_null(), "default deny has no rule: {rec}");
    check!(rec["identity"]["pid"] == r.pid, "pid: {rec}");
    Ok(())
}

pub(super) fn redirect_v6(env: &Env) -> TestResult {
    let echo = Echo::start("::1")?;
    let policy = env.policy(&allow_policy(&[("allow-v6", "::1/128", echo.port())]))?;
    let r = env.run_probe(&policy, "probe", "6", "::1", echo.port(), "six")?;
    expect_ok(&r, "echo:six", &format!("[::1]:{}", echo.port()))?;
    check!(echo.accepted() == 1, "upstream saw {}", echo.accepted());
    let rec = only_record(env)?;
    check!(
        rec["destination"] == format!("[::1]:{}", echo.port()),
        "destination: {rec}"
    );
    check!(rec["rule"] == "allow-v6", "rule: {rec}");
    check!(rec["identity"]["pid"] == r.pid, "pid: {rec}");
    Ok(())
}

pub(super) fn redirect_mapped(env: &Env) -> TestResult {
    let echo = Echo::start("127.0.0.2")?;
    let other = Echo::start("127.0.0.2")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        echo.port(),
    )]))?;
    let r = env.run_probe(
        &policy,
        "probe",
        "mapped",
        "127.0.0.2",
        echo.port(),
        "mapped",
    )?;
    expect_ok(
        &r,
        "echo:mapped",
        &format!("[::ffff:127.0.0.2]:{}", echo.port()),
    )?;
    let rec = only_record(env)?;
    check!(
        rec["destination"] == format!("127.0.0.2:{}", echo.port()),
        "a mapped destination is recorded as IPv4: {rec}"
    );
    check!(rec["rule"] == "allow-echo", "rule: {rec}");
    // A mapped connect to a port the policy does not allow is denied and goes nowhere.
    let r = env.run_probe(&policy, "probe", "mapped", "127.0.0.2", other.port(), "x")?;
    expect_refused(&r)?;
    check!(
        other.accepted() == 0,
        "denied mapped connect reached upstream"
    );
    Ok(())
}

pub(super) fn child_process(env: &Env) -> TestResult {
    let echo = Echo::start("127.0.0.2")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        echo.port(),
    )]))?;
    let r = env.run_probe(
        &policy,
        "probe-fork",
        "4",
        "127.0.0.2",
        echo.port(),
        "child",
    )?;
    expect_ok(&r, "echo:child", &format!("127.0.0.2:{}", echo.port()))?;
    check!(
        r.parent_pid.is_some_and(|p| p != r.pid),
        "not a child: {}",
        r.line()
    );
    let rec = only_record(env)?;
    check!(
        rec["identity"]["pid"] == r.pid,
        "attributed to {} instead of the child {}",
        rec["identity"]["pid"],
        r.pid
    );
    Ok(())
}

pub(super) fn tcp_fast_open(env: &Env) -> TestResult {
    let tfo = fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen").unwrap_or_default();
    if tfo.trim().parse::<u32>().is_ok_and(|v| v & 1 == 0) {
        return Err(Fail::Skip(format!(
            "client TCP Fast Open is off (net.ipv4.tcp_fastopen = {})",
            tfo.trim()
        )));
    }
    let echo = Echo::start("127.0.0.2")?;
    let other = Echo::start("127.0.0.2")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        echo.port(),
    )]))?;
    // sendto(MSG_FASTOPEN) connects without connect(): the hook must still see it.
    let r = env.run_probe(&policy, "probe", "tfo", "127.0.0.2", echo.port(), "fast")?;
    expect_ok(&r, "echo:fast", &format!("127.0.0.2:{}", echo.port()))?;
    let rec = only_record(env)?;
    check!(rec["rule"] == "allow-echo", "rule: {rec}");
    check!(rec["identity"]["pid"] == r.pid, "pid: {rec}");
    let r = env.run_probe(&policy, "probe", "tfo", "127.0.0.2", other.port(), "x")?;
    expect_refused(&r)?;
    check!(
        other.accepted() == 0,
        "a denied Fast Open connect reached the destination"
    );
    Ok(())
}
