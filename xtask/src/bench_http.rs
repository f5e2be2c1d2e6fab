//! `cargo xtask bench http`: wrk (HTTP/1.1 keep-alive) against a local upstream on
//! 127.0.0.2, directly and through the interceptor with an HTTP policy on (rules and
//! header injection), in the same run; plain HTTP and TLS interception. Reports
//! requests/s ratios and p99 overhead; writes target/bench/http.json.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    sync::Arc,
    thread,
};

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::util::{find_in_path, is_root, run, workspace_root};

const HOST: &str = "127.0.0.2";
const BODY: &str = "{\"id\":1,\"name\":\"bench\",\"ok\":true}\n";

/// CPU per request of one run, µs.
#[derive(Clone, Copy)]
struct Cpu {
    /// The whole machine's busy time.
    machine: f64,
    /// The client process tree's user and system time.
    user: f64,
    sys: f64,
}

/// Serves keep-alive HTTP/1.1 GETs on one stream until it closes.
fn serve<S: Read + Write>(s: S) {
    let mut r = BufReader::new(s);
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut line = String::new();
    loop {
        // Request head: lines until an empty one.
        let mut any = false;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => any = true,
            }
        }
        if !any {
            continue;
        }
        let w = r.get_mut();
        if w.write_all(resp.as_bytes())
            .and_then(|()| w.flush())
            .is_err()
        {
            return;
        }
    }
}

fn upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Result<SocketAddr> {
    let l = TcpListener::bind((HOST, 0)).context("bind 127.0.0.2")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = s.set_nodelay(true);
            let tls = tls.clone();
            thread::spawn(move || match tls {
                None => serve(s),
                Some(cfg) => {
                    if let Ok(c) = rustls::ServerConnection::new(cfg) {
                        serve(rustls::StreamOwned::new(c, s));
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A CA and a server certificate for 127.0.0.2 and `dns` (openssl CLI); returns
/// (ca, cert, key).
pub fn certs(
    dir: &Path,
    dns: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let p = |n: &str| dir.join(n);
    let ext = p("ext.cnf");
    fs::write(
        &ext,
        format!("basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.2,DNS:{dns}\nextendedKeyUsage=serverAuth\n"),
    )?;
    let s = |x: &Path| x.to_str().unwrap().to_owned();
    let ossl = |args: &[String]| {
        run(Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null()))
    };
    let a = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    ossl(&a(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(&p("ca.key")),
        "-out",
        &s(&p("ca.pem")),
        "-days",
        "2",
        "-subj",
        "/CN=throwaway test CA (xtask)",
    ]))?;
    ossl(&a(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(&p("server.key")),
        "-out",
        &s(&p("server.csr")),
        "-subj",
        "/CN=127.0.0.2",
    ]))?;
    ossl(&a(&[
        "x509",
        "-req",
        "-in",
        &s(&p("server.csr")),
        "-CA",
        &s(&p("ca.pem")),
        "-CAkey",
        &s(&p("ca.key")),
        "-CAcreateserial",
        "-out",
        &s(&p("server.crt")),
        "-days",
        "2",
        "-extfile",
        &s(&ext),
    ]))?;
    Ok((p("ca.pem"), p("server.crt"), p("server.key")))
}

fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, Default)]
struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
}

fn latency_us(out: &str, pct: &str) -> Result<f64> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(pct))
        .with_context(|| format!("no {pct} line (wrk --latency)"))?
        .trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n,
        "ms" => n * 1000.0,
        "s" => n * 1_000_000.0,
        u => bail!("unknown wrk unit {u:?}"),
    })
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec in wrk output")?
        .trim()
        .parse()?;
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .context("no `N requests in` line in wrk output")?
        .0
        .trim()
        .parse()?;
    Ok(Wrk {
        rps,
        p50_us: latency_us(out, "50%")?,
        p99_us: latency_us(out, "99%")?,
        requests,
    })
}

