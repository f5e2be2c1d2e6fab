//! `cargo xtask bench pg`: PostgreSQL through the interceptor, in one run on a throwaway
//! cluster (127.0.0.2, free port):
//!
//! 1. `pgbench -S -c 8 -j 2 -T 15` (simple protocol, scale 10): direct, through the
//!    interceptor (classification, masking rules and statement audit on) and through
//!    pgbouncer in session mode (installed when missing; skipped if that fails);
//! 2. `pgbench -S -C -c 8 -j 2 -T 15` (a new connection per transaction): the same three;
//! 3. a 1,000-row SELECT with 4 personal-data columns, median of 200 runs over one
//!    psycopg connection: direct, through without masking, through with masking.
//!
//! Prints a summary and writes it to target/bench/pg.txt. Loopback only. `BENCH_SECS`
//! overrides the 15 s per pgbench run; `BENCH_ONLY=S` stops after step 1; `BENCH_PERF=FILE`
//! records each pgbench run with `perf record -a -g` into FILE.<target>. `BENCH_ONLY=C` runs
//! only step 2.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::pg::{self, Cluster};
use crate::util::{is_root, workspace_root};

const HOST: &str = "127.0.0.2";
const BOUNCER_HOST: &str = "127.0.0.3";
const CLIENTS: &str = "8";
const THREADS: &str = "2";
const MASK_ROWS: usize = 1000;
const MASK_RUNS: usize = 200;

/// Where pgbench and the timing client connect, and how.
struct Target<'a> {
    name: &'static str,
    host: &'a str,
    port: u16,
    /// `interceptor run --policy P` around the client.
    policy: Option<&'a Path>,
}

/// One pgbench run.
struct Run {
    tps: f64,
    /// Busy CPU of the whole machine (client, proxy, server) per transaction, µs.
    cpu_us: f64,
    /// Statement records in the audit log (through the interceptor).
    audited: usize,
}

struct Bench<'a> {
    interceptor: PathBuf,
    dir: PathBuf,
    cluster: &'a Cluster,
    password: String,
    secs: u64,
}

