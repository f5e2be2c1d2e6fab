//! Unit tests of the red-team fixes: terminal escapes in `sessions show/list`, chains
//! swapped between instances, tampered open segments, recovery after a full disk, the
//! sink's handling of records PostgreSQL refuses, and the audit directory's owner.

use super::{cmd, sessions};

fn hostile_session() -> sessions::Session {
    sessions::Session {
        id: "s-1".into(),
        instance: "attach-x".into(),
        start: "2024-01-01T00:00:00.000Z".into(),
        duration_ms: Some(1.0),
        pid: Some(42),
        uid: Some(1000),
        comm: Some("psql\r\u{1b}[2Kroot".into()),
        exe: Some("/tmp/x\n  who      forged pid=1 uid=0".into()),
        cgroup: Some("/agents\u{9b}2J".into()),
        destination: Some("127.0.0.2:5432".into()),
        resource: Some("appdb".into()),
        decision: Some("allow".into()),
        commands: 1,
        denied: 1,
        ended: true,
        start_at: None,
        log: vec![sessions::Command {
            offset_ms: 1.0,
            kind: "command".into(),
            text: "DROP TABLE users;\r\u{1b}[2K\u{1b}[1ASELECT 1".into(),
            decision: "deny".into(),
            rule: Some("no-drop".into()),
            reason: Some("drop\u{1b}[8m".into()),
            classification: None,
            rows: None,
            rows_withheld: None,
            fields_masked: None,
            duration_ms: 0.1,
            error: Some("e\r".into()),
            seq: Some(3),
        }],
    }
}

#[test]
fn sessions_output_escapes_control_characters() {
    let s = hostile_session();
    let out = format!(
        "{}{}\n{}",
        cmd::render_header(&s),
        cmd::render_command(&s.log[0]),
        cmd::render_list(std::slice::from_ref(&s))
    );
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    assert!(!out.contains("\n  who      forged"), "{out}");
    assert!(out.contains("psql\\r\\x1b[2Kroot"), "{out}");
    assert!(
        out.contains("DENY  DROP TABLE users;\\r\\x1b[2K\\x1b[1ASELECT 1"),
        "{out}"
    );
    assert!(out.contains("reason: drop\\x1b[8m"), "{out}");
}
