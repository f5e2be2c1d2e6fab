//! `cargo xtask demo`: a local TCP service on 127.0.0.2, a small "agent" under
//! `interceptor run` with the demo policy: one allowed connect, one denied, and the audit
//! records that prove it.

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
};

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::util::{is_root, workspace_root};

/// A tiny echo service; counts the connections it accepted.
pub fn echo_service(addr: &str) -> Result<Arc<AtomicUsize>> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (in use?)"))?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0
                        || s.write_all(b"echo: ")
                            .and_then(|_| s.write_all(&buf[..n]))
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(accepted)
}

pub fn run_demo() -> Result<()> {
    if !is_root() {
        bail!("the demo attaches eBPF programs to a cgroup: run it as root (sudo -E cargo xtask demo)");
    }
    build::build(Profile::Release)?;
    let root = workspace_root();
    let interceptor = build::daemon_path(Profile::Release);
    let dir = root.join("target/demo");
    fs::create_dir_all(&dir)?;
    let audit = dir.join("audit.jsonl");
    let _ = fs::remove_file(&audit);

    let allowed = echo_service("127.0.0.2:7001")?;
    let denied = echo_service("127.0.0.2:7002")?;
    let policy = root.join("policies/examples/demo.yaml");
    println!("\n==> demo: echo services on 127.0.0.2:7001 and 127.0.0.2:7002");
    println!(
        "    policy {}: allow 127.0.0.2:7001, deny the other ports",
        policy.display()
    );
    println!("==> interceptor run -- python3 xtask/demo/agent.py\n");
    let status = Command::new(&interceptor)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log", "warn", "run", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(&audit)
        .arg("--")
        .arg("python3")
        .arg(root.join("xtask/demo/agent.py"))
        .status()
        .context("starting the interceptor")?;
    if !status.success() {
        bail!("interceptor run failed: {status}");
    }
    println!("\n==> what the services saw");
    println!(
        "    127.0.0.2:7001 accepted {} connection(s) (from the proxy)",
        allowed.load(Ordering::SeqCst)
    );
    println!(
        "    127.0.0.2:7002 accepted {} connection(s) — the denied connect never reached it",
        denied.load(Ordering::SeqCst)
    );
    println!("\n==> audit records ({})", audit.display());
    for line in fs::read_to_string(&audit)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = &v["identity"];
        println!(
            "    {:<5} {:<22} rule={:<17} pid={} exe={} up={}B down={}B\n          reason: {}",
            v["decision"].as_str().unwrap_or("?"),
            v["destination"].as_str().unwrap_or("-"),
            v["rule"].as_str().unwrap_or("(default)"),
            id["pid"],
            id["exe"].as_str().unwrap_or("?"),
            v["bytes_up"],
            v["bytes_down"],
            v["reason"].as_str().unwrap_or(""),
        );
    }
    println!("\n    raw JSON lines are in {}", audit.display());
    if denied.load(Ordering::SeqCst) != 0 {
        bail!("the denied service was reached: the demo failed");
    }
    Ok(())
}
