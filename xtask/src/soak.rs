//! `cargo xtask soak [--secs N] [--conns 1000] [--pg-conns 100]`: that many concurrent agent
//! connections through `interceptor run` for a bounded time, mixed PostgreSQL (simple
//! queries on a masked resource, every statement classified and audited) and TCP echo
//! traffic, against a throwaway PostgreSQL 15 and an echo server on 127.0.0.2.
//!
//! Reports throughput and p50/p99 per kind, and the daemon's RSS and open descriptors when
//! idle, once every connection is open, once every connection has done a request (start:
//! splice pipes and buffers exist from then on), after the traffic (end, connections still
//! open) and after they closed. Fails on any request error, or when RSS or descriptors grow
//! beyond the stated bounds ([`RSS_GROWTH_PCT`], [`RSS_GROWTH_SLACK_KB`], [`FD_SLACK`]).
//! Writes the report to target/soak/soak.txt.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::build::{self, Profile};
use crate::pg::{self, Cluster};
use crate::util::{is_root, workspace_root};

const HOST: &str = "127.0.0.2";
/// End RSS may exceed start RSS by this percentage plus [`RSS_GROWTH_SLACK_KB`].
const RSS_GROWTH_PCT: u64 = 10;
const RSS_GROWTH_SLACK_KB: u64 = 8 * 1024;
/// Open descriptors may differ by this much between start and end, and between idle and
/// after-close (plus the upstream pool, `pool_size`).
const FD_SLACK: usize = 8;
const POOL_SIZE: usize = 8;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Seconds of traffic once every connection is open.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Concurrent agent connections in total.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// How many of them are PostgreSQL sessions (the rest are TCP echo).
    #[arg(long, default_value_t = 100)]
    pub pg_conns: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kb: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: u32) -> Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the daemon (pid {pid}) is gone"))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        rss_kb: field("VmRSS:"),
        threads: field("Threads:"),
        fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
    })
}