/// `l4` is allowed by a TCP rule only (no HTTP service): the reference relay.
fn policy(plain: SocketAddr, tls: SocketAddr, l4: SocketAddr, ca: &Path) -> String {
    format!(
        "version: 1
rules:
  - name: allow-bench
    action: allow
    to:
      - cidr: 127.0.0.2/32
        ports: [{p}, {t}, {l}]
http_services:
  plain:
    address: 127.0.0.2
    port: {p}
    hosts: [bench.test]
    tls: plain
  tls:
    address: 127.0.0.2
    port: {t}
    hosts: [bench.test]
    tls: intercept
    ca_file: {ca}
http_rules:
  - name: no-deletes
    action: deny
    methods: [DELETE]
  - name: bench-read
    action: allow
    methods: [GET]
    paths: [\"/v1/**\", \"/\"]
    inject:
      - header: Authorization
        prefix: \"Bearer \"
        secret_env: BENCH_TOKEN
",
        p = plain.port(),
        l = l4.port(),
        t = tls.port(),
        ca = ca.display()
    )
}

pub fn run_bench() -> Result<()> {
    if !is_root() {
        bail!("the benchmark attaches eBPF programs: run it as root");
    }
    if find_in_path("wrk").is_none() {
        bail!("wrk is missing: run `cargo xtask setup` (Debian package wrk)");
    }
    build::build(Profile::Release)?;
    let dir = workspace_root().join("target/bench/http");
    fs::create_dir_all(&dir)?;
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let conns: u32 = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let (ca, cert, key) = certs(&dir, "bench.test")?;
    let plain = upstream(None)?;
    let tls = upstream(Some(tls_config(&cert, &key)?))?;
    let l4 = upstream(None)?;
    let pol = dir.join("bench-http.yaml");
    fs::write(&pol, policy(plain, tls, l4, &ca))?;
    let daemon = build::daemon_path(Profile::Release);
    let state = dir.join("state");
    let audit = dir.join("audit.jsonl");
    let wrk_args = |url: &str, c: u32| -> Vec<String> {
        vec![
            "wrk".into(),
            format!("-t{}", c.clamp(1, 2)),
            format!("-c{c}"),
            format!("-d{secs}s"),
            "--latency".into(),
            url.into(),
        ]
    };
    // Each run also measures the machine's busy CPU per request (everything: wrk, the
    // upstream, the interceptor, the kernel's loopback TCP), which explains the ratios of a
    // CPU-bound run better than wall-clock numbers on a shared machine.
    // It also measures the CPU of the client process tree (wrk; through the interceptor,
    // `interceptor run` and its wrk): through minus direct is the daemon's own cost.
    let measured = |f: &dyn Fn() -> Result<Wrk>| -> Result<(Wrk, Cpu)> {
        let before = crate::util::busy_cpu_us();
        let (u0, s0) = crate::util::children_cpu_us();
        let w = f()?;
        let (u1, s1) = crate::util::children_cpu_us();
        let n = w.requests.max(1) as f64;
        let cpu = Cpu {
            machine: (crate::util::busy_cpu_us() - before) as f64 / n,
            user: (u1 - u0) as f64 / n,
            sys: (s1 - s0) as f64 / n,
        };
        Ok((w, cpu))
    };
    let direct = |url: &str, c: u32| -> Result<(Wrk, Cpu)> {
        measured(&|| {
            let out = Command::new("wrk").args(&wrk_args(url, c)[1..]).output()?;
            parse_wrk(&String::from_utf8_lossy(&out.stdout))
        })
    };
    let through = |url: &str, c: u32, mode: &str| -> Result<(Wrk, Cpu)> {
        let _ = fs::remove_file(&audit);
        measured(&|| {
            let mut cmd = match std::env::var_os("BENCH_PERF") {
                // Profile the interceptor (and wrk, its child): `perf report -i FILE`.
                Some(out) => {
                    let mut c = Command::new("perf");
                    c.args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-o"])
                        .arg(out)
                        .arg("--")
                        .arg(&daemon);
                    c
                }
                None => Command::new(&daemon),
            };
            let out = cmd
                .env("BENCH_TOKEN", "bench-secret")
                .arg("--state-dir")
                .arg(&state)
                .arg("--log")
                .arg("warn")
                .args(["run", "--policy"])
                .arg(&pol)
                .arg("--audit-log")
                .arg(&audit)
                .args(["--audit-mode", mode, "--"])
                .args(wrk_args(url, c))
                .output()?;
            let s = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                bail!(
                    "interceptor run wrk failed: {}\n{s}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            parse_wrk(&s)
        })
    };
    let plain_url = format!("http://{plain}/v1/items");
    let tls_url = format!("https://{tls}/v1/items");
    println!(
        "==> wrk -d{secs}s, keep-alive, GET {BODY:?} ({} bytes); policy with rules and header injection; audit to a file",
        BODY.len()
    );
    let mut rows = Vec::new();
    // `via` is "interceptor" or a peer; for a peer the client tree is wrk alone, so its
    // own CPU is not split out (the machine's CPU per request still is).
    let mut row = |name: &str, via: &str, c: u32, d: (Wrk, Cpu), t: (Wrk, Cpu)| {
        let ((d, dcpu), (t, tcpu)) = (d, t);
        let (own_user, own_sys) = (tcpu.user - dcpu.user, tcpu.sys - dcpu.sys);
        let own = if via == "interceptor" {
            format!(", daemon's own {own_user:.1} user + {own_sys:.1} sys µs")
        } else {
            String::new()
        };
        println!(
            "{name:<34} -c{c:<3} direct {:>7.0} req/s p50 {:>5.0} p99 {:>6.0} µs | {via} {:>7.0} req/s p50 {:>5.0} p99 {:>6.0} µs | ratio {:.2}x, p50 {:+.0} µs, p99 {:+.0} µs | CPU/request {:.0} → {:.0} µs{own}",
            d.rps, d.p50_us, d.p99_us, t.rps, t.p50_us, t.p99_us,
            t.rps / d.rps, t.p50_us - d.p50_us, t.p99_us - d.p99_us, dcpu.machine, tcpu.machine,
        );
        rows.push(serde_json::json!({
            "case": name, "via": via, "connections": c,
            "direct": {"rps": d.rps, "p50_us": d.p50_us, "p99_us": d.p99_us, "cpu_us_per_request": dcpu.machine},
            "through": {"rps": t.rps, "p50_us": t.p50_us, "p99_us": t.p99_us, "cpu_us_per_request": tcpu.machine,
                "daemon_user_us_per_request": own_user, "daemon_sys_us_per_request": own_sys},
            "ratio": t.rps / d.rps,
            "p50_overhead_us": t.p50_us - d.p50_us,
            "p99_overhead_us": t.p99_us - d.p99_us,
        }));
    };
    // BENCH_CASES=a,b,… runs only those cases (names below), for profiling.
    let only = std::env::var("BENCH_CASES").ok();
    let want = |case: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|c| c == case))
    };
    let mut d_plain = None;
    let mut plain_direct = || -> Result<(Wrk, Cpu)> {
        if d_plain.is_none() {
            d_plain = Some(direct(&plain_url, conns)?);
        }
        Ok(d_plain.expect("just set"))
    };
    if want("durable") {
        let d = plain_direct()?;
        let t = through(&plain_url, conns, "durable")?;
        let records = fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"type\":\"http_request\""))
            .count();
        row(
            "HTTP/1.1, audit durable (default)",
            "interceptor",
            conns,
            d,
            t,
        );
        println!(
            "  (audit: {records} http_request records for {} requests)",
            t.0.requests
        );
    }
    if want("async") {
        let d = plain_direct()?;
        row(
            "HTTP/1.1, audit async",
            "interceptor",
            conns,
            d,
            through(&plain_url, conns, "async")?,
        );
    }
    // Rows measured against their own direct run: (BENCH_CASES name, row, URL, connections,
    // audit mode). `l4` is the same exchange through the plain TCP path (accept, decide,
    // relay; no HTTP parsing, no per-request record): what the extra hop alone costs here.
    let l4_url = format!("http://{l4}/v1/items");
    let paired = [
        (
            "one",
            "HTTP/1.1, one connection, durable",
            &plain_url,
            1,
            "durable",
        ),
        (
            "one-async",
            "HTTP/1.1, one connection, async",
            &plain_url,
            1,
            "async",
        ),
        ("l4", "TCP relay only (no HTTP)", &l4_url, conns, "async"),
        (
            "tls",
            "HTTPS (TLS interception), durable",
            &tls_url,
            conns,
            "durable",
        ),
    ];
    for (case, name, url, c, mode) in paired {
        if want(case) {
            row(
                name,
                "interceptor",
                c,
                direct(url, c)?,
                through(url, c, mode)?,
            );
        }
    }
    // The peer: HAProxy with as many threads as the daemon's default workers.
    if want("haproxy") {
        let threads = (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1);
        match crate::haproxy::ensure()
            .context("haproxy missing")
            .and_then(|bin| crate::haproxy::Haproxy::start(&bin, &dir, threads, plain, l4))
        {
            Ok(h) => {
                println!(
                    "  peer: HAProxy, nbthread {threads}, on {} (HTTP) and {} (TCP)",
                    h.http, h.tcp
                );
                let d = plain_direct()?;
                let t = direct(&format!("http://{}/v1/items", h.http), conns)?;
                row("HTTP/1.1 (HTTP mode, set-header)", "haproxy", conns, d, t);
                row(
                    "TCP relay only (TCP mode)",
                    "haproxy",
                    conns,
                    direct(&l4_url, conns)?,
                    direct(&format!("http://{}/v1/items", h.tcp), conns)?,
                );
            }
            Err(e) => println!("  haproxy: {e:#}; skipping the peer"),
        }
    }
    let json = serde_json::json!({
        "wrk": {"connections": conns, "seconds": secs},
        "rows": rows,
    });
    fs::write(dir.join("http.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_wrk() {
        let out = "Running 1s test\n  Latency Distribution\n     50%  100.00us\n     99%    1.50ms\n  12346 requests in 1.00s, 1.2MB read\nRequests/sec:  12345.67\n";
        let w = super::parse_wrk(out).unwrap();
        assert_eq!(w.rps, 12345.67);
        assert_eq!(w.p50_us, 100.0);
        assert_eq!(w.p99_us, 1500.0);
        assert_eq!(w.requests, 12346);
    }
}
