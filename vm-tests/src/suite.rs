//! The kernel-facing tests. Each prints `PASS name`, `FAIL name: reason` or
//! `SKIP name: reason`; the run ends with exactly one `vm-suite: N passed, M failed, K skipped`.

use std::{
    fs,
    io::{Read, Write},
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::check;
use crate::harness::*;
use crate::init;
use crate::probe::{with_suffix, ProbeResult};

/// Exit code of `interceptor doctor` for an unsupported kernel.
const DOCTOR_UNSUPPORTED: i32 = 3;

pub struct Options {
    pub interceptor: Option<PathBuf>,
    pub filter: Option<String>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub unsupported: Option<String>,
}

type TestFn = fn(&Env) -> TestResult;

/// Every test, in the order they run.
const TESTS: &[(&str, TestFn)] = &[
    ("redirect_v4_allowed_identity_getpeername", redirect_v4),
    ("denied_destination_reset_not_reached", denied_destination),
    ("redirect_v6", redirect_v6),
    ("redirect_v4_mapped_matches_v4_rule", redirect_mapped),
    ("child_process_covered", child_process),
    ("tcp_fast_open_redirected", tcp_fast_open),
    ("listener_without_kernel_record_reset", no_kernel_record),
    ("connect_to_proxy_listener_denied", own_listener),
    ("proxy_upstream_not_looped_back", not_looped_back),
    ("fail_closed_after_sigkill_and_cleanup", fail_closed),
    ("cleanup_after_normal_run", cleanup_after_run),
    (
        "udp_unlisted_port_denied",
        crate::bypass::udp_unlisted_port_denied,
    ),
    (
        "dns_proxied_reply_source_restored",
        crate::bypass::dns_proxied_reply_source_restored,
    ),
    ("raw_socket_denied", crate::bypass::raw_socket_denied),
    ("packet_socket_denied", crate::bypass::packet_socket_denied),
];

/// Finds the interceptor binary: the option, `$INTERCEPTOR_BIN`, `/bin/interceptor` (the
/// VM), next to this binary, or `target/release/interceptor` from the working directory.
fn find_interceptor(opt: Option<PathBuf>) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(opt);
    candidates.extend(std::env::var_os("INTERCEPTOR_BIN").map(PathBuf::from));
    candidates.push("/bin/interceptor".into());
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            candidates.push(dir.join("interceptor"));
            candidates.push(dir.join("../release/interceptor"));
        }
    }
    candidates.push("target/release/interceptor".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| fs::canonicalize(&p).unwrap_or(p))
        .ok_or_else(|| "interceptor binary not found: pass --interceptor PATH".to_string())
}

pub fn run(opts: Options) -> Summary {
    let release = init::kernel_release();
    println!("vm-suite: kernel {release}");
    let mut summary = Summary::default();
    let selected: Vec<&(&str, TestFn)> = TESTS
        .iter()
        .filter(|(name, _)| opts.filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();

    let setup = (|| -> Result<Ctx, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (BPF and cgroup v2)".into());
        }
        let interceptor = find_interceptor(opts.interceptor)?;
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let root = std::env::temp_dir().join(format!("vm-suite-{}", std::process::id()));
        fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        // The interceptor's `run` drops nothing, but `nobody` may need to traverse it.
        Ok(Ctx {
            interceptor,
            me,
            root,
            in_vm: init::is_pid1(),
            instances: Mutex::new(Vec::new()),
        })
    })();
    let ctx = match setup {
        Ok(c) => c,
        Err(e) => {
            for (name, _) in &selected {
                println!("SKIP {name}: {e}");
                summary.skipped += 1;
            }
            print_summary(&summary);
            return summary;
        }
    };
    println!("vm-suite: interceptor {}", ctx.interceptor.display());

    // Feature probe first: an unsupported kernel is reported as such, not as failures.
    match doctor(&ctx) {
        Ok(()) => {}
        Err(Doctor::Unsupported(reason)) => {
            println!("vm-suite: kernel {release} unsupported: {reason}");
            for (name, _) in &selected {
                println!("SKIP {name}: kernel unsupported");
                summary.skipped += 1;
            }
            summary.unsupported = Some(reason);
            print_summary(&summary);
            let _ = fs::remove_dir_all(&ctx.root);
            return summary;
        }
        Err(Doctor::Broken(reason, context)) => {
            report("doctor", Err(Fail::Fail(reason, context)), &mut summary);
            for (name, _) in &selected {
                println!("SKIP {name}: doctor failed");
                summary.skipped += 1;
            }
            print_summary(&summary);
            let _ = fs::remove_dir_all(&ctx.root);
            return summary;
        }
    }

    for (name, test) in selected {
        let start = Instant::now();
        let result = run_one(&ctx, name, *test);
        report_timed(name, result, Some(start.elapsed()), &mut summary);
        if ctx.in_vm {
            init::reap_zombies();
        }
    }
    if opts.filter.is_none() {
        let result = no_leftovers(&ctx);
        report("no_leftovers_at_end", result, &mut summary);
    }
    let _ = fs::remove_dir_all(&ctx.root);
    print_summary(&summary);
    summary
}

