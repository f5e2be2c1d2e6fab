//! Unit tests: chain, store, recovery, every kind of tampering, fail-closed, sessions.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    chain, checkpoint,
    segment::list_segments,
    sessions,
    verify::{self, Kind},
    AuditLog, Settings,
};

fn settings(root: &Path, seg_bytes: u64) -> Settings {
    Settings {
        plain: None,
        dir: root.join("audit"),
        chain: "test-chain".into(),
        state_dir: root.to_path_buf(),
        segment_bytes: seg_bytes,
        segment_age: Duration::from_secs(3600),
        durable: true,
    }
}

fn rec(i: usize) -> serde_json::Value {
    serde_json::json!({"time": super::now_rfc3339(), "type": "statement", "session": format!("s{}", i % 3), "statement": format!("SELECT {i}"), "decision": "allow", "rows": i})
}

/// A closed chain of `n` records in ~4 KiB segments; returns its directory.
async fn make_chain(root: &Path, n: usize) -> PathBuf {
    let log = AuditLog::start(settings(root, 4096)).unwrap();
    for i in 0..n {
        log.commit(&rec(i)).await.unwrap();
    }
    log.close().await;
    root.join("audit/test-chain")
}

fn key(root: &Path) -> ed25519_dalek::VerifyingKey {
    checkpoint::load_key(root).unwrap().verifying_key()
}

fn check(dir: &Path, root: &Path) -> verify::ChainReport {
    verify::verify_chain(dir, Some(&key(root)))
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(p: &Path, l: &[String]) {
    fs::write(p, l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();
}

fn seg(dir: &Path, n: u64) -> PathBuf {
    dir.join(super::segment::segment_name(n))
}

#[test]
fn seal_and_open_round_trip() {
    let (line, h) = chain::seal(7, &chain::GENESIS, r#"{"a":1,"b":"x"}"#);
    assert!(line.starts_with(r#"{"seq":7,"prev":"000"#));
    let o = chain::open(line.trim_end()).unwrap();
    assert_eq!(
        (o.seq, o.prev, o.hash, o.hash_ok),
        (7, chain::GENESIS, h, true)
    );
    let edited = line.replace(r#""a":1"#, r#""a":2"#);
    assert!(!chain::open(edited.trim_end()).unwrap().hash_ok);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["b"], "x");
}

#[tokio::test]
async fn clean_chain_verifies_with_rotation_and_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 200).await;
    let segs = list_segments(&dir).unwrap();
    assert!(segs.len() >= 3, "4 KiB segments rotate: {segs:?}");
    let r = check(&dir, t.path());
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!(
        r.checkpoints as usize,
        segs.len(),
        "every segment closed and signed"
    );
    // 200 records + one segment_open per segment.
    assert_eq!(r.records as usize, 200 + segs.len());
    // Private: 0700 directories, 0600 files.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&t.path().join("audit")), 0o700);
    assert_eq!(mode(&segs[0].1), 0o600);
    assert_eq!(mode(&checkpoint::path_for(&segs[0].1)), 0o600);
    assert_eq!(mode(&t.path().join(checkpoint::KEY_FILE)), 0o600);
}

/// Async mode (no fdatasync per batch, lingering writer): every record still lands, in
/// order, in a chain that verifies across rotations; `flush` returns with all of them
/// written.
#[tokio::test]
async fn async_mode_writes_everything_in_order() {
    let t = tempfile::tempdir().unwrap();
    let mut s = settings(t.path(), 4096);
    s.durable = false;
    let log = AuditLog::start(s).unwrap();
    for i in 0..300 {
        log.commit(&rec(i)).await.unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    log.flush().await;
    let dir = t.path().join("audit/test-chain");
    let got: Vec<u64> = list_segments(&dir)
        .unwrap()
        .iter()
        .flat_map(|(_, p)| lines(p))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|v| v["type"] == "statement")
        .map(|v| v["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (0..300).collect::<Vec<u64>>());
    log.close().await;
    let r = check(&dir, t.path());
    assert!(r.ok(), "{:?}", r.problem);
}

#[tokio::test]
async fn restart_continues_the_chain() {
    let t = tempfile::tempdir().unwrap();
    make_chain(t.path(), 10).await;
    let dir = make_chain(t.path(), 10).await;
    let r = check(&dir, t.path());
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!(r.records, 22);
}

fn expect(r: &verify::ChainReport, kind: Kind, file: &Path, line: u64) {
    let p = r
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("tampering not detected: {r:?}"));
    assert_eq!(
        (p.kind, p.file.as_path(), p.line),
        (kind, file, line),
        "{p}"
    );
}

#[tokio::test]
async fn detects_an_edited_record() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 60).await;
    let s = seg(&dir, 2);
    let mut l = lines(&s);
    l[3] = l[3].replace("\"allow\"", "\"deny\"");
    put(&s, &l);
    expect(&check(&dir, t.path()), Kind::Edited, &s, 4);
}

#[tokio::test]
async fn detects_a_deleted_record() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 60).await;
    let s = seg(&dir, 2);
    let mut l = lines(&s);
    l.remove(2);
    put(&s, &l);
    let r = check(&dir, t.path());
    expect(&r, Kind::Deleted, &s, 3);
    assert!(r.problem.unwrap().detail.contains("expected seq"));
}

