//! `interceptor run`: exit codes and cleanup, another user, fail-closed after kill -9.

use super::*;

#[test]
fn run_forwards_exit_code_and_removes_everything() {
    if !root_or_skip("run_forwards_exit_code_and_removes_everything") {
        return;
    }
    let env = Env::new();
    let policy = env.policy("p.yaml", "version: 1\ndefault: deny\n");
    let out = env.run(&policy, &["sh", "-c", "cat /proc/self/cgroup; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cg = stdout
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 line")
        .trim()
        .to_string();
    assert!(cg.starts_with("/interceptor/run-"), "{cg}");
    let instance = cg.trim_start_matches("/interceptor/");
    let root = interceptor::cgroup::cgroup2_root().unwrap();
    assert!(
        !root.join(cg.trim_start_matches('/')).exists(),
        "cgroup {cg} left behind"
    );
    assert!(
        !interceptor::ebpf::pin_dir(instance).exists(),
        "pins left behind"
    );
    assert!(
        interceptor::control::sockets(&env.state()).is_empty(),
        "control socket left behind"
    );

    // A command that does not exist: 127, like a shell.
    let out = env.run(&policy, &["/nonexistent/agent"]);
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn run_as_another_user() {
    if !root_or_skip("run_as_another_user") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &format!(
            "version: 1\nidentities:\n  nobody:\n    uid: 65534\nrules:\n  - name: nobody-echo\n    identity: nobody\n    action: allow\n    to:\n      - cidr: 127.0.0.2/32\n        ports: \"{}\"\ndefault: deny\n",
            echo.port()
        ),
    );
    let probe = probe();
    // The probe must be readable by nobody: copy it to a world-readable place.
    let copy = env.dir.path().join("probe.py");
    std::fs::copy(&probe, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = echo.port().to_string();
    let out = env
        .cmd()
        .args(["run", "--user", "nobody", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(env.audit_path())
        .args([
            "--",
            "python3",
            copy.to_str().unwrap(),
            "once",
            "4",
            "127.0.0.2",
            &port,
            "who",
        ])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], true, "{r}");
    let recs = connection_records(&env);
    assert_eq!(recs[0]["identity"]["uid"], 65534);
    assert_eq!(recs[0]["rule"], "nobody-echo");
}

#[test]
fn fail_closed_when_the_daemon_is_killed() {
    if !root_or_skip("fail_closed_when_the_daemon_is_killed") {
        return;
    }
    let echo = Echo::start("127.0.0.2");
    let env = Env::new();
    let policy = env.policy(
        "p.yaml",
        &allow_policy(&[("allow-echo", "127.0.0.2/32", echo.port())]),
    );
    let go = env.dir.path().join("go");
    let out = env.dir.path().join("result.json");
    let port = echo.port().to_string();
    let mut daemon = env
        .cmd()
        .args(["run", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(env.audit_path())
        .arg("--")
        .arg("python3")
        .arg(probe())
        .args([
            "wait-then-once",
            go.to_str().unwrap(),
            out.to_str().unwrap(),
            "4",
            "127.0.0.2",
            &port,
            "after-crash",
        ])
        .spawn()
        .unwrap();
    let ready = out.with_extension("json.ready");
    wait_for("probe ready", Duration::from_secs(20), || {
        ready.exists().then_some(())
    });
    let probe_pid: i32 = std::fs::read_to_string(&ready)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // kill -9: no orderly shutdown, the pinned links stay.
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    std::fs::write(&go, "").unwrap();
    let r: Value = wait_for("probe result", Duration::from_secs(20), || {
        std::fs::read_to_string(&out)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    });
    assert_eq!(
        r["ok"], false,
        "a connect after the daemon died must fail: {r}"
    );
    assert!(
        r["errno"] == 111 || r["errno"] == 1,
        "ECONNREFUSED or EPERM expected: {r}"
    );
    assert_eq!(echo.accepted(), 0, "nothing may go out directly");

    // `cleanup` removes what the crashed run left: the probe, its cgroup and the pins.
    let status = env.cmd().arg("cleanup").status().unwrap();
    assert!(status.success());
    // Gone, or a zombie waiting for init to reap it (its parent, the daemon, is dead).
    wait_for("probe killed", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{probe_pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.chars().next().unwrap_or('?'));
        matches!(state, None | Some('Z') | Some('X')).then_some(())
    });
    let name = format!("run-{}", daemon.id());
    assert!(
        !interceptor::ebpf::pin_dir(&name).exists(),
        "pins left behind"
    );
    let root = interceptor::cgroup::cgroup2_root().unwrap();
    assert!(
        !root.join("interceptor").join(&name).exists(),
        "cgroup left behind"
    );
}