fn print_summary(s: &Summary) {
    println!(
        "vm-suite: {} passed, {} failed, {} skipped",
        s.passed, s.failed, s.skipped
    );
}

fn report(name: &str, result: TestResult, summary: &mut Summary) {
    report_timed(name, result, None, summary)
}

/// `PASS name (1.2s)`, `FAIL name: reason (after 1.2s)` + context lines, `SKIP name: reason`.
fn report_timed(name: &str, result: TestResult, time: Option<Duration>, summary: &mut Summary) {
    let secs = time.map(|t| t.as_secs_f64());
    match result {
        Ok(()) => {
            summary.passed += 1;
            match secs {
                Some(s) => println!("PASS {name} ({s:.1}s)"),
                None => println!("PASS {name}"),
            }
        }
        Err(Fail::Skip(why)) => {
            summary.skipped += 1;
            println!("SKIP {name}: {why}");
        }
        Err(Fail::Fail(why, context)) => {
            summary.failed += 1;
            match secs {
                Some(s) => println!("FAIL {name}: {why} (after {s:.1}s)"),
                None => println!("FAIL {name}: {why}"),
            }
            for line in context {
                println!("    | {line}");
            }
        }
    }
}

/// One test in its own scratch directory, panics caught; afterwards nothing of the instances
/// it started may be left (pins, `run` cgroups).
fn run_one(ctx: &Ctx, name: &str, test: TestFn) -> TestResult {
    let before = ctx.instances.lock().map(|v| v.len()).unwrap_or(0);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let env = Env::new(ctx, name)?;
        test(&env)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(fail(format!("panicked: {msg}")))
    });
    let started: Vec<String> = ctx
        .instances
        .lock()
        .map(|v| v[before.min(v.len())..].to_vec())
        .unwrap_or_default();
    let left: Vec<String> = started.iter().flat_map(|i| leftovers(i)).collect();
    if left.is_empty() {
        return result;
    }
    // Clean up for the next test, and fail this one unless it failed already.
    let mut c = Command::new(&ctx.interceptor);
    c.arg("cleanup");
    let _ = exec(c, CMD_TIMEOUT);
    result.and(Err(fail(format!("left behind: {}", left.join(", ")))))
}

enum Doctor {
    Unsupported(String),
    Broken(String, Vec<String>),
}

fn doctor(ctx: &Ctx) -> Result<(), Doctor> {
    let mut c = Command::new(&ctx.interceptor);
    c.arg("doctor");
    let out = exec(c, CMD_TIMEOUT).map_err(|e| match e {
        Fail::Fail(r, c) => Doctor::Broken(r, c),
        Fail::Skip(r) => Doctor::Broken(r, Vec::new()),
    })?;
    for line in out.stdout.lines() {
        println!("doctor: {line}");
    }
    match out.code() {
        Some(0) => Ok(()),
        Some(DOCTOR_UNSUPPORTED) => Err(Doctor::Unsupported(
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix("unsupported: "))
                .unwrap_or("(no reason given)")
                .to_string(),
        )),
        _ => Err(Doctor::Broken(
            format!("`interceptor doctor` exited with {}", out.status),
            out.stderr.lines().map(str::to_string).collect(),
        )),
    }
}

fn allow_policy(rules: &[(&str, &str, u16)]) -> String {
    let mut y = String::from("version: 1\nrules:\n");
    for (name, cidr, port) in rules {
        y.push_str(&format!(
            "  - name: {name}\n    action: allow\n    to:\n      - cidr: {cidr}\n        ports: \"{port}\"\n"
        ));
    }
    y.push_str("default: deny\n");
    y
}

fn only_record(env: &Env) -> Result<Value, Fail> {
    let recs = env.connections()?;
    check!(
        recs.len() == 1,
        "expected exactly one audit record, got {}: {recs:?}",
        recs.len()
    );
    Ok(recs.into_iter().next().expect("one"))
}

fn expect_ok(r: &ProbeResult, reply: &str, peer: &str) -> TestResult {
    check!(r.ok, "probe failed: {}", r.line());
    check!(
        r.reply.as_deref() == Some(reply),
        "reply {:?}, expected {reply:?}",
        r.reply
    );
    check!(
        r.peer.as_deref() == Some(peer),
        "getpeername shows {:?}, expected the original {peer}",
        r.peer
    );
    Ok(())
}

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

