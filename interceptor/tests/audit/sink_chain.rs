//! The sink driven directly (library API) on chains written by `AuditLog`: a record that
//! jsonb refuses, a chain restarted under the same name, a chain broken locally.

use super::*;
use interceptor::audit::{sink_pg, AuditLog, Settings};

struct SinkFixture {
    sink: Pg,
    root: tempfile::TempDir,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl SinkFixture {
    fn new() -> SinkFixture {
        let sink = Pg::start();
        sink.sql("postgres", "CREATE ROLE sink LOGIN PASSWORD 'sink-pw'");
        sink.sql("postgres", "CREATE DATABASE auditdb OWNER sink");
        let url = format!("postgres://sink:sink-pw@127.0.0.2:{}/auditdb", sink.port);
        SinkFixture {
            sink,
            root: tempfile::tempdir().unwrap(),
            url,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn chain_dir(&self) -> PathBuf {
        self.root.path().join("audit/attach-sinktest")
    }

    fn settings(&self) -> Settings {
        Settings {
            plain: None,
            dir: self.root.path().join("audit"),
            chain: "attach-sinktest".into(),
            state_dir: self.root.path().to_path_buf(),
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            durable: true,
        }
    }

    /// Writes `recs` as a new daemon would, then runs the sink until it has copied
    /// `expect` rows in all (or gives up) and stops it.
    fn write_and_sink(&self, recs: &[Value], expect: i64) -> Option<i64> {
        self.rt.block_on(async {
            let log = AuditLog::start(self.settings()).unwrap();
            for r in recs {
                log.commit(r).await.unwrap();
            }
            let cfg =
                sink_pg::SinkConfig::new(&self.url, None, "attach-sinktest", &self.chain_dir())
                    .unwrap();
            let (stop, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(sink_pg::run(cfg, log.durable_position(), rx));
            let mut n = None;
            for _ in 0..150 {
                n = self.count("true");
                if n == Some(expect) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = stop.send(true);
            let _ = task.await;
            log.close().await;
            n
        })
    }

    fn count(&self, cond: &str) -> Option<i64> {
        sink_count(&self.sink, "auditdb", cond)
    }
}

fn stmt(i: usize) -> Value {
    serde_json::json!({"type": "command", "session": "s1", "statement": format!("SELECT {i}")})
}

#[test]
fn audit_sink_stores_a_record_jsonb_refuses_and_goes_on() {
    if !root_or_skip("audit_sink_stores_a_record_jsonb_refuses_and_goes_on") {
        return;
    }
    let f = SinkFixture::new();
    let mut recs: Vec<Value> = (0..3).map(stmt).collect();
    recs.push(serde_json::json!({"type": "approval", "session": "s1", "reason": "ok\u{0}then"}));
    recs.extend((3..6).map(stmt));
    // segment_open + 7 records.
    assert_eq!(
        f.write_and_sink(&recs, 8),
        Some(8),
        "the sink stalled on the NUL record"
    );
    assert_eq!(
        f.count("record->>'sink_nul_replaced' = 'true' AND record->>'reason' = 'ok\u{fffd}then'"),
        Some(1)
    );
}

#[test]
fn audit_sink_copies_a_restarted_chain_under_a_name_of_its_own() {
    if !root_or_skip("audit_sink_copies_a_restarted_chain_under_a_name_of_its_own") {
        return;
    }
    let f = SinkFixture::new();
    let first: Vec<Value> = (0..10).map(stmt).collect();
    assert_eq!(f.write_and_sink(&first, 11), Some(11));
    // The directory moved aside (as the recovery error suggests): a new chain, same name.
    std::fs::rename(f.chain_dir(), f.root.path().join("aside")).unwrap();
    let second: Vec<Value> = (100..103).map(stmt).collect();
    assert_eq!(
        f.write_and_sink(&second, 15),
        Some(15),
        "the new chain was skipped"
    );
    assert_eq!(f.count("chain = 'attach-sinktest'"), Some(11));
    assert_eq!(
        f.count("chain LIKE 'attach-sinktest~%' AND record->>'statement' LIKE 'SELECT 10_'"),
        Some(3)
    );
}

#[test]
fn audit_sink_stops_at_a_broken_link_instead_of_copying_past_it() {
    if !root_or_skip("audit_sink_stops_at_a_broken_link_instead_of_copying_past_it") {
        return;
    }
    let f = SinkFixture::new();
    let recs: Vec<Value> = (0..6).map(stmt).collect();
    assert_eq!(f.write_and_sink(&recs, 7), Some(7));
    // A record forged locally (edited content) before the next records are copied.
    let seg = f.chain_dir().join("segment-000002.jsonl");
    let more: Vec<Value> = (10..14).map(stmt).collect();
    f.rt.block_on(async {
        let log = AuditLog::start(f.settings()).unwrap();
        for r in &more {
            log.commit(r).await.unwrap();
        }
        log.close().await;
    });
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(&seg, text.replace("SELECT 11", "SELECT 99")).unwrap();
    // segment_open and SELECT 10 are good; SELECT 11 (edited) and after are not copied.
    let n = f.write_and_sink(&[], 100);
    assert_eq!(n, Some(7 + 2), "copied past the edited record");
    assert_eq!(f.count("record->>'statement' = 'SELECT 99'"), Some(0));
}
