//! Bypass attempts in the VM (the host runs the full set in interceptor/tests/bypass/):
//! UDP to an unlisted port, DNS through the proxy with the reply's source restored, raw and
//! packet sockets. The attempts run as `vm-suite attempt KIND …` under `interceptor run`.

use std::{
    net::UdpSocket,
    os::fd::FromRawFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use crate::check;
use crate::harness::*;
use crate::probe::ProbeResult;

fn me() -> ProbeResult {
    ProbeResult {
        pid: std::process::id() as i32,
        exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into()),
        ..ProbeResult::default()
    }
}

fn os_err(mut r: ProbeResult, e: std::io::Error) -> ProbeResult {
    r.ok = false;
    r.errno = e.raw_os_error();
    r.error = Some(e.to_string());
    r
}

/// `vm-suite attempt udp HOST PORT` | `dns HOST NAME` | `socket raw4|packet`.
pub fn attempt(args: &[&str]) -> ProbeResult {
    let r = me();
    match args {
        ["udp", host, port] => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            match s.send_to(b"leak", format!("{host}:{port}")) {
                Ok(_) => match s.recv_from(&mut [0u8; 64]) {
                    Ok((_, from)) => ProbeResult {
                        ok: true,
                        peer: Some(from.to_string()),
                        ..r
                    },
                    Err(e) => os_err(r, e),
                },
                Err(e) => os_err(r, e),
            }
        }
        ["dns", host, name] => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for l in name.split('.') {
                q.push(l.len() as u8);
                q.extend_from_slice(l.as_bytes());
            }
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            if let Err(e) = s.send_to(&q, format!("{host}:53")) {
                return os_err(r, e);
            }
            let mut buf = [0u8; 512];
            match s.recv_from(&mut buf) {
                Ok((n, from)) if n >= 12 => ProbeResult {
                    ok: true,
                    peer: Some(from.to_string()),
                    reply: Some(format!("rcode={}", buf[3] & 0x0f)),
                    ..r
                },
                Ok(_) => ProbeResult {
                    error: Some("short reply".into()),
                    ..r
                },
                Err(e) => os_err(r, e),
            }
        }
        ["socket", kind] => {
            let (family, ty, proto) = match *kind {
                "raw4" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP),
                "packet" => (
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                ),
                _ => {
                    return ProbeResult {
                        error: Some(format!("bad kind {kind}")),
                        ..r
                    }
                }
            };
            // SAFETY: plain syscall; the fd is closed right away.
            let fd = unsafe { libc::socket(family, ty, proto) };
            if fd < 0 {
                return os_err(r, std::io::Error::last_os_error());
            }
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            ProbeResult { ok: true, ..r }
        }
        _ => ProbeResult {
            error: Some(format!("bad attempt {args:?}")),
            ..r
        },
    }
}

/// A UDP server on HOST:PORT answering DNS queries (NOERROR, no records) and echoing other
/// datagrams; counts what it received.
struct UdpPeer {
    port: u16,
    received: Arc<AtomicUsize>,
}

impl UdpPeer {
    fn start(ip: &str, port: u16) -> Result<UdpPeer, Fail> {
        let s = UdpSocket::bind((ip, port)).map_err(|e| fail(format!("bind {ip}:{port}: {e}")))?;
        let port = s.local_addr().map_err(|e| fail(e.to_string()))?.port();
        let received = Arc::new(AtomicUsize::new(0));
        let r = received.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                r.fetch_add(1, Ordering::SeqCst);
                if n >= 12 {
                    buf[2] |= 0x80;
                    buf[3] = 0x80;
                }
                let _ = s.send_to(&buf[..n], from);
            }
        });
        Ok(UdpPeer { port, received })
    }

    fn received(&self) -> usize {
        thread::sleep(Duration::from_millis(200));
        self.received.load(Ordering::SeqCst)
    }
}

fn policy(resolver: &str) -> String {
    format!("version: 1\ndefault: deny\ndns:\n  resolvers: [{resolver}]\n")
}