impl Bench<'_> {
    /// The client command, wrapped in `interceptor run` for a target with a policy.
    fn command(&self, t: &Target, program: &Path) -> Command {
        let mut c = match t.policy {
            Some(policy) => {
                let mut c = Command::new(&self.interceptor);
                c.arg("--state-dir")
                    .arg(self.dir.join("state"))
                    .args(["--log", "warn", "run", "--policy"])
                    .arg(policy)
                    .arg("--audit-log")
                    .arg(self.dir.join("pg-audit.jsonl"))
                    // The proxy's own cost; what write-before-forward adds (one fdatasync
                    // per statement) is measured by `bench audit`.
                    .args(["--audit-mode", "async"])
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        // Through the interceptor any password works; direct and pgbouncer need the real one.
        c.env("PGPASSWORD", &self.password);
        c
    }

    /// One pgbench run: its TPS, the machine's busy CPU per transaction and, through the
    /// interceptor, how many statement records it audited.
    fn pgbench(&self, t: &Target, extra: &[&str]) -> Result<Run> {
        let secs = self.secs.to_string();
        let port = t.port.to_string();
        let mut args = vec!["-S", "-n", "-c", CLIENTS, "-j", THREADS, "-T", &secs];
        args.extend(extra);
        args.extend(["-h", t.host, "-p", &port, "-U", "bench", "bench"]);
        println!("    {:<22} pgbench {}", t.name, args.join(" "));
        let _ = fs::remove_file(self.dir.join("pg-audit.jsonl"));
        // The whole machine's profile of this run: `perf report -i FILE.<target>`.
        let perf = match std::env::var("BENCH_PERF") {
            Ok(file) => Some(
                Command::new("perf")
                    .args(["record", "-a", "-g", "-F", "1000", "-o"])
                    .arg(format!(
                        "{file}.{}",
                        t.name.replace([' ', ',', '(', ')'], "")
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting perf record")?,
            ),
            Err(_) => None,
        };
        let cpu_before = crate::util::busy_cpu_us();
        let out = self
            .command(t, &self.cluster.bin("pgbench"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .context("running pgbench")?;
        let cpu = crate::util::busy_cpu_us() - cpu_before;
        if let Some(mut p) = perf {
            let _ = Command::new("kill")
                .args(["-INT", &p.id().to_string()])
                .status();
            let _ = p.wait();
        }
        let so = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench via {} failed ({}):\n{so}\n{}",
                t.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tps = so
            .lines()
            .find_map(|l| l.trim().strip_prefix("tps = "))
            .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
            .with_context(|| format!("no `tps = ` in pgbench's output:\n{so}"))?;
        let txns = so
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("number of transactions actually processed: ")
            })
            .and_then(|r| r.split(['/', ' ']).next()?.parse::<u64>().ok())
            .with_context(|| format!("no transaction count in pgbench's output:\n{so}"))?;
        let failed = so
            .lines()
            .find_map(|l| l.trim().strip_prefix("number of failed transactions: "))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if failed > 0 {
            bail!(
                "pgbench via {}: {failed} failed transactions:\n{so}",
                t.name
            );
        }
        let audited = match t.policy {
            Some(_) => fs::read_to_string(self.dir.join("pg-audit.jsonl"))
                .map(|a| {
                    a.lines()
                        .filter(|l| l.contains("\"type\":\"statement\""))
                        .count()
                })
                .unwrap_or(0),
            None => 0,
        };
        let _ = fs::remove_file(self.dir.join("pg-audit.jsonl"));
        let cpu_us = cpu as f64 / txns.max(1) as f64;
        println!(
            "    {:<22} {tps:>10.0} TPS, {cpu_us:.1} µs machine CPU per transaction",
            ""
        );
        Ok(Run {
            tps,
            cpu_us,
            audited,
        })
    }

    /// Median milliseconds of the 1,000-row SELECT (psycopg, one connection).
    fn select_ms(&self, t: &Target, python: &Path) -> Result<f64> {
        let port = t.port.to_string();
        let runs = MASK_RUNS.to_string();
        let out = self
            .command(t, python)
            .arg("-c")
            .arg(TIMING_CLIENT)
            .args([t.host, &port, &runs])
            .stdin(Stdio::null())
            .output()
            .context("running the timing client")?;
        let so = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "timing client via {} failed ({}):\n{so}\n{}",
                t.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut words = so.split_whitespace();
        let ms: f64 = words.next().context("no median")?.parse()?;
        let masked: u64 = words.next().context("no masked count")?.parse()?;
        println!(
            "    {:<22} median {ms:.3} ms over {MASK_RUNS} runs ({masked} values changed per result)",
            t.name
        );
        Ok(ms)
    }
}

/// Times `SELECT … FROM people` (1,000 rows × 4 PII columns); prints the median in ms and
/// how many values differ from the stored ones (0 direct, > 0 masked).
const TIMING_CLIENT: &str = r#"
import statistics, sys, time
import psycopg
host, port, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with psycopg.connect(host=host, port=port, user="bench", dbname="bench", autocommit=True) as c:
    q = "SELECT id, name, email, phone, ssn, card_number FROM people ORDER BY id"
    for _ in range(20):
        rows = c.execute(q).fetchall()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        rows = c.execute(q).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    assert len(rows) == 1000, len(rows)
    changed = sum(1 for r in rows for v in r[2:] if "*" in str(v) or "[REDACTED" in str(v))
    print("%.4f %d" % (statistics.median(times), changed))
"#;

pub(crate) fn policy(port: u16, password_file: &Path, masking: bool) -> String {
    let masking = if masking {
        "      masking:
        columns:
          - match: people.ssn
            strategy: redact
          - match: people.card_number
            strategy: partial
            keep_last: 4
          - match: pgbench_accounts.filler
            strategy: redact
        detectors:
          - kind: all
            strategy: partial
"
    } else {
        ""
    };
    format!(
        "version: 1
identities:
  bench: {{ cgroup: \"/interceptor/**\" }}
rules:
  - name: allow-bench-db
    identity: bench
    action: allow
    to: [{{ cidr: {HOST}/32, ports: {port} }}]
resources:
  bench:
    postgres:
      address: {HOST}
      port: {port}
      database: bench
      user: bench
      password_file: {pw}
      tls: disable
      pool_size: 16
{masking}sql_rules:
  - name: bench-read
    identity: bench
    resource: bench
    action: allow
    operations: [read, transaction, session]
    tables: [\"public.pgbench_*\", \"public.people\", \"pg_catalog.*\"]
default: deny
",
        pw = password_file.display()
    )
}

/// pgbouncer in session mode on 127.0.0.3 (free port), run as the postgres user.
struct Bouncer {
    child: std::process::Child,
    port: u16,
}

impl Bouncer {
    fn start(bin: &Path, cluster: &Cluster, password: &str) -> Result<Bouncer> {
        let dir = cluster.dir.join("pgbouncer");
        fs::create_dir_all(&dir)?;
        let port = pg::free_port(BOUNCER_HOST)?;
        let ini = dir.join("pgbouncer.ini");
        let users = dir.join("userlist.txt");
        fs::write(&users, format!("\"bench\" \"{password}\"\n"))?;
        fs::write(
            &ini,
            format!(
                "[databases]
bench = host={HOST} port={pgport} dbname=bench
[pgbouncer]
listen_addr = {BOUNCER_HOST}
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {users}
pool_mode = session
max_client_conn = 200
default_pool_size = 20
logfile = {log}
pidfile = {pid}
",
                pgport = cluster.port,
                users = users.display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )?;
        crate::util::output(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
        )?;
        let child = Command::new(bin)
            .args(["-q", "-u", "postgres"])
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting pgbouncer")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect((BOUNCER_HOST, port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "pgbouncer did not start: {}",
                    fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Bouncer { child, port })
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn run() -> Result<()> {
    if !is_root() {
        bail!("the benchmark attaches eBPF programs: run it as root");
    }
    build::build(Profile::Release)?;
    let root = workspace_root();
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir)?;
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let python = pg::psycopg_python()?;
    let bouncer_bin = pg::ensure_pgbouncer();

    println!("==> throwaway PostgreSQL 15 on {HOST}");
    let cluster = Cluster::start(
        &dir.join("pg"),
        HOST,
        &[
            ("fsync", "off"),
            ("max_connections", "200"),
            ("shared_buffers", "256MB"),
        ],
    )?;
    let password = pg::random_hex(16)?;
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE bench LOGIN PASSWORD '{password}'"),
    )?;
    cluster.sql("postgres", "CREATE DATABASE bench OWNER bench")?;
    cluster.sql(
        "bench",
        "SET ROLE bench;
         CREATE TABLE people (id int PRIMARY KEY, name text, email text, phone text, ssn text, card_number text);
         INSERT INTO people SELECT i, 'Person ' || i, 'user' || i || '@example.com',
           '(415) 555-' || lpad((i * 7 % 10000)::text, 4, '0'),
           lpad((100 + i % 500)::text, 3, '0') || '-' || lpad((10 + i % 89)::text, 2, '0') || '-' || lpad((1000 + i)::text, 4, '0'),
           '4111 1111 1111 1111'
         FROM generate_series(1, 1000) i;",
    )?;
    let pass = dir.join("pg-bench.pass");
    fs::write(&pass, format!("{password}\n"))?;
    fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let masked_policy = dir.join("pg-bench-masking.yaml");
    fs::write(&masked_policy, policy(cluster.port, &pass, true))?;
    let plain_policy = dir.join("pg-bench-plain.yaml");
    fs::write(&plain_policy, policy(cluster.port, &pass, false))?;

    let bench = Bench {
        interceptor: build::daemon_path(Profile::Release),
        dir: dir.clone(),
        cluster: &cluster,
        password: password.clone(),
        secs,
    };
    println!("==> pgbench -i -s 10");
    let init = Command::new(cluster.bin("pgbench"))
        .args(["-i", "-s", "10", "-q", "-h", HOST, "-p"])
        .arg(cluster.port.to_string())
        .args(["-U", "bench", "bench"])
        .env("PGPASSWORD", &password)
        .output()?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    cluster.sql("bench", "VACUUM ANALYZE")?;

    let bouncer = match &bouncer_bin {
        Some(b) => match Bouncer::start(b, &cluster, &password) {
            Ok(b) => Some(b),
            Err(e) => {
                println!("    pgbouncer: {e:#}; skipping it");
                None
            }
        },
        None => None,
    };
    let direct = Target {
        name: "direct",
        host: HOST,
        port: cluster.port,
        policy: None,
    };
    let through = Target {
        name: "interceptor",
        host: HOST,
        port: cluster.port,
        policy: Some(&masked_policy),
    };
    let through_plain = Target {
        name: "interceptor, no masking",
        host: HOST,
        port: cluster.port,
        policy: Some(&plain_policy),
    };
    let bouncer_t = bouncer.as_ref().map(|b| Target {
        name: "pgbouncer (session)",
        host: BOUNCER_HOST,
        port: b.port,
        policy: None,
    });

    // Step 2, also run alone with BENCH_ONLY=C: TPS direct, through, through pgbouncer.
    let step_c = || -> Result<(f64, f64, Option<f64>)> {
        println!("\n==> pgbench -S -C -c {CLIENTS} -j {THREADS} -T {secs} (a new connection per transaction)");
        let direct = bench.pgbench(&direct, &["-C"])?.tps;
        let through = bench.pgbench(&through, &["-C"])?.tps;
        let bouncer = match &bouncer_t {
            Some(t) => Some(bench.pgbench(t, &["-C"])?.tps),
            None => None,
        };
        Ok((direct, through, bouncer))
    };
    if std::env::var("BENCH_ONLY").as_deref() == Ok("C") {
        let (c_direct, c_through, c_bouncer) = step_c()?;
        println!(
            "\nBENCH_ONLY=C: interceptor/direct {:.2}x, pgbouncer/direct {}",
            c_through / c_direct,
            c_bouncer.map_or("n/a".into(), |b| format!("{:.2}x", b / c_direct))
        );
        return Ok(());
    }
    println!("\n==> pgbench -S -c {CLIENTS} -j {THREADS} -T {secs} (select-only, simple protocol)");
    let s_direct = bench.pgbench(&direct, &[])?;
    let s_through = bench.pgbench(&through, &[])?;
    let s_bouncer = match &bouncer_t {
        Some(t) => Some(bench.pgbench(t, &[])?),
        None => None,
    };
    let audited = s_through.audited;
    // What each proxy adds to the machine's CPU per transaction.
    let s_cost = s_through.cpu_us - s_direct.cpu_us;
    let b_cost = s_bouncer.as_ref().map(|b| b.cpu_us - s_direct.cpu_us);
    let (s_bouncer, s_through, s_direct) = (s_bouncer.map(|b| b.tps), s_through.tps, s_direct.tps);

    if std::env::var("BENCH_ONLY").as_deref() == Ok("S") {
        println!(
            "\nBENCH_ONLY=S: interceptor/direct {:.2}x (+{s_cost:.1} µs CPU per transaction), \
             pgbouncer/direct {} (+{} µs)",
            s_through / s_direct,
            s_bouncer.map_or("n/a".into(), |b| format!("{:.2}x", b / s_direct)),
            b_cost.map_or("n/a".into(), |c| format!("{c:.1}"))
        );
        return Ok(());
    }
    let (c_direct, c_through, c_bouncer) = step_c()?;
    drop(bouncer);

    println!("\n==> SELECT of {MASK_ROWS} rows × 4 personal-data columns (email, phone, ssn, card_number)");
    // Two interleaved rounds, averaged: drift on a shared machine hits all three alike.
    let (mut m_direct, mut m_plain, mut m_masked) = (0.0, 0.0, 0.0);
    for _ in 0..2 {
        m_direct += bench.select_ms(&direct, &python)? / 2.0;
        m_plain += bench.select_ms(&through_plain, &python)? / 2.0;
        m_masked += bench.select_ms(&through, &python)? / 2.0;
    }
    drop(cluster);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut t = String::new();
    writeln!(
        t,
        "cargo xtask bench pg — {} ({cores} cores), PostgreSQL 15, pgbench scale 10, {secs} s per run",
        cpu_model()
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "| measurement | direct | interceptor | ratio | pgbouncer (session) | ratio | target |"
    )?;
    writeln!(t, "|---|---:|---:|---:|---:|---:|---|")?;
    let b = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    let br = |v: Option<f64>, d: f64| v.map_or("n/a".to_owned(), |v| format!("{:.2}×", v / d));
    writeln!(
        t,
        "| pgbench -S -c 8 -j 2, TPS | {s_direct:.0} | {s_through:.0} | {:.2}× | {} | {} | interceptor ≥ 0.80× |",
        s_through / s_direct,
        b(s_bouncer),
        br(s_bouncer, s_direct)
    )?;
    writeln!(
        t,
        "| pgbench -S, machine CPU added per transaction, µs | — | {s_cost:.1} | | {} | | |",
        b_cost.map_or("n/a".into(), |c| format!("{c:.1}"))
    )?;
    writeln!(
        t,
        "| pgbench -S -C -c 8 -j 2, TPS | {c_direct:.0} | {c_through:.0} | {:.2}× | {} | {} | interceptor ≥ 5× |",
        c_through / c_direct,
        b(c_bouncer),
        br(c_bouncer, c_direct)
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "| 1,000-row SELECT, 4 PII columns (median of {MASK_RUNS}, mean of 2 rounds) | ms |"
    )?;
    writeln!(t, "|---|---:|")?;
    writeln!(t, "| direct | {m_direct:.3} |")?;
    writeln!(t, "| through the interceptor, no masking | {m_plain:.3} |")?;
    writeln!(t, "| through the interceptor, masking | {m_masked:.3} |")?;
    writeln!(
        t,
        "| added by masking (masking − no masking) | {:.3} (target ≤ 1 ms) |",
        m_masked - m_plain
    )?;
    writeln!(
        t,
        "| added in total (masking − direct) | {:.3} |",
        m_masked - m_direct
    )?;
    writeln!(t)?;
    writeln!(
        t,
        "Through the interceptor every statement is classified, decided and audited ({audited} statement records in the -S run), results pass the masking plan (a column rule on pgbench_accounts.filler plus all detectors); -C reuses pooled upstream connections (DISCARD ALL) instead of a new SCRAM login."
    )?;
    println!("\n{t}");
    let out = dir.join("pg.txt");
    fs::write(&out, &t)?;
    println!("written to {}", out.display());
    Ok(())
}
