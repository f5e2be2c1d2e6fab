//! `cargo xtask bench connect`: connect + first-byte round trip, direct vs. through the
//! interceptor in the same run (median, p99, ratio), and the daemon's idle RSS.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::util::{is_root, workspace_root};

const DEFAULT_ITERATIONS: usize = 3000;
const WARMUP: usize = 200;

pub fn run_bench(which: &str) -> Result<()> {
    match which {
        "connect" => connect(),
        "pg" => crate::bench_pg::run(),
        "audit" => crate::bench_audit::run(),
        "http" => crate::bench_http::run_bench(),
        other => bail!("unknown benchmark {other:?}; available: connect, pg, audit, http"),
    }
}

/// One-byte echo server: accept, read a byte, write it back, close.
fn byte_server() -> Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.2:0").context("bind 127.0.0.2")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_nodelay(true);
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
    Ok(addr)
}

/// The measuring client (`xtask bench-client ADDR N`): prints one latency in ns per line.
pub fn client(addr: &str, n: usize) -> Result<()> {
    let mut out = String::with_capacity(n * 8);
    let mut b = [0u8; 1];
    for i in 0..n + WARMUP {
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        s.write_all(b"x")?;
        s.read_exact(&mut b).context("first byte")?;
        let ns = t.elapsed().as_nanos();
        drop(s);
        if i >= WARMUP {
            out.push_str(&ns.to_string());
            out.push('\n');
        }
    }
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

struct Stats {
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
}

fn stats(text: &str) -> Result<Stats> {
    let mut v: Vec<u64> = text
        .lines()
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        bail!("no samples");
    }
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0;
    Ok(Stats {
        median_us: pct(0.5),
        p99_us: pct(0.99),
        mean_us: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
    })
}

fn connect() -> Result<()> {
    if !is_root() {
        bail!("the benchmark attaches eBPF programs: run it as root");
    }
    build::build(Profile::Release)?;
    let root = workspace_root();
    let interceptor = build::daemon_path(Profile::Release);
    let me = std::env::current_exe()?;
    let n: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir)?;
    let addr = byte_server()?;
    let policy = dir.join("connect-policy.yaml");
    fs::write(
        &policy,
        format!("version: 1\nrules:\n  - name: bench\n    action: allow\n    to:\n      - cidr: 127.0.0.2/32\n        ports: {}\ndefault: deny\n", addr.port()),
    )?;
    let client = |through: bool| -> Result<Stats> {
        let mut cmd = if through {
            let mut c = Command::new(&interceptor);
            c.arg("--state-dir")
                .arg(dir.join("state"))
                .args(["--log", "warn", "run", "--policy"])
                .arg(&policy)
                .arg("--audit-log")
                .arg(dir.join("audit.jsonl"))
                .arg("--")
                .arg(&me);
            c
        } else {
            Command::new(&me)
        };
        let out = cmd
            .args(["bench-client", &addr.to_string(), &n.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("bench client failed: {}", out.status);
        }
        stats(&String::from_utf8_lossy(&out.stdout))
    };
    println!("==> connect + first-byte round trip, {n} samples each (after {WARMUP} warm-up), upstream {addr}");
    // Interleave runs so drift on a shared machine hits both sides alike.
    let d1 = client(false)?;
    let t1 = client(true)?;
    let d2 = client(false)?;
    let t2 = client(true)?;
    let avg = |a: &Stats, b: &Stats| Stats {
        median_us: (a.median_us + b.median_us) / 2.0,
        p99_us: (a.p99_us + b.p99_us) / 2.0,
        mean_us: (a.mean_us + b.mean_us) / 2.0,
    };
    let (direct, through) = (avg(&d1, &d2), avg(&t1, &t2));
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "", "median µs", "p99 µs", "mean µs"
    );
    println!(
        "{:<22} {:>10.1} {:>10.1} {:>10.1}",
        "direct", direct.median_us, direct.p99_us, direct.mean_us
    );
    println!(
        "{:<22} {:>10.1} {:>10.1} {:>10.1}",
        "through interceptor", through.median_us, through.p99_us, through.mean_us
    );
    println!(
        "{:<22} {:>9.2}× {:>9.2}× {:>9.2}×   (target ≤ 1.5× median)",
        "ratio",
        through.median_us / direct.median_us,
        through.p99_us / direct.p99_us,
        through.mean_us / direct.mean_us
    );
    let rss = idle_rss(&interceptor, &dir, &policy)?;
    println!(
        "daemon idle RSS: {:.1} MB (target ≤ 20 MB)",
        rss as f64 / 1024.0
    );
    Ok(())
}

fn cgroup2_root() -> Result<std::path::PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(Into::into))?
        })
        .context("no cgroup2 mount")
}

/// VmRSS (kB) of an `attach` daemon that has been idle for a second.
fn idle_rss(interceptor: &Path, dir: &Path, policy: &Path) -> Result<u64> {
    let cg = cgroup2_root()?.join(format!("interceptor-bench-{}", std::process::id()));
    fs::create_dir_all(&cg)?;
    let mut child = Command::new(interceptor)
        .arg("--state-dir")
        .arg(dir.join("state-rss"))
        .args(["--log", "warn", "attach", "--cgroup"])
        .arg(&cg)
        .arg("--policy")
        .arg(policy)
        .arg("--audit-log")
        .arg(dir.join("audit-rss.jsonl"))
        .spawn()?;
    let sock_dir = dir.join("state-rss/run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_dir(&sock_dir).map(|d| d.count()).unwrap_or(0) == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("attach daemon did not start");
        }
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(1));
    let status = fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    child.wait()?;
    let _ = fs::remove_dir(&cg);
    Ok(rss)
}
