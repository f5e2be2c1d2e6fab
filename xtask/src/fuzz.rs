//! `cargo xtask fuzz TARGET --time N` / `--all`: builds and runs the cargo-fuzz targets in
//! `fuzz/` (libFuzzer, nightly) one at a time and reports executions per target.
//!
//! The corpus a run grows lives in `target/fuzz/corpus/TARGET`; the committed hand-made seeds
//! in `fuzz/seeds/TARGET` are read by every run. A crash leaves its input in
//! `target/fuzz/artifacts/TARGET/` and fails the command.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::util::{display, fmt_duration, host_cargo, host_target_dir, nightly, workspace_root};

/// The targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &[
    "pg_frontend",
    "pg_backend",
    "sql_classify",
    "policy_load",
    "http_request",
    "http_mask",
    "http_records",
    "http_inflate",
    "http_path",
    "dns_wire",
];

const CARGO_FUZZ: &str = "cargo-fuzz";

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// The target to run (one of: pg_frontend, pg_backend, sql_classify, policy_load,
    /// http_request, http_mask, http_records, http_inflate, http_path, dns_wire).
    #[arg(required_unless_present_any = ["all", "list"], conflicts_with = "all")]
    pub target: Option<String>,
    /// Run every target, one after the other.
    #[arg(long)]
    pub all: bool,
    /// Print the targets and exit.
    #[arg(long)]
    pub list: bool,
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// libFuzzer sanitizer: address (default, catches memory errors in unsafe code of the
    /// dependencies) or none (faster).
    #[arg(long, default_value = "address")]
    pub sanitizer: String,
}

/// The numbers libFuzzer prints at the end of a run (`-print_final_stats=1`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub executions: u64,
    pub execs_per_sec: u64,
    pub new_units: u64,
    pub peak_rss_mb: u64,
    /// Coverage (edges) of the last status line.
    pub cov: u64,
    pub corpus: u64,
}

pub fn run_fuzz(args: &FuzzArgs) -> Result<()> {
    if args.list {
        for t in TARGETS {
            println!("{t}");
        }
        return Ok(());
    }
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    if !["address", "none"].contains(&args.sanitizer.as_str()) {
        bail!("--sanitizer must be `address` or `none`");
    }
    ensure_cargo_fuzz(false)?;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        // One crashing target does not stop the others.
        match fuzz_one(t, args) {
            Ok(stats) => results.push((*t, stats)),
            Err(e) => {
                eprintln!("xtask: {e:#}");
                failed.push(*t);
            }
        }
    }
    println!(
        "\nfuzz summary ({} s per target, sanitizer {}):",
        args.time, args.sanitizer
    );
    println!(
        "  {:<14} {:>14} {:>10} {:>8} {:>8} {:>9}",
        "target", "executions", "exec/s", "cov", "corpus", "peak RSS"
    );
    for (t, s) in &results {
        println!(
            "  {:<14} {:>14} {:>10} {:>8} {:>8} {:>6} MB",
            t, s.executions, s.execs_per_sec, s.cov, s.corpus, s.peak_rss_mb
        );
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is missing (`setup --fuzz` and
/// `xtask fuzz` call this; nothing else needs it).
pub fn ensure_cargo_fuzz(dry_run: bool) -> Result<()> {
    let present = nightly("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        println!("setup: {CARGO_FUZZ:<22} present");
        return Ok(());
    }
    if dry_run {
        println!("setup: {CARGO_FUZZ:<22} missing: would cargo install {CARGO_FUZZ} --locked");
        return Ok(());
    }
    crate::util::run(host_cargo().args(["install", CARGO_FUZZ, "--locked"]))
}

fn fuzz_one(target: &str, args: &FuzzArgs) -> Result<Stats> {
    let root = workspace_root();
    let work = host_target_dir().join("fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let logs = work.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let seeds = seeds_dir(target);
    let mut cmd = nightly("cargo");
    cmd.current_dir(&root)
        .args(["fuzz", "run", target, "--fuzz-dir", "fuzz", "--target-dir"])
        .arg(work.join("build"))
        .args(["--sanitizer", &args.sanitizer])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", args.time))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    println!("$ {}", display(&cmd));
    let log_path = logs.join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path)?;
    let mut started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start cargo fuzz")?;
    let mut stats = Stats::default();
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        if line.starts_with("INFO: Running with entropic power schedule") {
            started = Instant::now(); // the build is done; fuzzing starts
        }
        parse_line(&line, &mut stats);
        // Status lines every power of two and at pulses; everything else (build output,
        // crash reports) in full.
        if !line.starts_with('#') || line.contains("DONE") || line.contains("pulse") {
            eprintln!("{line}");
        }
    }
    let status = child.wait()?;
    println!(
        "fuzz {target}: {} executions in {} of fuzzing ({} exec/s), cov {}, corpus {}, log {}",
        stats.executions,
        fmt_duration(started.elapsed()),
        stats.execs_per_sec,
        stats.cov,
        stats.corpus,
        log_path.display()
    );
    if !status.success() {
        bail!(
            "fuzz target {target} failed ({status}); the crashing input is in {} — add it as a \
             regression test and fix the code (log: {})",
            artifacts.display(),
            log_path.display()
        );
    }
    Ok(stats)
}

/// Updates `stats` from one libFuzzer stderr line.
pub fn parse_line(line: &str, stats: &mut Stats) {
    if let Some(rest) = line.strip_prefix("stat::") {
        let Some((key, value)) = rest.split_once(':') else {
            return;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            return;
        };
        match key {
            "number_of_executed_units" => stats.executions = v,
            "average_exec_per_sec" => stats.execs_per_sec = v,
            "new_units_added" => stats.new_units = v,
            "peak_rss_mb" => stats.peak_rss_mb = v,
            _ => {}
        }
        return;
    }
    if line.starts_with('#') {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            let slot = match w {
                "cov:" => &mut stats.cov,
                "corp:" => &mut stats.corpus,
                _ => continue,
            };
            if let Some(n) = words.next().and_then(|n| n.split('/').next()) {
                if let Ok(n) = n.parse() {
                    *slot = n;
                }
            }
        }
    }
}

/// The committed seed directory of a target.
fn seeds_dir(target: &str) -> PathBuf {
    workspace_root().join("fuzz/seeds").join(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_output() {
        let mut s = Stats::default();
        for l in [
            "#2\tINITED cov: 120 ft: 130 corp: 6/512b exec/s: 0 rss: 40Mb",
            "#524288\tpulse  cov: 900 ft: 2000 corp: 150/9Kb lim: 4096 exec/s: 17476 rss: 80Mb",
            "#600000\tDONE   cov: 912 ft: 2044 corp: 161/10Kb lim: 4096 exec/s: 19354 rss: 81Mb",
            "stat::number_of_executed_units: 600000",
            "stat::average_exec_per_sec:     19354",
            "stat::new_units_added:          155",
            "stat::peak_rss_mb:              81",
        ] {
            parse_line(l, &mut s);
        }
        assert_eq!(
            s,
            Stats {
                executions: 600_000,
                execs_per_sec: 19_354,
                new_units: 155,
                peak_rss_mb: 81,
                cov: 912,
                corpus: 161,
            }
        );
    }

    #[test]
    fn every_target_has_seeds_and_a_source() {
        for t in TARGETS {
            let seeds = fs::read_dir(seeds_dir(t)).map(|d| d.count()).unwrap_or(0);
            assert!(seeds > 0, "no seeds for {t}");
            let src = workspace_root().join(format!("fuzz/fuzz_targets/{t}.rs"));
            assert!(src.exists(), "{} missing", src.display());
        }
    }
}