#[tokio::test]
async fn detects_an_inserted_record() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 60).await;
    let s = seg(&dir, 2);
    let mut l = lines(&s);
    // A forged record, correctly hashed and linked to the record before it.
    let before = chain::open(&l[1]).unwrap();
    let (forged, _) = chain::seal(
        before.seq + 1,
        &before.hash,
        r#"{"type":"statement","statement":"forged"}"#,
    );
    l.insert(2, forged.trim_end().to_owned());
    put(&s, &l);
    expect(&check(&dir, t.path()), Kind::Inserted, &s, 4);
}

#[tokio::test]
async fn detects_reordered_records() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 60).await;
    let s = seg(&dir, 1);
    let mut l = lines(&s);
    l.swap(4, 5);
    put(&s, &l);
    expect(&check(&dir, t.path()), Kind::Reordered, &s, 5);
}

#[tokio::test]
async fn detects_truncation_of_a_closed_segment() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 60).await;
    let s = seg(&dir, 1);
    let mut l = lines(&s);
    let n = l.len();
    l.truncate(n - 2);
    put(&s, &l);
    expect(&check(&dir, t.path()), Kind::Truncated, &s, n as u64 - 1);
    // A torn line in a closed segment too.
    let mut bytes = fs::read(&s).unwrap();
    bytes.extend_from_slice(b"{\"seq\":9");
    fs::write(&s, bytes).unwrap();
    expect(&check(&dir, t.path()), Kind::Truncated, &s, n as u64 - 1);
}

#[tokio::test]
async fn detects_a_deleted_segment_and_a_missing_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 100).await;
    let s2 = seg(&dir, 2);
    fs::remove_file(checkpoint::path_for(&s2)).unwrap();
    let r = check(&dir, t.path());
    assert_eq!(r.problem.as_ref().unwrap().kind, Kind::Checkpoint, "{r:?}");
    fs::remove_file(&s2).unwrap();
    expect(&check(&dir, t.path()), Kind::Deleted, &seg(&dir, 3), 0);
}