fn run_attempt(env: &Env, policy: &std::path::Path, args: &[&str]) -> Result<ProbeResult, Fail> {
    let me = env.ctx.me.display().to_string();
    let mut all = vec![me.as_str(), "attempt"];
    all.extend_from_slice(args);
    let spawned = Spawned::start(env.run_cmd(policy, &all))?;
    env.ctx.note_instance(format!("run-{}", spawned.pid()));
    let out = spawned.wait(Duration::from_secs(60))?;
    ProbeResult::parse(&out.stdout).ok_or_else(|| {
        fail_with(
            format!("no attempt result in {:?}", out.stdout),
            &out.stderr,
        )
    })
}

fn eperm(r: &ProbeResult, what: &str) -> TestResult {
    check!(
        !r.ok && r.errno == Some(libc::EPERM),
        "{what} must fail with EPERM: {}",
        r.line()
    );
    Ok(())
}

pub fn udp_unlisted_port_denied(env: &Env) -> TestResult {
    let peer = UdpPeer::start("127.0.0.2", 0)?;
    let p = env.policy(&policy("127.0.53.1"))?;
    let r = run_attempt(env, &p, &["udp", "127.0.0.2", &peer.port.to_string()])?;
    eperm(&r, "UDP to an unlisted port")?;
    check!(peer.received() == 0, "a datagram arrived");
    Ok(())
}

pub fn dns_proxied_reply_source_restored(env: &Env) -> TestResult {
    let peer = UdpPeer::start("127.0.53.1", 53)?;
    let p = env.policy(&policy("127.0.53.1"))?;
    let r = run_attempt(env, &p, &["dns", "127.0.53.1", "vm.example.test"])?;
    check!(
        r.ok && r.reply.as_deref() == Some("rcode=0"),
        "DNS answer: {}",
        r.line()
    );
    check!(
        r.peer.as_deref() == Some("127.0.53.1:53"),
        "reply source not restored: {}",
        r.line()
    );
    check!(
        peer.received() == 1,
        "the resolver saw {} queries",
        peer.received()
    );
    let recs: Vec<_> = env
        .audit()?
        .into_iter()
        .filter(|r| r["type"] == "dns")
        .collect();
    check!(recs.len() == 1, "dns audit records: {recs:?}");
    check!(
        recs[0]["qname"] == "vm.example.test" && recs[0]["identity"]["pid"] == r.pid,
        "record: {}",
        recs[0]
    );
    let other = run_attempt(env, &p, &["dns", "127.0.53.2", "vm.example.test"])?;
    eperm(&other, "DNS to an unlisted resolver")
}

pub fn raw_socket_denied(env: &Env) -> TestResult {
    let p = env.policy(&policy("127.0.53.1"))?;
    eperm(&run_attempt(env, &p, &["socket", "raw4"])?, "raw socket")?;
    let allow = env.policy("version: 1\nsockets:\n  raw: allow\n")?;
    let r = run_attempt(env, &allow, &["socket", "raw4"])?;
    check!(r.ok, "raw socket allowed by the policy: {}", r.line());
    Ok(())
}

pub fn packet_socket_denied(env: &Env) -> TestResult {
    let out = exec(
        {
            let mut c = env.cmd();
            c.arg("doctor");
            c
        },
        Duration::from_secs(60),
    )?;
    if !out.stdout.contains("packet:  ok") {
        return Err(Fail::Skip(format!(
            "no per-cgroup LSM on this kernel: {}",
            out.stdout
                .lines()
                .find(|l| l.contains("packet:"))
                .unwrap_or("?")
                .trim()
        )));
    }
    let p = env.policy(&policy("127.0.53.1"))?;
    eperm(
        &run_attempt(env, &p, &["socket", "packet"])?,
        "AF_PACKET socket (root)",
    )?;
    let allow = env.policy("version: 1\nsockets:\n  packet: allow\n")?;
    let r = run_attempt(env, &allow, &["socket", "packet"])?;
    check!(r.ok, "packet socket allowed by the policy: {}", r.line());
    Ok(())
}
