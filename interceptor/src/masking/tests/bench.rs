//! A micro-benchmark of `mask_value` over the realistic customer rows (ignored by default).

use std::time::Instant;

use super::customers::{COLUMNS, REALISTIC_POLICY, ROWS};
use super::*;

/// `cargo test -p interceptor --release --lib masking::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_mask_values() {
    let m = masker(REALISTIC_POLICY);
    let all = m.plan(
        &COLUMNS
            .iter()
            .map(|&(name, text_like)| ColumnRef {
                table: Some("customers"),
                name,
                text_like,
                origins: &[],
            })
            .collect::<Vec<_>>(),
    );
    // 1,000 rows x 4 text columns (name, address, notes, email) through the
    // detectors; the rows repeat the 20 realistic ones.
    let four = m.plan(&cols(&[
        (Some("customers"), "name", true),
        (Some("customers"), "address", true),
        (Some("customers"), "notes", true),
        (Some("customers"), "email", true),
    ]));
    let four_rows: Vec<[&str; 4]> = (0..1000)
        .map(|i| {
            let r = &ROWS[i % ROWS.len()];
            [r[1], r[6], r[7], r[2]]
        })
        .collect();
    // The same without PII: the hot path.
    let clean_rows: Vec<[&str; 4]> = (0..1000)
        .map(|i| {
            let r = &ROWS[i % ROWS.len()];
            [
                r[1],
                r[6],
                "Prefers phone contact after 5pm; order #100234567 shipped",
                r[8],
            ]
        })
        .collect();

    let run4 = |rows: &[[&str; 4]]| {
        let mut changed = 0usize;
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                if let Some(x) = m.mask_value(&four, i, v.as_bytes()) {
                    changed += x.bytes.len();
                }
            }
        }
        changed
    };
    let run_all = || {
        let mut changed = 0usize;
        for i in 0..1000 {
            for (c, v) in ROWS[i % ROWS.len()].iter().enumerate() {
                if let Some(x) = m.mask_value(&all, c, v.as_bytes()) {
                    changed += x.bytes.len();
                }
            }
        }
        changed
    };
    // On-CPU time of this thread (scheduler accounting), so that other
    // processes competing for the two cores do not count.
    let cpu_ns = || -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let time = |name: &str, values: usize, f: &dyn Fn() -> usize| {
        let mut sink = 0;
        for _ in 0..20 {
            sink += f();
        }
        let rounds = 200;
        let (mut best, mut cpu_total) = (f64::MAX, 0u64);
        for _ in 0..rounds {
            let (t, c) = (Instant::now(), cpu_ns());
            sink += f();
            cpu_total += cpu_ns() - c;
            best = best.min(t.elapsed().as_nanos() as f64);
        }
        // Scheduler accounting is coarse: only the mean is meaningful.
        let cpu = cpu_total as f64 / f64::from(rounds);
        println!(
            "{name}: {values} values; best {:.0} us wall, mean {:.0} us on-CPU per result set; \
             {:.1} ns/value (best wall), {:.1} ns/value (mean on-CPU) (sink {})",
            best / 1000.0,
            cpu / 1000.0,
            best / values as f64,
            cpu / values as f64,
            sink % 10
        );
    };
    time(
        "1000 rows x 4 text columns, realistic (PII in ~45%)",
        4000,
        &|| run4(&four_rows),
    );
    time("1000 rows x 4 text columns, no PII", 4000, &|| {
        run4(&clean_rows)
    });
    time(
        "1000 rows x 10 columns, realistic customers",
        10_000,
        &run_all,
    );
}
