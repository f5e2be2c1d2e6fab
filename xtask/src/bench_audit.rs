//! `cargo xtask bench audit` (issue 6):
//!
//! 1. records/s of the chained store with write before forward and group commit:
//!    `interceptor audit bench` with 1, 64, 1024 and 4096 concurrent committers, each
//!    waiting for its record's fdatasync (p50/p99 commit latency, verify speed);
//! 2. the latency a PostgreSQL query pays for it: `pgbench -S` (simple protocol) with 1 and
//!    8 clients, direct vs through the interceptor with `--audit-mode durable` (default) vs
//!    `--audit-mode async`; ratios of average latency.
//!
//! Prints a summary and writes it to target/bench/audit.txt. Loopback only. `BENCH_SECS`
//! overrides the 10 s per pgbench run.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::pg::{self, Cluster};
use crate::util::{is_root, workspace_root};

const HOST: &str = "127.0.0.2";

fn committers(
    interceptor: &Path,
    dir: &Path,
    n: usize,
    records: usize,
) -> Result<serde_json::Value> {
    let scratch = dir.join(format!("audit-bench-{n}"));
    let _ = fs::remove_dir_all(&scratch);
    let out = Command::new(interceptor)
        .args(["--log", "warn", "audit", "bench", "--dir"])
        .arg(&scratch)
        .args([
            "--committers",
            &n.to_string(),
            "--records",
            &records.to_string(),
        ])
        .output()?;
    let _ = fs::remove_dir_all(&scratch);
    if !out.status.success() {
        bail!("audit bench: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// pgbench's (tps, average latency ms).
fn pgbench(
    cluster: &Cluster,
    password: &str,
    wrap: Option<(&Path, &Path, &str, &Path)>,
    clients: &str,
    secs: u64,
) -> Result<(f64, f64)> {
    let port = cluster.port.to_string();
    let secs = secs.to_string();
    let args = [
        "-S",
        "-n",
        "-c",
        clients,
        "-j",
        if clients == "1" { "1" } else { "2" },
        "-T",
        &secs,
        "-h",
        HOST,
        "-p",
        &port,
        "-U",
        "bench",
        "bench",
    ];
    let mut c = match wrap {
        Some((bin, policy, mode, state)) => {
            let mut c = Command::new(bin);
            c.arg("--state-dir")
                .arg(state)
                .args(["--log", "warn", "run", "--policy"])
                .arg(policy)
                .args(["--audit-mode", mode, "--"])
                .arg(cluster.bin("pgbench"));
            c
        }
        None => Command::new(cluster.bin("pgbench")),
    };
    let out = c
        .args(args)
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .output()?;
    let so = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {so}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let num = |prefix: &str| {
        so.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
            .with_context(|| format!("no `{prefix}` in pgbench's output:\n{so}"))
    };
    Ok((num("tps = ")?, num("latency average = ")?))
}

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("the benchmark attaches eBPF programs: run it as root");
    }
    build::build(Profile::Release)?;
    let dir = workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let bin = build::daemon_path(Profile::Release);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut report = String::new();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        report,
        "audit benchmark on {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    println!("==> group commit: concurrent committers, each waiting for its fdatasync");
    let _ = writeln!(
        report,
        "\n1. chained store, write before forward (each commit waits for fdatasync):"
    );
    let _ = writeln!(
        report,
        "   {:>10} {:>12} {:>12} {:>12} {:>14}",
        "committers", "records/s", "p50 commit", "p99 commit", "verify rec/s"
    );
    for (n, records) in [
        (1usize, 1000usize),
        (64, 100_000),
        (1024, 300_000),
        (4096, 300_000),
    ] {
        let r = committers(&bin, &dir, n, records)?;
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let line = format!(
            "   {:>10} {:>12.0} {:>9.1} ms {:>9.1} ms {:>14.0}",
            n,
            f("records_per_sec"),
            f("commit_p50_us") / 1000.0,
            f("commit_p99_us") / 1000.0,
            f("verify_records_per_sec")
        );
        println!("{line}");
        let _ = writeln!(report, "{line}");
    }

    println!("==> throwaway PostgreSQL 15 on {HOST}");
    let cluster = Cluster::start(
        &dir.join("pg-audit"),
        HOST,
        &[("fsync", "off"), ("max_connections", "100")],
    )?;
    let password = pg::random_hex(16)?;
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE bench LOGIN PASSWORD '{password}'"),
    )?;
    cluster.sql("postgres", "CREATE DATABASE bench OWNER bench")?;
    cluster.sql(
        "bench",
        "SET ROLE bench; CREATE TABLE people (id int PRIMARY KEY, ssn text, card_number text)",
    )?;
    let pass = dir.join("pg-audit-bench.pass");
    fs::write(&pass, format!("{password}\n"))?;
    fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let policy = dir.join("pg-audit-bench.yaml");
    fs::write(&policy, crate::bench_pg::policy(cluster.port, &pass, false))?;
    let init = Command::new(cluster.bin("pgbench"))
        .args(["-i", "-s", "1", "-q", "-h", HOST, "-p"])
        .arg(cluster.port.to_string())
        .args(["-U", "bench", "bench"])
        .env("PGPASSWORD", &password)
        .output()?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    let state = dir.join("audit-bench-state");
    let _ = writeln!(
        report,
        "\n2. pgbench -S (simple protocol), {secs} s per run: average latency per query"
    );
    let _ = writeln!(
        report,
        "   {:>8} {:>12} {:>16} {:>16} {:>18} {:>18}",
        "clients", "direct", "async audit", "durable audit", "durable/async", "durable/direct"
    );
    for clients in ["1", "8"] {
        println!("==> pgbench -S -c {clients}");
        let (_, direct) = pgbench(&cluster, &password, None, clients, secs)?;
        let (_, asynch) = pgbench(
            &cluster,
            &password,
            Some((&bin, &policy, "async", &state)),
            clients,
            secs,
        )?;
        let (_, durable) = pgbench(
            &cluster,
            &password,
            Some((&bin, &policy, "durable", &state)),
            clients,
            secs,
        )?;
        let line = format!("   {clients:>8} {direct:>9.3} ms {asynch:>13.3} ms {durable:>13.3} ms {:>18.2} {:>18.2}", durable / asynch, durable / direct);
        println!("{line}");
        let _ = writeln!(report, "{line}");
    }
    let _ = fs::remove_dir_all(&state);
    println!("\n{report}");
    fs::write(dir.join("audit.txt"), &report)?;
    println!("written to {}", dir.join("audit.txt").display());
    Ok(())
}