#[tokio::test]
async fn detects_a_rewritten_chain_by_its_signature() {
    let t = tempfile::tempdir().unwrap();
    let dir = make_chain(t.path(), 60).await;
    let s = seg(&dir, 1);
    // Edit one record and re-hash every record after it: the chain holds, the checkpoint not.
    let mut l = lines(&s);
    let mut prev = chain::GENESIS;
    for (i, line) in l.iter_mut().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut m = v.as_object().unwrap().clone();
        let seq = m.remove("seq").unwrap().as_u64().unwrap();
        m.remove("prev");
        m.remove("hash");
        if i == 2 {
            m.insert("statement".into(), "SELECT 'rewritten'".into());
        }
        let (sealed, h) = chain::seal(seq, &prev, &serde_json::Value::Object(m).to_string());
        *line = sealed.trim_end().to_owned();
        prev = h;
    }
    put(&s, &l);
    let r = check(&dir, t.path());
    let p = r.problem.as_ref().unwrap();
    assert!(matches!(p.kind, Kind::Edited | Kind::Inserted), "{p}");
    // A checkpoint signed by another key.
    let other = tempfile::tempdir().unwrap();
    let k2 = checkpoint::load_or_create_key(other.path())
        .unwrap()
        .verifying_key();
    let r = verify::verify_chain(&make_chain(other.path(), 5).await, Some(&key(t.path())));
    assert_eq!(r.problem.unwrap().kind, Kind::Checkpoint);
    assert!(verify::verify_chain(&other.path().join("audit/test-chain"), Some(&k2)).ok());
}

#[tokio::test]
async fn torn_tail_is_tolerated_only_while_open_and_cut_on_restart() {
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::start(settings(t.path(), 1 << 20)).unwrap();
    for i in 0..5 {
        log.commit(&rec(i)).await.unwrap();
    }
    drop(log); // no close: like kill -9, the segment stays open
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dir = t.path().join("audit/test-chain");
    let s = seg(&dir, 1);
    let mut bytes = fs::read(&s).unwrap();
    let torn = b"{\"seq\":7,\"prev\":\"ab";
    bytes.extend_from_slice(torn);
    fs::write(&s, &bytes).unwrap();
    let r = check(&dir, t.path());
    assert!(r.ok(), "{:?}", r.problem);
    assert!(
        r.warnings.iter().any(|w| w.contains("torn last line")),
        "{:?}",
        r.warnings
    );
    // The next daemon cuts it off (recording that), signs the segment, and goes on.
    let log = AuditLog::start(settings(t.path(), 1 << 20)).unwrap();
    log.commit(&rec(9)).await.unwrap();
    log.close().await;
    let r = check(&dir, t.path());
    assert!(r.ok(), "{:?}", r.problem);
    // Only the note that the crashed segment was signed at recovery.
    assert!(
        r.warnings
            .iter()
            .all(|w| w.contains("signed by a restarted daemon")),
        "{:?}",
        r.warnings
    );
    let all = sessions::load(&dir).unwrap();
    assert!(all
        .iter()
        .any(|v| v["type"] == "segment_open" && v["recovered_torn_bytes"] == torn.len()));
}

#[tokio::test]
async fn one_daemon_per_directory() {
    let t = tempfile::tempdir().unwrap();
    let _a = AuditLog::start(settings(t.path(), 1 << 20)).unwrap();
    let b = AuditLog::start(settings(t.path(), 1 << 20));
    assert!(
        matches!(b, Err(super::AuditError::Locked { .. })),
        "{:?}",
        b.err()
    );
}

