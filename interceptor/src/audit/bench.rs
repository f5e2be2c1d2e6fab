//! `interceptor audit bench` (used by `cargo xtask bench audit`): many concurrent committers
//! each waiting for its record to be durable (write before forward), as statements do.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{verify, AuditError, AuditLog, Settings};

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub committers: usize,
    pub records: usize,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub commit_p50_us: f64,
    pub commit_p99_us: f64,
    pub bytes_per_record: f64,
    pub verify_records_per_sec: f64,
}

/// A record shaped like a PostgreSQL `command` record.
#[derive(Serialize)]
struct Rec<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a str,
    instance: &'static str,
    resource: &'static str,
    protocol: &'static str,
    statement: String,
    classification: &'static str,
    decision: &'static str,
    rule: &'static str,
}

pub async fn run(dir: &Path, committers: usize, records: usize) -> Result<BenchResult, AuditError> {
    let log = AuditLog::start(Settings {
        plain: None,
        dir: dir.join("audit"),
        chain: "bench".into(),
        state_dir: dir.to_path_buf(),
        segment_bytes: 64 << 20,
        segment_age: Duration::from_secs(3600),
        durable: true,
    })?;
    let per = records.div_ceil(committers.max(1));
    let started = Instant::now();
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(per * committers)));
    let mut tasks = Vec::new();
    for c in 0..committers {
        let (log, lat) = (log.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let session = format!("bench-{c:06}");
            let mut mine = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                log.commit(&Rec {
                    time: super::now_rfc3339(),
                    kind: "command",
                    session: &session,
                    instance: "bench",
                    resource: "appdb",
                    protocol: "simple",
                    statement: format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i};"),
                    classification: "SelectStmt read [pgbench_accounts]",
                    decision: "allow",
                    rule: "bench-read",
                })
                .await?;
                mine.push(t.elapsed().as_secs_f64() * 1e6);
            }
            lat.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            Ok::<(), AuditError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|_| AuditError::Closed)??;
    }
    let seconds = started.elapsed().as_secs_f64();
    log.close().await;
    let total = per * committers;
    let mut l = std::mem::take(&mut *lat.lock().unwrap_or_else(|e| e.into_inner()));
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let chain = dir.join("audit/bench");
    let bytes: u64 = std::fs::read_dir(&chain)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let key = super::checkpoint::load_key(dir)?.verifying_key();
    let vt = Instant::now();
    let report = verify::verify_chain(&chain, Some(&key));
    let vs = vt.elapsed().as_secs_f64();
    if let Some(p) = report.problem {
        return Err(AuditError::Recover {
            path: chain,
            detail: format!("the benchmark's own chain does not verify: {p}"),
        });
    }
    Ok(BenchResult {
        committers,
        records: total,
        seconds,
        records_per_sec: total as f64 / seconds,
        commit_p50_us: pct(0.5),
        commit_p99_us: pct(0.99),
        bytes_per_record: bytes as f64 / report.records.max(1) as f64,
        verify_records_per_sec: report.records as f64 / vs,
    })
}
