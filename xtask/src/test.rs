//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use crate::build::{self, Profile, EBPF_OBJECT_ENV};
use crate::util::{fmt_duration, host_cargo, run, workspace_root};
use crate::vm_test;

/// Integration tests run this daemon binary.
const INTERCEPTOR_BIN_ENV: &str = "INTERCEPTOR_BIN";

#[derive(Args, Debug, Default)]
pub struct TestArgs {
    /// Reuse the existing release build (eBPF object and daemon) instead of building.
    #[arg(long)]
    pub skip_build: bool,
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub skip_lint: bool,
    /// Only run tests whose name contains this string (forwarded to `cargo test`).
    #[arg(long, value_name = "STR")]
    pub filter: Option<String>,
    /// Test threads per test binary (`--test-threads`); default: cargo's.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
    NotRun,
}

struct Step {
    name: &'static str,
    outcome: Outcome,
    time: Duration,
}

/// What a step function reports when it did not fail.
enum Done {
    Ran,
    Skipped(String),
}

pub fn run_tests(args: &TestArgs) -> Result<()> {
    let ebpf_object = build::ebpf_object_path();
    let daemon = build::daemon_path(Profile::Release);

    type StepFn<'a> = Box<dyn Fn() -> Result<Done> + 'a>;
    let plan: Vec<(&'static str, Option<&str>, StepFn)> = vec![
        (
            "build",
            args.skip_build.then_some("--skip-build"),
            Box::new(|| build::build(Profile::Release).map(|()| Done::Ran)),
        ),
        (
            "fmt",
            args.skip_lint.then_some("--skip-lint"),
            Box::new(fmt),
        ),
        (
            "clippy",
            args.skip_lint.then_some("--skip-lint"),
            Box::new(|| clippy(&ebpf_object)),
        ),
        (
            "test",
            None,
            Box::new(|| cargo_test(args, &ebpf_object, &daemon)),
        ),
        ("policy check", None, Box::new(|| policy_check(&daemon))),
        (
            "vm tests",
            None,
            Box::new(|| vm_test::vm_suite().map(|()| Done::Ran)),
        ),
    ];

    if args.skip_build && !ebpf_object.is_file() {
        bail!(
            "--skip-build: {} does not exist; run `cargo xtask build` first",
            ebpf_object.display()
        );
    }

    let total = plan.len();
    let mut steps = Vec::with_capacity(total);
    let mut failed = false;
    for (i, (name, skip_flag, step_fn)) in plan.into_iter().enumerate() {
        if failed {
            steps.push(Step {
                name,
                outcome: Outcome::NotRun,
                time: Duration::ZERO,
            });
            continue;
        }
        println!("\n==> [{}/{total}] {name}", i + 1);
        if let Some(flag) = skip_flag {
            println!("<== {name}: skipped ({flag})");
            steps.push(Step {
                name,
                outcome: Outcome::Skipped(flag.to_owned()),
                time: Duration::ZERO,
            });
            continue;
        }
        let start = Instant::now();
        let result = step_fn();
        let time = start.elapsed();
        let outcome = match result {
            Ok(Done::Ran) => Outcome::Passed,
            Ok(Done::Skipped(why)) => Outcome::Skipped(why),
            Err(e) => {
                failed = true;
                Outcome::Failed(format!("{e:#}"))
            }
        };
        let verdict = match &outcome {
            Outcome::Passed => "passed".to_owned(),
            Outcome::Skipped(why) => format!("skipped ({why})"),
            Outcome::Failed(e) => format!("FAILED: {e}"),
            Outcome::NotRun => unreachable!(),
        };
        println!("<== {name}: {verdict} in {}", fmt_duration(time));
        steps.push(Step {
            name,
            outcome,
            time,
        });
    }

    print_summary(&steps);
    if let Some(step) = steps
        .iter()
        .find(|s| matches!(s.outcome, Outcome::Failed(_)))
    {
        bail!("step `{}` failed", step.name);
    }
    Ok(())
}

fn print_summary(steps: &[Step]) {
    println!("\nsummary");
    println!("  {:<14} {:<8} {:>8}  note", "step", "result", "time");
    let mut total = Duration::ZERO;
    for step in steps {
        total += step.time;
        let (result, note) = match &step.outcome {
            Outcome::Passed => ("pass", String::new()),
            Outcome::Skipped(why) => ("skip", why.clone()),
            Outcome::Failed(e) => ("FAIL", e.lines().next().unwrap_or_default().to_owned()),
            Outcome::NotRun => ("-", "not run".to_owned()),
        };
        let time = if matches!(step.outcome, Outcome::Passed | Outcome::Failed(_)) {
            fmt_duration(step.time)
        } else {
            String::new()
        };
        println!("  {:<14} {result:<8} {time:>8}  {note}", step.name);
    }
    println!("  {:<14} {:<8} {:>8}", "total", "", fmt_duration(total));
}

fn fmt() -> Result<Done> {
    run(host_cargo()
        .args(["fmt", "--all", "--check"])
        .current_dir(workspace_root()))?;
    Ok(Done::Ran)
}

fn clippy(ebpf_object: &Path) -> Result<Done> {
    run(host_cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env(EBPF_OBJECT_ENV, ebpf_object)
        .current_dir(workspace_root()))?;
    Ok(Done::Ran)
}

fn cargo_test(args: &TestArgs, ebpf_object: &Path, daemon: &Path) -> Result<Done> {
    let mut cmd = host_cargo();
    // --no-fail-fast: one failing unit test should not hide the integration tests' results.
    cmd.args(["test", "--workspace", "--release", "--no-fail-fast"]);
    if let Some(filter) = &args.filter {
        cmd.arg(filter);
    }
    if let Some(jobs) = args.jobs {
        cmd.arg("--").arg(format!("--test-threads={jobs}"));
    }
    cmd.env(EBPF_OBJECT_ENV, ebpf_object)
        .env(INTERCEPTOR_BIN_ENV, daemon)
        .current_dir(workspace_root());
    // Inherited anyway; set explicitly so the printed command shows it.
    if let Some(ci) = std::env::var_os("CI") {
        cmd.env("CI", ci);
    }
    run(&mut cmd)?;
    Ok(Done::Ran)
}

/// `interceptor policy check <file>` for every policies/examples/*.yaml.
fn policy_check(daemon: &Path) -> Result<Done> {
    let dir = workspace_root().join("policies/examples");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        return Ok(Done::Skipped(format!("no *.yaml in {}", dir.display())));
    }
    files.sort();
    if !daemon.is_file() {
        bail!("{} does not exist; build it first", daemon.display());
    }
    for file in &files {
        run(Command::new(daemon)
            .args(["policy", "check"])
            .arg(file)
            .current_dir(workspace_root()))?;
    }
    Ok(Done::Ran)
}
