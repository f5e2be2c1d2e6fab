//! The load of `cargo xtask soak` (`xtask soak-client`, run by `interceptor run` inside the
//! agent cgroup): N concurrent connections, one thread each, doing request/response for a
//! fixed time. TCP connections send a line to the echo server and expect it back; PostgreSQL
//! connections speak the simple query protocol (the interceptor accepts any password from
//! the agent, so no authentication code is needed here).
//!
//! Phases are driven over stdin/stdout so that the parent can sample the daemon between
//! them: prints `STARTED`, waits for a line, connects everything, prints `READY`, starts the
//! traffic, prints `WARM` once every connection has done one request, prints `DONE` at the
//! end of the traffic (connections still open), waits for a line, closes every connection,
//! prints `CLOSED <json>`, waits for a line, closes every connection, prints
//! waits for a line, exits.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct SoakClientArgs {
    #[arg(long)]
    pub echo: SocketAddr,
    #[arg(long)]
    pub pg: SocketAddr,
    #[arg(long)]
    pub conns: usize,
    #[arg(long)]
    pub pg_conns: usize,
    #[arg(long)]
    pub secs: u64,
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    pg: bool,
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

fn wait_line() {
    let mut l = String::new();
    let _ = std::io::stdin().lock().read_line(&mut l);
}

fn say(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

pub fn run(a: &SoakClientArgs) -> Result<()> {
    say("STARTED");
    wait_line();
    let n = a.conns;
    let connected = Arc::new(Barrier::new(n + 1));
    let go = Arc::new(Barrier::new(n + 1));
    let close = Arc::new(Barrier::new(n + 1));
    let stop = Arc::new(AtomicBool::new(false));
    // Connections that finished their first request (or failed): splice pipes, pooled
    // upstreams and buffers exist from then on, so the "start" sample is taken after it.
    let warm = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let pg = i < a.pg_conns;
        let addr = if pg { a.pg } else { a.echo };
        let (connected, go, close, stop, warm) = (
            connected.clone(),
            go.clone(),
            close.clone(),
            stop.clone(),
            warm.clone(),
        );
        let t = thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let mut tally = Tally {
                    pg,
                    ..Tally::default()
                };
                let conn = open(addr, pg, i);
                connected.wait();
                go.wait();
                match conn {
                    Err(e) => {
                        warm.fetch_add(1, Ordering::SeqCst);
                        tally.errors += 1;
                        tally.first_error = Some(format!("connect: {e:#}"));
                    }
                    Ok(mut s) => {
                        let mut k = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            k += 1;
                            let t = Instant::now();
                            let r = if pg {
                                pg_query(&mut s, i, k)
                            } else {
                                echo(&mut s, i, k)
                            };
                            if k == 1 {
                                warm.fetch_add(1, Ordering::SeqCst);
                            }
                            match r {
                                Ok(()) => tally
                                    .latencies_us
                                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                                Err(e) => {
                                    tally.errors += 1;
                                    tally.first_error.get_or_insert(format!("{e:#}"));
                                    break;
                                }
                            }
                        }
                        close.wait();
                        drop(s);
                        return tally;
                    }
                }
                close.wait();
                tally
            })
            .context("spawning a connection thread")?;
        threads.push(t);
    }
    connected.wait();
    say("READY");
    let started = Instant::now();
    go.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    while warm.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(1));
    say("WARM");
    let left = Duration::from_secs(a.secs).saturating_sub(started.elapsed());
    thread::sleep(left);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    // Every thread finishes its request in flight, then waits at `close` with its connection
    // still open: the parent samples the daemon now.
    thread::sleep(Duration::from_millis(500));
    say("DONE");
    wait_line();
    close.wait();
    let tallies: Vec<Tally> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    let summary = summarize(&tallies, elapsed);
    say(&format!("CLOSED {summary}"));
    wait_line();
    Ok(())
}

fn open(addr: SocketAddr, pg: bool, i: usize) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    if pg {
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes());
        for kv in ["user", "agent", "database", "soak", "application_name"] {
            body.extend_from_slice(kv.as_bytes());
            body.push(0);
        }
        body.extend_from_slice(format!("soak-{i}").as_bytes());
        body.extend_from_slice(b"\0\0");
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        s.write_all(&msg)?;
        until_ready(&mut s)?;
    }
    Ok(s)
}

/// Reads backend messages up to ReadyForQuery; the number of DataRows. An ErrorResponse
/// is an error.
fn until_ready(s: &mut TcpStream) -> Result<usize> {
    let mut rows = 0;
    let mut error = None;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).context("reading from the server")?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            bail!("bad message length {len}");
        }
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body)?;
        match head[0] {
            b'D' => rows += 1,
            b'E' => error = Some(String::from_utf8_lossy(&body).replace('\0', " ")),
            b'Z' => {
                return match error {
                    Some(e) => bail!("server error: {e}"),
                    None => Ok(rows),
                }
            }
            _ => {}
        }
    }
}

fn pg_query(s: &mut TcpStream, i: usize, k: u64) -> Result<()> {
    let id = (i as u64 * 7919 + k) % 1000 + 1;
    let sql = format!("SELECT id, name, email FROM people WHERE id = {id}\0");
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(sql.as_bytes());
    s.write_all(&msg)?;
    match until_ready(s)? {
        1 => Ok(()),
        n => bail!("expected 1 row, got {n}"),
    }
}

fn echo(s: &mut TcpStream, i: usize, k: u64) -> Result<()> {
    let line = format!("soak {i} {k} {}\n", "x".repeat(40));
    s.write_all(line.as_bytes())?;
    let want = format!("echo:{line}");
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).context("reading the echo")?;
    if got != want.as_bytes() {
        bail!("echo mismatch: {:?}", String::from_utf8_lossy(&got));
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

/// One JSON object: per kind requests, requests/s, p50/p99 (ms), errors.
fn summarize(tallies: &[Tally], secs: f64) -> String {
    let kind = |pg: bool| {
        let ts: Vec<&Tally> = tallies.iter().filter(|t| t.pg == pg).collect();
        let mut lat: Vec<u32> = ts
            .iter()
            .flat_map(|t| t.latencies_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let errors: u64 = ts.iter().map(|t| t.errors).sum();
        let first = ts.iter().find_map(|t| t.first_error.clone());
        serde_json::json!({
            "conns": ts.len(),
            "requests": lat.len(),
            "per_sec": (lat.len() as f64 / secs).round(),
            "p50_ms": percentile(&lat, 0.50),
            "p99_ms": percentile(&lat, 0.99),
            "errors": errors,
            "first_error": first,
        })
    };
    serde_json::json!({ "secs": secs, "pg": kind(true), "tcp": kind(false) }).to_string()
}
