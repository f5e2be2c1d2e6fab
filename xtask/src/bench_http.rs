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
        "/CN=bench CA",
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

/// wrk's requests/s and p99 latency (µs).
#[derive(Debug, Clone, Copy)]
struct Wrk {
    rps: f64,
    p99_us: f64,
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec in wrk output")?
        .trim()
        .parse()?;
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .context("no 99% line (wrk --latency)")?
        .trim();
    let (num, unit) = p99.split_at(
        p99.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(p99.len()),
    );
    let v: f64 = num.parse()?;
    let p99_us = match unit {
        "us" => v,
        "ms" => v * 1000.0,
        "s" => v * 1_000_000.0,
        u => bail!("unknown wrk unit {u:?}"),
    };
    Ok(Wrk { rps, p99_us })
}

fn policy(plain: SocketAddr, tls: SocketAddr, ca: &Path) -> String {
    format!(
        "version: 1
rules:
  - name: allow-bench
    action: allow
    to:
      - cidr: 127.0.0.2/32
        ports: [{p}, {t}]
http_services:
  plain:
    address: 127.0.0.2
    port: {p}
    hosts: [bench.test]
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
    let pol = dir.join("bench-http.yaml");
    fs::write(&pol, policy(plain, tls, &ca))?;
    let daemon = build::daemon_path(Profile::Release);
    let state = dir.join("state");
    let audit = dir.join("audit.jsonl");
    let wrk_args = |url: &str| -> Vec<String> {
        vec![
            "wrk".into(),
            format!("-t{}", conns.clamp(1, 2)),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            "--latency".into(),
            url.into(),
        ]
    };
    let direct = |url: &str| -> Result<Wrk> {
        let out = Command::new("wrk").args(&wrk_args(url)[1..]).output()?;
        parse_wrk(&String::from_utf8_lossy(&out.stdout))
    };
    let through = |url: &str| -> Result<Wrk> {
        let _ = fs::remove_file(&audit);
        let mut cmd = match std::env::var_os("BENCH_PERF") {
            Some(out) if out == "strace" => {
                let mut c = Command::new("strace");
                c.args(["-c", "-f", "-o", "/tmp/strace.out", "--"])
                    .arg(&daemon);
                c
            }
            Some(out) => {
                let mut c = Command::new("perf");
                c.args(["record", "-F", "2000", "-g", "-o"])
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
            .arg(std::env::var_os("BENCH_AUDIT_LOG").unwrap_or(audit.clone().into()))
            .args(
                std::env::var("BENCH_AUDIT_MODE")
                    .map(|m| vec!["--audit-mode".to_string(), m])
                    .unwrap_or_default(),
            )
            .arg("--")
            .args(wrk_args(url))
            .output()?;
        let s = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "interceptor run wrk failed: {}\n{s}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_wrk(&s)
    };
    let plain_url = format!("http://{plain}/v1/items");
    let tls_url = format!("https://{tls}/v1/items");
    println!(
        "==> wrk -t{} -c{conns} -d{secs}s, keep-alive, GET {BODY:?} ({} bytes)",
        conns.clamp(1, 2),
        BODY.len()
    );
    let d_plain = direct(&plain_url)?;
    let t_plain = through(&plain_url)?;
    let requests = fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"type\":\"http_request\""))
        .count();
    if std::env::var("BENCH_ONLY").as_deref() == Ok("plain") {
        return Ok(());
    }
    let d_tls = direct(&tls_url)?;
    let t_tls = through(&tls_url)?;
    let row = |name: &str, d: Wrk, t: Wrk| {
        println!(
            "{name:<28} direct {:>9.0} req/s p99 {:>7.0} µs | interceptor {:>9.0} req/s p99 {:>7.0} µs | ratio {:.2}x, p99 overhead {:+.0} µs",
            d.rps, d.p99_us, t.rps, t.p99_us, t.rps / d.rps, t.p99_us - d.p99_us
        );
    };
    row("HTTP/1.1 plain", d_plain, t_plain);
    row("HTTPS (TLS interception)", d_tls, t_tls);
    println!("audit: {requests} http_request records written during the plain run");
    let json = serde_json::json!({
        "wrk": {"threads": conns.clamp(1, 2), "connections": conns, "seconds": secs},
        "plain": {"direct_rps": d_plain.rps, "direct_p99_us": d_plain.p99_us,
                  "interceptor_rps": t_plain.rps, "interceptor_p99_us": t_plain.p99_us,
                  "ratio": t_plain.rps / d_plain.rps, "p99_overhead_us": t_plain.p99_us - d_plain.p99_us,
                  "audit_records": requests},
        "tls_intercept": {"direct_rps": d_tls.rps, "direct_p99_us": d_tls.p99_us,
                  "interceptor_rps": t_tls.rps, "interceptor_p99_us": t_tls.p99_us,
                  "ratio": t_tls.rps / d_tls.rps, "p99_overhead_us": t_tls.p99_us - d_tls.p99_us},
    });
    fs::write(dir.join("http.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_wrk() {
        let out = "Running 1s test\n  Latency Distribution\n     50%  100.00us\n     99%    1.50ms\n  1000 requests\nRequests/sec:  12345.67\n";
        let w = super::parse_wrk(out).unwrap();
        assert_eq!(w.rps, 12345.67);
        assert_eq!(w.p99_us, 1500.0);
    }
}
