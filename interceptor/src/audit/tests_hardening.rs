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

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    chain, checkpoint, sink_read,
    verify::{self, Kind},
    AuditLog, Settings,
};

fn settings(root: &Path, chain: &str, seg_bytes: u64) -> Settings {
    Settings {
        plain: None,
        dir: root.join("audit"),
        chain: chain.into(),
        state_dir: root.to_path_buf(),
        segment_bytes: seg_bytes,
        segment_age: Duration::from_secs(3600),
        durable: true,
    }
}

fn rec(i: usize) -> serde_json::Value {
    serde_json::json!({"type": "statement", "session": "s1", "statement": format!("SELECT {i}")})
}

async fn make(root: &Path, name: &str, n: usize) -> PathBuf {
    let log = AuditLog::start(settings(root, name, 4096)).unwrap();
    for i in 0..n {
        log.commit(&rec(i)).await.unwrap();
    }
    log.close().await;
    root.join("audit").join(name)
}

fn check(dir: &Path, root: &Path) -> verify::ChainReport {
    let key = checkpoint::load_key(root).unwrap().verifying_key();
    verify::verify_chain(dir, Some(&key))
}

fn seg(dir: &Path, n: u64) -> PathBuf {
    dir.join(super::segment::segment_name(n))
}

/// Rewrites a segment with `edit` applied to its records and the chain re-hashed, as an
/// attacker who knows the (unkeyed) chain format would.
fn forge(path: &Path, edit: impl Fn(&str) -> String) {
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut prev = None;
    for line in text.lines() {
        let o = chain::open(line).unwrap();
        let prev_hash = prev.unwrap_or(o.prev);
        let mut m: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&edit(line)).unwrap();
        for k in ["seq", "prev", "hash"] {
            m.remove(k);
        }
        let (l, h) = chain::seal(o.seq, &prev_hash, &serde_json::Value::Object(m).to_string());
        out.push_str(&l);
        prev = Some(h);
    }
    fs::write(path, out).unwrap();
}

#[tokio::test]
async fn verify_rejects_segments_copied_from_another_instance() {
    let t = tempfile::tempdir().unwrap();
    let a = make(t.path(), "attach-a", 40).await;
    let b = make(t.path(), "attach-b", 40).await;
    assert!(check(&b, t.path()).ok());
    for e in fs::read_dir(&b).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("segment-") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    for e in fs::read_dir(&a).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("segment-") {
            fs::copy(e.path(), b.join(e.file_name())).unwrap();
        }
    }
    let r = check(&b, t.path());
    assert!(!r.ok(), "another instance's chain accepted");
    assert!(
        r.problems.iter().all(|p| p.kind == Kind::Foreign),
        "{:?}",
        r.problems
    );
    assert!(check(&a, t.path()).ok());
}

#[tokio::test]
async fn an_open_segment_rewritten_on_disk_is_not_signed_as_valid() {
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::start(settings(t.path(), "c", 1 << 20)).unwrap();
    for i in 0..5 {
        log.commit(&rec(i)).await.unwrap();
    }
    let dir = t.path().join("audit/c");
    forge(&seg(&dir, 1), |l| {
        l.replace("SELECT 3", "SELECT 'harmless'")
    });
    log.close().await;
    let r = check(&dir, t.path());
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == Kind::Edited && p.file == seg(&dir, 1)),
        "a forged open segment was signed: {r:?}"
    );
}

