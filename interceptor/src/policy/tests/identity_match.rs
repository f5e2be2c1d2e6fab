//! Identity selectors: exe, comm, cgroup, uid and gid, alone, combined and in lists.

use super::*;

#[test]
fn identity_selectors() {
    let p = policy(
        "version: 1\n\
         identities:\n\
         \x20 py: {exe: \"/usr/bin/python3*\"}\n\
         \x20 curl: {comm: \"curl\"}\n\
         \x20 run: {cgroup: \"/interceptor/run-*\"}\n\
         \x20 users: {uid: [1000, 1001]}\n\
         \x20 staff: {gid: 50}\n\
         \x20 both: {uid: 0, comm: \"sh\"}\n\
         rules:\n\
         - {name: py, identity: py, action: allow, to: [{any: true, ports: 1}]}\n\
         - {name: curl, identity: curl, action: allow, to: [{any: true, ports: 2}]}\n\
         - {name: run, identity: run, action: allow, to: [{any: true, ports: 3}]}\n\
         - {name: users, identity: users, action: allow, to: [{any: true, ports: 4}]}\n\
         - {name: staff, identity: staff, action: allow, to: [{any: true, ports: 5}]}\n\
         - {name: both, identity: both, action: allow, to: [{any: true, ports: 6}]}\n\
         - {name: either, identity: [curl, staff], action: allow, to: [{any: true, ports: 7}]}\n",
    );
    let allowed =
        |s: Subject, port: u16| evaluate(&p, &req(s, &format!("10.0.0.1:{port}"))).is_allow();
    let base = subject(); // python3, uid 1000, gid 1000, /interceptor/run-42
    assert!(allowed(base, 1));
    assert!(!allowed(
        Subject {
            exe: Some("/usr/local/bin/python3"),
            ..base
        },
        1
    ));
    assert!(
        !allowed(Subject { exe: None, ..base }, 1),
        "unknown exe never matches an exe glob"
    );
    assert!(!allowed(base, 2));
    assert!(allowed(
        Subject {
            comm: "curl",
            ..base
        },
        2
    ));
    assert!(allowed(base, 3));
    assert!(!allowed(
        Subject {
            cgroup: Some("/interceptor/run-42/child"),
            ..base
        },
        3
    ));
    assert!(!allowed(
        Subject {
            cgroup: Some("/user.slice"),
            ..base
        },
        3
    ));
    assert!(
        !allowed(
            Subject {
                cgroup: None,
                ..base
            },
            3
        ),
        "unknown cgroup never matches"
    );
    assert!(allowed(base, 4));
    assert!(allowed(Subject { uid: 1001, ..base }, 4));
    assert!(!allowed(Subject { uid: 0, ..base }, 4));
    assert!(!allowed(base, 5));
    assert!(allowed(Subject { gid: 50, ..base }, 5));
    assert!(
        !allowed(Subject { uid: 0, ..base }, 6),
        "all fields must match"
    );
    assert!(!allowed(Subject { comm: "sh", ..base }, 6));
    assert!(allowed(
        Subject {
            uid: 0,
            comm: "sh",
            ..base
        },
        6
    ));
    assert!(!allowed(base, 7));
    assert!(allowed(
        Subject {
            comm: "curl",
            ..base
        },
        7
    ));
    assert!(allowed(Subject { gid: 50, ..base }, 7));
}