/// Line echo server (`echo:<line>`), one thread per connection.
fn echo_server() -> Result<SocketAddr> {
    let l = TcpListener::bind((HOST, 0)).context("bind the echo server")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = thread::Builder::new().stack_size(128 << 10).spawn(move || {
                let _ = s.set_nodelay(true);
                let mut w = match s.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if w.write_all(format!("echo:{line}").as_bytes()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    Ok(addr)
}

fn policy(echo: SocketAddr, pg_port: u16, pass: &Path) -> String {
    format!(
        "version: 1
identities:
  agent: {{}}
rules:
  - name: soak-echo
    action: allow
    to:
      - cidr: {HOST}/32
        ports: {echo_port}
  - name: soak-db
    action: allow
    to:
      - cidr: {HOST}/32
        ports: {pg_port}
resources:
  soakdb:
    postgres:
      address: {HOST}
      port: {pg_port}
      database: soak
      user: soak
      password_file: {pass}
      tls: disable
      pool_size: {POOL_SIZE}
      masking:
        detectors:
          - kind: email
            strategy: partial
sql_rules:
  - name: agent-read
    identity: agent
    resource: soakdb
    action: allow
    operations: [read, session]
default: deny
",
        echo_port = echo.port(),
        pass = pass.display()
    )
}

pub fn run(args: &SoakArgs) -> Result<()> {
    if !is_root() {
        bail!("the soak test attaches eBPF programs: run it as root");
    }
    if args.pg_conns > args.conns {
        bail!("--pg-conns must not exceed --conns");
    }
    build::build(Profile::Release)?;
    let dir = workspace_root().join("target/soak");
    fs::create_dir_all(&dir)?;
    println!("==> throwaway PostgreSQL 15 on {HOST}");
    // Each session's upstream, plus the side connections that look up table names for
    // masking (one per session while the catalog cache is cold), plus the pool.
    let max_conn = (2 * args.pg_conns + POOL_SIZE + 20).to_string();
    let cluster = Cluster::start(
        &dir.join("pg"),
        HOST,
        &[("fsync", "off"), ("max_connections", max_conn.as_str())],
    )?;
    let password = pg::random_hex(16)?;
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE soak LOGIN PASSWORD '{password}'"),
    )?;
    cluster.sql("postgres", "CREATE DATABASE soak OWNER soak")?;
    cluster.sql(
        "soak",
        "SET ROLE soak; CREATE TABLE people (id int PRIMARY KEY, name text, email text);
         INSERT INTO people SELECT i, 'Person ' || i, 'user' || i || '@example.com'
         FROM generate_series(1, 1000) i;",
    )?;
    let pass = dir.join("soak.pass");
    fs::write(&pass, format!("{password}\n"))?;
    let echo = echo_server()?;
    let policy_path = dir.join("soak.yaml");
    fs::write(&policy_path, policy(echo, cluster.port, &pass))?;

    let interceptor = build::daemon_path(Profile::Release);
    let client = std::env::current_exe()?;
    let audit = dir.join("soak-audit.jsonl");
    let _ = fs::remove_file(&audit);
    println!(
        "==> {} connections ({} PostgreSQL, {} TCP echo) for {} s",
        args.conns,
        args.pg_conns,
        args.conns - args.pg_conns,
        args.secs
    );
    // The daemon raises its own soft open-files limit to the hard one; the client does it
    // with `ulimit` in a shell that then becomes the client (no libc needed here).
    let hard: usize = crate::util::output(Command::new("sh").args(["-c", "ulimit -Hn"]))?
        .trim()
        .parse()
        .unwrap_or(usize::MAX);
    if hard < 2 * args.conns + 256 {
        bail!(
            "the hard open-files limit ({hard}) is too low for {} connections (2 descriptors \
             each in the daemon); raise it (ulimit -Hn, LimitNOFILE=) or lower --conns",
            args.conns
        );
    }
    let mut child = Command::new(&interceptor)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log", "warn", "run", "--policy"])
        .arg(&policy_path)
        .arg("--audit-log")
        .arg(&audit)
        .arg("--")
        .args([
            "sh",
            "-c",
            "ulimit -n \"$(ulimit -Hn)\" && exec \"$@\"",
            "sh",
        ])
        .arg(&client)
        .arg("soak-client")
        .arg("--echo")
        .arg(echo.to_string())
        .arg("--pg")
        .arg(format!("{HOST}:{}", cluster.port))
        .arg("--conns")
        .arg(args.conns.to_string())
        .arg("--pg-conns")
        .arg(args.pg_conns.to_string())
        .arg("--secs")
        .arg(args.secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting interceptor run")?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut expect = |what: &str| -> Result<String> {
        loop {
            let line = lines
                .next()
                .with_context(|| format!("the soak client ended before {what}"))??;
            if line.starts_with(what) {
                return Ok(line);
            }
            println!("    client: {line}");
        }
    };
    let mut next = || stdin.write_all(b"\n").and_then(|()| stdin.flush());

    expect("STARTED")?;
    thread::sleep(Duration::from_secs(1));
    let idle = sample(pid)?;
    next()?;
    expect("READY")?;
    let connected = sample(pid)?;
    println!("    all connected; traffic for {} s", args.secs);
    expect("WARM")?;
    let start = sample(pid)?;
    expect("DONE")?;
    let end = sample(pid)?;
    next()?;
    let closed_line = expect("CLOSED")?;
    thread::sleep(Duration::from_secs(2));
    let closed = sample(pid)?;
    next()?;
    let status = child.wait()?;

    let summary: serde_json::Value =
        serde_json::from_str(closed_line.trim_start_matches("CLOSED").trim())
            .context("the client's summary")?;
    let report = render(args, &summary, [idle, connected, start, end, closed]);
    print!("{report}");
    fs::write(dir.join("soak.txt"), &report)?;
    let audit_lines = fs::read_to_string(&audit)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!("audit records written: {audit_lines}");
    let _ = fs::remove_file(&audit);

    let mut failures = Vec::new();
    if !status.success() {
        failures.push(format!("interceptor run exited with {status}"));
    }
    for kind in ["pg", "tcp"] {
        let k = &summary[kind];
        if k["errors"].as_u64() != Some(0) {
            failures.push(format!(
                "{kind}: {} errors, first: {}",
                k["errors"], k["first_error"]
            ));
        }
    }
    let rss_bound = start.rss_kb + start.rss_kb * RSS_GROWTH_PCT / 100 + RSS_GROWTH_SLACK_KB;
    if end.rss_kb > rss_bound {
        failures.push(format!(
            "RSS grew from {} kB to {} kB (bound {rss_bound} kB)",
            start.rss_kb, end.rss_kb
        ));
    }
    if end.fds > start.fds + FD_SLACK {
        failures.push(format!("open fds grew from {} to {}", start.fds, end.fds));
    }
    if closed.fds > idle.fds + POOL_SIZE + FD_SLACK {
        failures.push(format!(
            "{} fds open after every connection closed ({} when idle)",
            closed.fds, idle.fds
        ));
    }
    if start.fds < idle.fds + 2 * args.conns {
        failures.push(format!(
            "only {} fds at start: not every connection went through the daemon",
            start.fds
        ));
    }
    if !failures.is_empty() {
        bail!("soak failed:\n  {}", failures.join("\n  "));
    }
    println!("soak passed");
    Ok(())
}

fn render(args: &SoakArgs, s: &serde_json::Value, samples: [Sample; 5]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nsoak: {} concurrent connections ({} PostgreSQL, {} TCP echo), {:.1} s of traffic",
        args.conns,
        args.pg_conns,
        args.conns - args.pg_conns,
        s["secs"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        o,
        "  {:<11} {:>6} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "kind", "conns", "requests", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for (name, k) in [("PostgreSQL", &s["pg"]), ("TCP echo", &s["tcp"])] {
        let _ = writeln!(
            o,
            "  {:<11} {:>6} {:>10} {:>9} {:>9.2} {:>9.2} {:>7}",
            name,
            k["conns"].to_string(),
            k["requests"].to_string(),
            k["per_sec"].to_string(),
            k["p50_ms"].as_f64().unwrap_or(0.0),
            k["p99_ms"].as_f64().unwrap_or(0.0),
            k["errors"].to_string()
        );
    }
    let _ = writeln!(
        o,
        "  daemon      {:>12} {:>10} {:>9}",
        "RSS (MB)", "open fds", "threads"
    );
    for (name, x) in ["idle", "connected", "start", "end", "closed"]
        .iter()
        .zip(samples)
    {
        let _ = writeln!(
            o,
            "  {:<11} {:>12.1} {:>10} {:>9}",
            name,
            x.rss_kb as f64 / 1024.0,
            x.fds,
            x.threads
        );
    }
    let _ = writeln!(
        o,
        "  bounds: end RSS <= start + {RSS_GROWTH_PCT}% + {} MB; end fds <= start + {FD_SLACK}; \
         closed fds <= idle + {POOL_SIZE} (pool) + {FD_SLACK}",
        RSS_GROWTH_SLACK_KB / 1024
    );
    o
}
