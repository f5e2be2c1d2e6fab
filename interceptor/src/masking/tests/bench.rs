//! Micro-benchmarks of `mask_value` over the realistic customer rows and of JSON masking (ignored by default).

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
                table_unknown: false,
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

/// `cargo test -p interceptor --release --lib masking::tests::bench::bench_mask_json -- --ignored --nocapture`
///
/// A JSON answer of the 1,000 realistic customer rows (10 members each, numbers as
/// numbers) masked in place (`mask_json_text`) and the former way (parsed into a `Value`,
/// walked, written out again): with the realistic policy's detectors and two field rules,
/// and the same rows with nothing to mask.
#[test]
#[ignore]
fn bench_mask_json() {
    use super::value_oracle::old_mask;
    let m = masker(REALISTIC_POLICY);
    let rules = [
        FieldRule::new("$[*].ssn", Strategy::Redact).unwrap(),
        FieldRule::new("$[*].card_number", Strategy::PARTIAL).unwrap(),
    ];
    let row = |r: &[&str; 10], pii: bool| {
        let mut o = serde_json::Map::new();
        for (i, &(name, text_like)) in COLUMNS.iter().enumerate() {
            let v = match (text_like, pii) {
                (false, _) => serde_json::from_str(r[i])
                    .unwrap_or_else(|_| serde_json::Value::String(r[i].to_owned())),
                (true, true) => r[i].into(),
                (true, false) => format!("value {i} of row {}", r[0]).into(),
            };
            o.insert(name.to_owned(), v);
        }
        serde_json::Value::Object(o)
    };
    let doc = |pii: bool| {
        let rows: Vec<_> = (0..1000).map(|i| row(&ROWS[i % ROWS.len()], pii)).collect();
        serde_json::to_string_pretty(&rows).unwrap()
    };
    let (realistic, clean) = (doc(true), doc(false));
    let no_rules: [FieldRule; 0] = [];
    let time = |name: &str, f: &dyn Fn() -> usize| {
        let mut sink = 0;
        for _ in 0..5 {
            sink += f();
        }
        let mut best = f64::MAX;
        for _ in 0..50 {
            let t = Instant::now();
            sink += f();
            best = best.min(t.elapsed().as_nanos() as f64);
        }
        println!("{name}: best {:.0} us (sink {})", best / 1000.0, sink % 10);
    };
    for (what, text) in [("realistic", &realistic), ("no PII", &clean)] {
        let fields: &[FieldRule] = if what == "no PII" { &no_rules } else { &rules };
        println!("{what}: {} bytes", text.len());
        time(&format!("  {what}, in place"), &|| {
            m.mask_json_text(text.as_bytes(), fields)
                .unwrap()
                .map_or(0, |(_, n)| n)
        });
        time(&format!("  {what}, former (Value)"), &|| {
            old_mask(&m, text.as_bytes(), fields)
                .unwrap()
                .map_or(0, |(_, n)| n)
        });
    }
}
