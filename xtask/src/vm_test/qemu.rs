//! Booting the VM (KVM when it works, TCG otherwise) and reading its console.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

pub(super) fn qemu_command(
    qemu: &Path,
    accel: Accel,
    kernel: &Kernel,
    initramfs: &Path,
    init_args: &[&str],
) -> Command {
    // `lsm=…,bpf` activates the BPF LSM, which the per-cgroup packet-socket guard needs.
    let mut append =
        String::from("console=ttyS0 panic=-1 quiet lsm=lockdown,capability,landlock,yama,bpf");
    if !init_args.is_empty() {
        append.push_str(" -- ");
        append.push_str(&init_args.join(" "));
    }
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", accel.name()])
        .args(["-m", "1024", "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append]);
    if accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    cmd
}

/// KVM when `/dev/kvm` opens and a guest really boots with it (on some hosts it exists but
/// guests die with "KVM internal error"); TCG otherwise. `VM_TEST_ACCEL` overrides.
pub(super) fn choose_accel(qemu: &Path, kernel: &Kernel, initramfs: &Path) -> Result<Accel> {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) if !other.is_empty() => bail!("{ACCEL_ENV}={other}: expected kvm or tcg"),
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("vm-test: /dev/kvm not usable: TCG (software emulation)");
        return Ok(Accel::Tcg);
    }
    // The verdict is remembered per host kernel and qemu: a failing KVM guest hangs silently,
    // so finding out costs the whole probe timeout.
    let key = format!(
        "{} {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        qemu.display()
    );
    let cache = host_target_dir().join("vm/accel");
    if let Some(cached) = fs::read_to_string(&cache)
        .ok()
        .and_then(|c| c.strip_prefix(&format!("{key}\n")).map(str::to_string))
    {
        let accel = if cached.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        println!(
            "vm-test: {} (found earlier on this host; delete {} to test KVM again)",
            accel.name(),
            cache.display()
        );
        return Ok(accel);
    }
    let start = Instant::now();
    let cmd = qemu_command(qemu, Accel::Kvm, kernel, initramfs, &["--boot-check"]);
    let (lines, status) = run_vm(cmd, KVM_PROBE_TIMEOUT, None)?;
    let accel = if lines.iter().any(|(_, l)| l.contains("vm-suite: boot ok")) {
        println!(
            "vm-test: KVM works (test boot in {})",
            fmt_duration(start.elapsed())
        );
        Accel::Kvm
    } else {
        let why = lines
            .iter()
            .rev()
            .find(|(_, l)| !l.trim().is_empty())
            .map(|(_, l)| l.clone())
            .unwrap_or(status);
        println!("vm-test: KVM test boot failed ({why}): TCG (software emulation)");
        Accel::Tcg
    };
    let tmp = cache.with_extension(format!("tmp-{}", std::process::id()));
    if fs::write(&tmp, format!("{key}\n{}\n", accel.name())).is_ok() {
        let _ = fs::rename(&tmp, &cache);
    }
    Ok(accel)
}

/// Console lines with the time they arrived (since qemu started).
type Lines = Vec<(Duration, String)>;

/// Runs qemu with a timeout; returns the console lines and how it ended. Lines are also
/// appended to `log` and shown as they come when they are suite output.
pub(super) fn run_vm(
    mut cmd: Command,
    timeout: Duration,
    log: Option<(&Path, &str)>,
) -> Result<(Lines, String)> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", display(&cmd)))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r
                .read_until(b'\n', &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        }));
    }
    drop(tx);
    let mut file = match log {
        Some((path, _)) => Some(fs::File::create(path)?),
        None => None,
    };
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Some((_, label)) = log {
                    if is_suite_line(&line) {
                        println!("  [{label}] {line}");
                    }
                }
                lines.push((start.elapsed(), line));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let status = child.wait()?;
    for r in readers {
        let _ = r.join();
    }
    let how = if timed_out {
        format!("killed after {}", fmt_duration(timeout))
    } else {
        format!("qemu exited ({status})")
    };
    Ok((lines, how))
}

pub(super) fn is_suite_line(line: &str) -> bool {
    ["PASS ", "FAIL ", "SKIP ", "    | ", "vm-suite:", "doctor:"]
        .iter()
        .any(|p| line.starts_with(p))
        || line.contains("Kernel panic")
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Passed,
    Failed(usize),
    Unsupported(String),
    /// No summary line: the VM hung, crashed or the suite died.
    Broken(String),
}

#[derive(Debug)]
pub(super) struct Report {
    pub(super) spec: String,
    pub(super) package: String,
    pub(super) release: Option<String>,
    pub(super) accel: Accel,
    pub(super) outcome: Outcome,
    /// Test name → PASS / FAIL / SKIP (+ reason).
    pub(super) tests: Vec<(String, String, String)>,
    pub(super) summary: Option<(usize, usize, usize)>,
    pub(super) time: Duration,
    /// From qemu start to init's first line.
    pub(super) boot: Option<Duration>,
    pub(super) console: PathBuf,
}

