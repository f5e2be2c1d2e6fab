//! Runs the cases: finds the interceptor, probes the kernel with `interceptor doctor`,
//! runs each case in its own scratch directory and prints the report.

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{lifecycle::no_leftovers, TestFn, TESTS};
use crate::harness::{exec, fail, leftovers, Ctx, Env, Fail, TestResult, CMD_TIMEOUT};
use crate::init;

/// Exit code of `interceptor doctor` for an unsupported kernel.
const DOCTOR_UNSUPPORTED: i32 = 3;

pub struct Options {
    pub interceptor: Option<PathBuf>,
    pub filter: Option<String>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub unsupported: Option<String>,
}
/// Finds the interceptor binary: the option, `$INTERCEPTOR_BIN`, `/bin/interceptor` (the
/// VM), next to this binary, or `target/release/interceptor` from the working directory.
fn find_interceptor(opt: Option<PathBuf>) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(opt);
    candidates.extend(std::env::var_os("INTERCEPTOR_BIN").map(PathBuf::from));
    candidates.push("/bin/interceptor".into());
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            candidates.push(dir.join("interceptor"));
            candidates.push(dir.join("../release/interceptor"));
        }
    }
    candidates.push("target/release/interceptor".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| fs::canonicalize(&p).unwrap_or(p))
        .ok_or_else(|| "interceptor binary not found: pass --interceptor PATH".to_string())
}

pub fn run(opts: Options) -> Summary {
    let release = init::kernel_release();
    println!("vm-suite: kernel {release}");
    let mut summary = Summary::default();
    let selected: Vec<&(&str, TestFn)> = TESTS
        .iter()
        .filter(|(name, _)| opts.filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();

    let setup = (|| -> Result<Ctx, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (BPF and cgroup v2)".into());
        }
        let interceptor = find_interceptor(opts.interceptor)?;
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let root = std::env::temp_dir().join(format!("vm-suite-{}", std::process::id()));
        fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        // The interceptor's `run` drops nothing, but `nobody` may need to traverse it.
        Ok(Ctx {
            interceptor,
            me,
            root,
            in_vm: init::is_pid1(),
            instances: Mutex::new(Vec::new()),
        })
    })();
    let ctx = match setup {
        Ok(c) => c,
        Err(e) => {
            for (name, _) in &selected {
                println!("SKIP {name}: {e}");
                summary.skipped += 1;
            }
            print_summary(&summary);
            return summary;
        }
    };
    println!("vm-suite: interceptor {}", ctx.interceptor.display());

    // Feature probe first: an unsupported kernel is reported as such, not as failures.
    match doctor(&ctx) {
        Ok(()) => {}
        Err(Doctor::Unsupported(reason)) => {
            println!("vm-suite: kernel {release} unsupported: {reason}");
            for (name, _) in &selected {
                println!("SKIP {name}: kernel unsupported");
                summary.skipped += 1;
            }
            summary.unsupported = Some(reason);
            print_summary(&summary);
            let _ = fs::remove_dir_all(&ctx.root);
            return summary;
        }
        Err(Doctor::Broken(reason, context)) => {
            report("doctor", Err(Fail::Fail(reason, context)), &mut summary);
            for (name, _) in &selected {
                println!("SKIP {name}: doctor failed");
                summary.skipped += 1;
            }
            print_summary(&summary);
            let _ = fs::remove_dir_all(&ctx.root);
            return summary;
        }
    }

    for (name, test) in selected {
        let start = Instant::now();
        let result = run_one(&ctx, name, *test);
        report_timed(name, result, Some(start.elapsed()), &mut summary);
        if ctx.in_vm {
            init::reap_zombies();
        }
    }
    if opts.filter.is_none() {
        let result = no_leftovers(&ctx);
        report("no_leftovers_at_end", result, &mut summary);
    }
    let _ = fs::remove_dir_all(&ctx.root);
    print_summary(&summary);
    summary
}

fn print_summary(s: &Summary) {
    println!(
        "vm-suite: {} passed, {} failed, {} skipped",
        s.passed, s.failed, s.skipped
    );
}

fn report(name: &str, result: TestResult, summary: &mut Summary) {
    report_timed(name, result, None, summary)
}

/// `PASS name (1.2s)`, `FAIL name: reason (after 1.2s)` + context lines, `SKIP name: reason`.
fn report_timed(name: &str, result: TestResult, time: Option<Duration>, summary: &mut Summary) {
    let secs = time.map(|t| t.as_secs_f64());
    match result {
        Ok(()) => {
            summary.passed += 1;
            match secs {
                Some(s) => println!("PASS {name} ({s:.1}s)"),
                None => println!("PASS {name}"),
            }
        }
        Err(Fail::Skip(why)) => {
            summary.skipped += 1;
            println!("SKIP {name}: {why}");
        }
        Err(Fail::Fail(why, context)) => {
            summary.failed += 1;
            match secs {
                Some(s) => println!("FAIL {name}: {why} (after {s:.1}s)"),
                None => println!("FAIL {name}: {why}"),
            }
            for line in context {
                println!("    | {line}");
            }
        }
    }
}

/// One test in its own scratch directory, panics caught; afterwards nothing of the instances
/// it started may be left (pins, `run` cgroups).
fn run_one(ctx: &Ctx, name: &str, test: TestFn) -> TestResult {
    let before = ctx.instances.lock().map(|v| v.len()).unwrap_or(0);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let env = Env::new(ctx, name)?;
        test(&env)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(fail(format!("panicked: {msg}")))
    });
    let started: Vec<String> = ctx
        .instances
        .lock()
        .map(|v| v[before.min(v.len())..].to_vec())
        .unwrap_or_default();
    let left: Vec<String> = started.iter().flat_map(|i| leftovers(i)).collect();
    if left.is_empty() {
        return result;
    }
    // Clean up for the next test, and fail this one unless it failed already.
    let mut c = Command::new(&ctx.interceptor);
    c.arg("cleanup");
    let _ = exec(c, CMD_TIMEOUT);
    result.and(Err(fail(format!("left behind: {}", left.join(", ")))))
}

enum Doctor {
    Unsupported(String),
    Broken(String, Vec<String>),
}

fn doctor(ctx: &Ctx) -> Result<(), Doctor> {
    let mut c = Command::new(&ctx.interceptor);
    c.arg("doctor");
    let out = exec(c, CMD_TIMEOUT).map_err(|e| match e {
        Fail::Fail(r, c) => Doctor::Broken(r, c),
        Fail::Skip(r) => Doctor::Broken(r, Vec::new()),
    })?;
    for line in out.stdout.lines() {
        println!("doctor: {line}");
    }
    match out.code() {
        Some(0) => Ok(()),
        Some(DOCTOR_UNSUPPORTED) => Err(Doctor::Unsupported(
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix("unsupported: "))
                .unwrap_or("(no reason given)")
                .to_string(),
        )),
        _ => Err(Doctor::Broken(
            format!("`interceptor doctor` exited with {}", out.status),
            out.stderr.lines().map(str::to_string).collect(),
        )),
    }
}
