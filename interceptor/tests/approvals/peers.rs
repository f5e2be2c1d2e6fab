//! Callers of the control socket from inside the agents' cgroup: they can neither decide
//! requests nor replace the agent token — not even through a forked child that connects
//! and exits before its parent speaks (its cgroup can then not be read: fail closed).

use super::*;

/// Run inside the cgroup: a child connects to SOCKET and exits; the parent reaps it and
/// sends the JSON request REQUEST on the inherited connection, printing the answer.
const DEAD_CHILD: &str = r#"
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    s.connect(sys.argv[1])
    os._exit(0)
os.waitpid(pid, 0)
s.sendall((sys.argv[2] + "\n").encode())
print(s.makefile().readline())
"#;

#[test]
fn agents_can_neither_decide_nor_set_the_token_even_through_a_dead_child() {
    if !root_or_skip("agents_can_neither_decide_nor_set_the_token_even_through_a_dead_child") {
        return;
    }
    let s = setup("apr-peers");
    let policy = s.policy(60, Some("agent-7"), "");
    let agent_token = s.env.dir.path().join("agent.jwt");
    std::fs::write(
        &agent_token,
        s.idp.token("idp", ISS, "agent-7", &["agents"], 600),
    )
    .unwrap();
    let _d = Attached::start_with(
        &s.env,
        &s.cg,
        &policy,
        &["--token", agent_token.to_str().unwrap()],
    );
    let bob = s.idp.token("idp", ISS, "bob", &["dba"], 600);
    let psql = s.psql("UPDATE orders SET total = 0 WHERE id = 3");
    let id = s.pending(&bob)["id"].as_str().unwrap().to_owned();
    let other = s.env.dir.path().join("other.jwt");
    std::fs::write(
        &other,
        s.idp.token("idp", ISS, "someone-else", &["agents"], 600),
    )
    .unwrap();

    // The CLI run inside the cgroup.
    let inside = |args: &[&str]| {
        let out =
            s.cg.command(bin())
                .arg("--state-dir")
                .arg(s.env.state())
                .args(args)
                .env("INTERCEPTOR_APPROVER_TOKEN", &bob)
                .output()
                .unwrap();
        assert!(!out.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = inside(&["token", "set", other.to_str().unwrap()]);
    assert!(err.contains("inside the agents' cgroup"), "{err}");
    let err = inside(&["approvals", "approve", &id]);
    assert!(err.contains("inside the agent's own cgroup"), "{err}");

    // A forked child connects, exits, and its parent speaks.
    let script = s.env.dir.path().join("dead_child.py");
    std::fs::write(&script, DEAD_CHILD).unwrap();
    let sock = control_socket(&s.env);
    let dead_child = |request: Value| -> Value {
        let out =
            s.cg.command("python3")
                .arg(&script)
                .arg(&sock)
                .arg(request.to_string())
                .output()
                .unwrap();
        let so = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(so.trim())
            .unwrap_or_else(|e| panic!("{e}: {so} {}", String::from_utf8_lossy(&out.stderr)))
    };
    let token = std::fs::read_to_string(&other).unwrap();
    let r = dead_child(json!({ "token": token }));
    assert_eq!(r["result"], "error", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("inside the agents' cgroup"),
        "{r}"
    );
    let r = dead_child(json!({"approvals": {"token": bob, "call": {
        "op": "decide", "id": id, "approve": true, "for_secs": 3600}}}));
    assert_eq!(
        r["body"]["error"].as_str().map(|e| e.contains("inside")),
        Some(true),
        "{r}"
    );

    // Still held: bob, outside, denies.
    assert!(s.approvals(&bob, &["deny", &id]).status.success());
    let (_, se) = finish(psql);
    assert!(se.contains("42501") && se.contains("denied by bob"), "{se}");
}

/// The daemon's control socket.
fn control_socket(env: &Env) -> PathBuf {
    std::fs::read_dir(env.state().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("a control socket")
}