pub(super) fn boot(
    qemu: &Path,
    accel: Accel,
    spec: &str,
    kernel: &Kernel,
    initramfs: &Path,
    dir: &Path,
    args: &VmTestArgs,
) -> Result<Report> {
    let console = dir.join("console.log");
    let mut init_args = vec!["run"];
    if let Some(f) = &args.filter {
        init_args.extend(["--filter", f]);
    }
    let cmd = qemu_command(qemu, accel, kernel, initramfs, &init_args);
    println!(
        "\nvm-test: booting {spec} ({}) with {}",
        kernel.name,
        accel.name()
    );
    println!("$ {}", display(&cmd));
    let start = Instant::now();
    let (timed, how) = run_vm(
        cmd,
        Duration::from_secs(args.timeout),
        Some((&console, spec)),
    )?;
    let time = start.elapsed();
    let lines: Vec<String> = timed.iter().map(|(_, l)| l.clone()).collect();
    let mut report = parse_console(&lines, &how);
    report.spec = spec.to_string();
    report.package = kernel.name.clone();
    report.accel = accel;
    report.time = time;
    report.console = console.clone();
    // Boot time: until init's first line (it prints `uname -r` right after mounting).
    report.boot = timed
        .iter()
        .find(|(_, l)| l.starts_with("vm-suite: uname -r"))
        .map(|(t, _)| *t);
    if report.outcome != Outcome::Passed {
        println!(
            "vm-test: {spec}: {} — console saved at {}; its last lines:",
            describe(&report.outcome),
            console.display()
        );
        for l in &lines[lines.len().saturating_sub(40)..] {
            println!("  | {l}");
        }
    }
    Ok(report)
}

pub(super) fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Passed => "passed".into(),
        Outcome::Failed(n) => format!("{n} test(s) FAILED"),
        Outcome::Unsupported(r) => format!("kernel unsupported: {r}"),
        Outcome::Broken(r) => format!("no result: {r}"),
    }
}

/// Reads the suite's lines out of a console log.
pub(super) fn parse_console(lines: &[String], how: &str) -> Report {
    let mut tests = Vec::new();
    let mut summary = None;
    let mut unsupported = None;
    let mut release = None;
    let mut panicked = None;
    for line in lines {
        for (tag, status) in [("PASS ", "PASS"), ("FAIL ", "FAIL"), ("SKIP ", "SKIP")] {
            if let Some(rest) = line.strip_prefix(tag) {
                let (name, reason) = match rest.split_once(": ") {
                    Some((n, r)) if !n.contains(' ') => (n, r),
                    _ => (rest.split(' ').next().unwrap_or(rest), ""),
                };
                tests.push((name.to_string(), status.to_string(), reason.to_string()));
            }
        }
        if let Some(rest) = line.strip_prefix("vm-suite: ") {
            if let Some(r) = rest.strip_prefix("uname -r: ") {
                release = Some(r.trim().to_string());
            } else if let Some(s) = parse_summary(rest) {
                summary = Some(s);
            } else if let Some((_, reason)) = rest
                .strip_prefix("kernel ")
                .and_then(|r| r.split_once(" unsupported: "))
            {
                unsupported = Some(reason.to_string());
            } else if rest.starts_with("the suite panicked")
                || rest.starts_with("init setup failed")
            {
                panicked = Some(rest.to_string());
            }
        }
        if line.contains("Kernel panic") && panicked.is_none() {
            panicked = Some(line.trim().to_string());
        }
    }
    let outcome = match (summary, unsupported) {
        (Some(_), Some(reason)) => Outcome::Unsupported(reason),
        (Some((0, 0, 0)), None) => Outcome::Broken("no test ran (--filter matched none?)".into()),
        (Some((_, 0, _)), None) => Outcome::Passed,
        (Some((_, failed, _)), None) => Outcome::Failed(failed),
        (None, _) => Outcome::Broken(match panicked {
            Some(p) => format!("{p} ({how})"),
            None => format!("no summary line ({how})"),
        }),
    };
    Report {
        spec: String::new(),
        package: String::new(),
        release,
        accel: Accel::Tcg,
        outcome,
        tests,
        summary,
        time: Duration::ZERO,
        boot: None,
        console: PathBuf::new(),
    }
}

/// `3 passed, 1 failed, 0 skipped` → (3, 1, 0).
pub(super) fn parse_summary(s: &str) -> Option<(usize, usize, usize)> {
    let mut parts = s.split(", ");
    let mut num =
        |word: &str| -> Option<usize> { parts.next()?.strip_suffix(word)?.trim().parse().ok() };
    let passed = num(" passed")?;
    let failed = num(" failed")?;
    let skipped = num(" skipped")?;
    Some((passed, failed, skipped))
}

pub(super) fn print_report(reports: &[Report]) {
    println!("\nvm-test report");
    for r in reports {
        let counts = r
            .summary
            .map(|(p, f, s)| format!("{p} passed, {f} failed, {s} skipped"))
            .unwrap_or_else(|| "no summary".into());
        println!(
            "  {:<6} {} ({}, {}): {} — {counts}; {} total{}",
            r.spec,
            r.release.as_deref().unwrap_or(&r.package),
            r.package,
            r.accel.name(),
            describe(&r.outcome),
            fmt_duration(r.time),
            r.boot
                .map(|b| format!(", boot ≈ {}", fmt_duration(b)))
                .unwrap_or_default(),
        );
        if r.outcome != Outcome::Passed {
            println!("         console: {}", r.console.display());
        }
    }
    // Test × kernel table.
    let mut table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        for (name, status, _) in &r.tests {
            let row = table.entry(name).or_insert_with(|| {
                order.push(name);
                vec!["-"; reports.len()]
            });
            row[i] = status;
        }
    }
    if order.is_empty() {
        return;
    }
    let width = order.iter().map(|n| n.len()).max().unwrap_or(4);
    print!("\n  {:<width$}", "test");
    for r in reports {
        print!("  {:<6}", r.spec);
    }
    println!();
    for name in order {
        print!("  {name:<width$}");
        for s in &table[name] {
            print!("  {s:<6}");
        }
        println!();
    }
    for r in reports {
        for (name, status, reason) in &r.tests {
            if status != "PASS" && !reason.is_empty() {
                println!("  {} {status} {name}: {reason}", r.spec);
            }
        }
    }
}
