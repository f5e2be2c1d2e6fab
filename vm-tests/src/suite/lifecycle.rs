//! Lifecycle: fail-closed after a crash, cleanup after runs, nothing left at the end.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use super::allow_policy;
use crate::check;
use crate::harness::{
    cgroup2_root, entries, exec, fail, fail_with, gone_or_zombie, leftovers, subdirs, wait_for,
    Ctx, Echo, Env, Fail, Spawned, TestResult, CMD_TIMEOUT, PIN_ROOT,
};
use crate::probe::{with_suffix, ProbeResult};

pub(super) fn fail_closed(env: &Env) -> TestResult {
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

pub(super) fn cleanup_after_run(env: &Env) -> TestResult {
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
pub(super) fn no_leftovers(ctx: &Ctx) -> TestResult {
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