#[tokio::test]
async fn a_segment_signed_at_recovery_says_so() {
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::start(settings(t.path(), "c", 1 << 20)).unwrap();
    for i in 0..5 {
        log.commit(&rec(i)).await.unwrap();
    }
    drop(log); // like kill -9: the segment stays open
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dir = t.path().join("audit/c");
    let log = AuditLog::start(settings(t.path(), "c", 1 << 20)).unwrap();
    log.close().await;
    let cp = checkpoint::read(&checkpoint::path_for(&seg(&dir, 1))).unwrap();
    assert!(cp.body.signed_at_recovery);
    let cp2 = checkpoint::read(&checkpoint::path_for(&seg(&dir, 2))).unwrap();
    assert!(!cp2.body.signed_at_recovery);
    let r = check(&dir, t.path());
    assert!(r.ok(), "{r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("signed by a restarted daemon")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test]
async fn restart_signs_every_unsigned_segment_and_removes_half_written_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let dir = make(t.path(), "c", 60).await;
    assert!(list(&dir) >= 4);
    for n in [1, 2] {
        fs::remove_file(checkpoint::path_for(&seg(&dir, n))).unwrap();
    }
    let tmp = checkpoint::path_for(&seg(&dir, 2)).with_extension("tmp");
    fs::write(&tmp, "{").unwrap();
    let r = check(&dir, t.path());
    assert_eq!(
        r.problems.len(),
        2,
        "every problem is reported: {:?}",
        r.problems
    );
    let log = AuditLog::start(settings(t.path(), "c", 4096)).unwrap();
    log.close().await;
    assert!(!tmp.exists());
    let r = check(&dir, t.path());
    assert!(r.ok(), "{r:?}");
}

fn list(dir: &Path) -> usize {
    super::segment::list_segments(dir).unwrap().len()
}

#[tokio::test]
async fn a_checkpoint_that_could_not_be_written_is_written_later() {
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::start(settings(t.path(), "c", 4096)).unwrap();
    let dir = t.path().join("audit/c");
    // The checkpoint's temporary file cannot be created (as on a full disk).
    let tmp = checkpoint::path_for(&seg(&dir, 1)).with_extension("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut i = 0;
    while list(&dir) < 2 {
        log.commit(&rec(i)).await.unwrap();
        i += 1;
    }
    assert!(!checkpoint::path_for(&seg(&dir, 1)).exists());
    fs::remove_dir(&tmp).unwrap();
    log.commit(&rec(i)).await.unwrap();
    assert!(checkpoint::path_for(&seg(&dir, 1)).exists());
    log.close().await;
    let r = check(&dir, t.path());
    assert!(r.ok() && r.warnings.is_empty(), "{r:?}");
}

#[tokio::test]
async fn verify_reports_every_problem_not_only_the_first() {
    let t = tempfile::tempdir().unwrap();
    let dir = make(t.path(), "c", 80).await;
    for n in [1, 3] {
        let s = seg(&dir, n);
        let text = fs::read_to_string(&s).unwrap();
        let i = text.find("\"statement\":\"SELECT ").unwrap();
        let mut b = text.into_bytes();
        b[i + 20] = b'X';
        fs::write(&s, b).unwrap();
    }
    let r = check(&dir, t.path());
    for n in [1, 3] {
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == Kind::Edited && p.file == seg(&dir, n)),
            "segment {n}: {:?}",
            r.problems
        );
    }
}

#[test]
fn the_sink_makes_nul_storable() {
    let line = r#"{"seq":1,"a":"x\u0000y\\u0000z","hash":"00"}"#;
    assert_eq!(
        sink_read::jsonb_safe(line),
        r#"{"seq":1,"a":"x\ufffdy\\u0000z","hash":"00","sink_nul_replaced":true}"#
    );
    let plain = r#"{"a":"\\u0000"}"#;
    assert_eq!(sink_read::jsonb_safe(plain), plain);
}

#[cfg(unix)]
#[tokio::test]
async fn refuses_an_audit_dir_of_another_user_and_symlinks_in_it() {
    use std::os::unix::fs::symlink;
    let t = tempfile::tempdir().unwrap();
    // A symlink planted where the daemon writes signing.pub: the file it points to is kept.
    let audit = t.path().join("audit");
    super::segment::private_dir(&audit).unwrap();
    let victim = t.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    symlink(&victim, audit.join(checkpoint::PUB_FILE)).unwrap();
    let chain = audit.join("c");
    super::segment::private_dir(&chain).unwrap();
    symlink(&victim, chain.join(".lock")).unwrap();
    let r = AuditLog::start(settings(t.path(), "c", 1 << 20));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(r.is_err(), "the .lock symlink was followed");
    fs::remove_file(chain.join(".lock")).unwrap();
    let log = AuditLog::start(settings(t.path(), "c", 1 << 20)).unwrap();
    log.close().await;
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    // A directory that belongs to someone else (needs root to create one).
    if nix::unistd::geteuid().is_root() {
        let other = t.path().join("other");
        super::segment::private_dir(&other).unwrap();
        nix::unistd::chown(&other, Some(65534.into()), None).unwrap();
        let e = super::segment::private_dir(&other).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }
}