fn redirect_v4(env: &Env) -> TestResult {
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

fn denied_destination(env: &Env) -> TestResult {
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

fn redirect_v6(env: &Env) -> TestResult {
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

fn redirect_mapped(env: &Env) -> TestResult {
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

fn child_process(env: &Env) -> TestResult {
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

fn tcp_fast_open(env: &Env) -> TestResult {
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

fn no_kernel_record(env: &Env) -> TestResult {
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

fn own_listener(env: &Env) -> TestResult {
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

fn not_looped_back(env: &Env) -> TestResult {
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

fn fail_closed(env: &Env) -> TestResult {
    let echo = Echo::start("127.0.0.2")?;
    let policy = env.policy(&allow_policy(&[(
        "allow-echo",
        "127.0.0.2/32",
        echo.port(),
    )]))?;
    let go = env.dir.join("go");
    let out = env.dir.join("result");
    let me = env.ctx.me.display().to_string();
    let port = echo.port().to_string();
    let (go_s, out_s) = (go.display().to_string(), out.display().to_string());
    let cmd = env.run_cmd(
        &policy,
        &[
            &me,
            "probe-wait",
            &go_s,
            &out_s,
            "4",
            "127.0.0.2",
            &port,
            "after-crash",
        ],
    );
    let mut daemon = Spawned::start(cmd)?;
    let instance = format!("run-{}", daemon.pid());
    env.ctx.note_instance(instance.clone());
    let ready = with_suffix(&out, ".ready");
    let deadline = Instant::now() + CMD_TIMEOUT;
    while !ready.exists() {
        if !daemon.running() || Instant::now() > deadline {
            return Err(fail_with("the probe never got ready", &daemon.stderr()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let probe_pid: i32 = fs::read_to_string(&ready)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| fail("unreadable ready file"))?;
    // kill -9: no orderly shutdown, the pinned links stay.
    let log = daemon.stderr();
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(30))?;
    fs::write(&go, "").map_err(|e| fail(format!("{}: {e}", go.display())))?;
    let r = wait_for("the probe's result", Duration::from_secs(60), || {
        ProbeResult::parse(&fs::read_to_string(&out).ok()?)
    })
    .map_err(|e| match e {
        Fail::Fail(r, _) => fail_with(r, &log),
        s => s,
    })?;
    check!(
        !r.ok,
        "a connect after the daemon died succeeded: {}",
        r.line()
    );
    check!(
        matches!(r.errno, Some(libc::ECONNREFUSED | libc::EPERM)),
        "ECONNREFUSED or EPERM expected: {}",
        r.line()
    );
    check!(
        echo.accepted() == 0,
        "a connect went out directly after the daemon died"
    );
    check!(
        Path::new(PIN_ROOT).join(&instance).exists(),
        "the pins of the killed daemon are already gone (not fail-closed)"
    );

    // `cleanup` removes what the crashed run left: the probe, its cgroup and the pins.
    let mut c = env.cmd();
    c.arg("cleanup");
    let out = exec(c, CMD_TIMEOUT)?;
    check!(
        out.status.success(),
        "interceptor cleanup: {} {}",
        out.status,
        out.stderr
    );
    wait_for("the probe to be killed", Duration::from_secs(20), || {
        if env.ctx.in_vm {
            // PID 1 inherited the orphan: reap it.
            // SAFETY: plain waitpid on a pid that is ours or not our child (ECHILD).
            unsafe { libc::waitpid(probe_pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
        gone_or_zombie(probe_pid).then_some(())
    })?;
    let left = leftovers(&instance);
    check!(left.is_empty(), "cleanup left {}", left.join(", "));
    Ok(())
}

fn cleanup_after_run(env: &Env) -> TestResult {
    let policy = env.policy("version: 1\ndefault: deny\n")?;
    let me = env.ctx.me.display().to_string();
    let spawned = Spawned::start(env.run_cmd(&policy, &[&me, "exit-with", "7"]))?;
    let instance = format!("run-{}", spawned.pid());
    env.ctx.note_instance(instance.clone());
    let out = spawned.wait(CMD_TIMEOUT)?;
    check!(
        out.code() == Some(7),
        "exit code {:?}, expected the command's 7",
        out.code()
    );
    let cg = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cgroup="))
        .unwrap_or_default();
    check!(
        cg == format!("/interceptor/{instance}"),
        "the command ran in {cg:?}, not /interceptor/{instance}"
    );
    let left = leftovers(&instance);
    check!(left.is_empty(), "left behind: {}", left.join(", "));
    let socks: Vec<String> = entries(&env.state().join("run"))
        .into_iter()
        .filter(|n| n.ends_with(".sock"))
        .collect();
    check!(socks.is_empty(), "control sockets left: {socks:?}");
    Ok(())
}

/// After the suite: nothing of any instance is left. In the VM nothing else runs, so the
/// interceptor's pin and cgroup directories must be empty altogether.
fn no_leftovers(ctx: &Ctx) -> TestResult {
    let instances = ctx.instances.lock().map(|v| v.clone()).unwrap_or_default();
    let left: Vec<String> = instances.iter().flat_map(|i| leftovers(i)).collect();
    check!(left.is_empty(), "left behind: {}", left.join(", "));
    if ctx.in_vm {
        let pins = entries(Path::new(PIN_ROOT));
        check!(pins.is_empty(), "{PIN_ROOT} still has {pins:?}");
        let root = cgroup2_root()?;
        for dir in ["interceptor", "vm-suite"] {
            let cgs = subdirs(&root.join(dir));
            check!(cgs.is_empty(), "{dir} cgroups left: {cgs:?}");
        }
    }
    Ok(())
}