#[tokio::test]
async fn group_commit_orders_concurrent_committers() {
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::start(settings(t.path(), 1 << 30)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for j in 0..50 {
                seqs.push(log.commit(&rec(i * 100 + j)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let s = t.await.unwrap();
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "a committer's records are in order"
        );
        all.extend(s);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 64 * 50, "every commit got its own position");
    log.close().await;
    assert!(check(&t.path().join("audit/test-chain"), t.path()).ok());
}

#[tokio::test]
async fn fails_closed_when_the_store_cannot_write() {
    // /dev/full: every write fails with ENOSPC, like a full disk.
    let log = AuditLog::open(Path::new("/dev/full")).await.unwrap();
    let e = log.commit(&rec(1)).await.unwrap_err();
    assert!(e.to_string().contains("cannot take records"), "{e}");
    // After close, commits are refused too.
    let t = tempfile::tempdir().unwrap();
    let log = AuditLog::start(settings(t.path(), 1 << 20)).unwrap();
    log.close().await;
    assert!(log.commit(&rec(2)).await.is_err());
}

#[test]
fn sessions_group_and_filter() {
    let recs: Vec<serde_json::Value> = [
        r#"{"time":"2026-01-01T10:00:00.000Z","type":"connection_open","session":"a-1","instance":"i","identity":{"pid":10,"uid":1000,"comm":"agent"},"destination":"127.0.0.2:5432"}"#,
        r#"{"time":"2026-01-01T10:00:00.100Z","type":"session_start","session":"a-1","instance":"i","resource":"app"}"#,
        r#"{"time":"2026-01-01T10:00:01.010Z","type":"statement","session":"a-1","instance":"i","statement":"SELECT 1","decision":"allow","rows":1,"fields_masked":2,"duration_ms":10.0}"#,
        r#"{"time":"2026-01-01T10:00:03.000Z","type":"statement","session":"a-1","instance":"i","statement":"DELETE FROM t","decision":"deny","rows":0,"duration_ms":0.0,"reason":"read only"}"#,
        r#"{"time":"2026-01-01T10:00:00.000Z","type":"connection","session":"a-1","instance":"i","decision":"allow","duration_ms":4000.0}"#,
        r#"{"time":"2026-01-01T11:00:00.000Z","type":"connection","session":"b-2","instance":"i","identity":{"pid":11,"uid":0,"comm":"curl"},"destination":"127.0.0.3:80","decision":"deny","duration_ms":0.1}"#,
    ]
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let s = sessions::build(&recs);
    assert_eq!(s.len(), 2);
    let a = &s[0];
    assert_eq!((a.id.as_str(), a.commands, a.denied), ("a-1", 2, 1));
    assert_eq!(a.resource.as_deref(), Some("app"));
    assert_eq!(a.log[0].offset_ms, 1000.0);
    assert_eq!(a.log[1].offset_ms, 3000.0);
    assert_eq!(a.log[0].fields_masked, Some(2));
    let f = sessions::Filter {
        identity: Some("curl".into()),
        ..Default::default()
    };
    assert_eq!(s.iter().filter(|x| f.matches(x)).count(), 1);
    let f = sessions::Filter {
        identity: Some("1000".into()),
        ..Default::default()
    };
    assert_eq!(
        s.iter()
            .filter(|x| f.matches(x))
            .map(|x| x.id.as_str())
            .collect::<Vec<_>>(),
        ["a-1"]
    );
    let f = sessions::Filter {
        resource: Some("app".into()),
        ..Default::default()
    };
    assert_eq!(s.iter().filter(|x| f.matches(x)).count(), 1);
    let f = sessions::Filter {
        since: Some(sessions::parse_since("2026-01-01T10:30:00Z").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        s.iter()
            .filter(|x| f.matches(x))
            .map(|x| x.id.as_str())
            .collect::<Vec<_>>(),
        ["b-2"]
    );
}

#[test]
fn refuses_an_audit_dir_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("audit");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let e = AuditLog::start(settings(t.path(), 1 << 20))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("chmod 700"), "{e}");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o755,
        "left as it was"
    );
}

#[test]
fn now_rfc3339_matches_humantime_to_the_millisecond() {
    for _ in 0..3 {
        let before = std::time::SystemTime::now();
        let ours = super::now_rfc3339();
        let after = std::time::SystemTime::now();
        let a = humantime::format_rfc3339_millis(before).to_string();
        let b = humantime::format_rfc3339_millis(after).to_string();
        assert_eq!(ours.len(), "2026-01-01T00:00:00.000Z".len(), "{ours}");
        assert!(a <= ours && ours <= b, "{a} <= {ours} <= {b}");
        humantime::parse_rfc3339(&ours).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
}
