//! `interceptor doctor`: can this kernel run the interceptor? Checks the pieces it needs and
//! loads the programs (the verifier runs) without attaching them anywhere.
//!
//! Exit code: 0 when supported, [`UNSUPPORTED_EXIT`] with a line `unsupported: <reason>`
//! otherwise, 1 when the binary itself is unusable (built without its eBPF object). The VM
//! suite (`vm-tests/`) runs it first on every kernel.

use std::{fs, path::Path};

use crate::{cgroup, ebpf};

/// Exit code of `interceptor doctor` when the kernel cannot run the interceptor.
pub const UNSUPPORTED_EXIT: i32 = 3;

/// The oldest kernel the programs are meant for (bpf_link for cgroups, sk storage from BPF
/// programs, sockops `TCP_CONNECT_CB`, getpeername hooks).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Lines of a verifier log kept at each end in the `unsupported:` reason.
const LOG_LINES: usize = 12;

/// Runs every check, prints one line each and a verdict; returns the exit code.
pub fn run() -> i32 {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let old = parse_release(&release).is_some_and(|v| v < MIN_KERNEL);
    println!(
        "kernel:   {release}{}",
        if old {
            format!(
                " (older than {}.{}, the oldest one supported)",
                MIN_KERNEL.0, MIN_KERNEL.1
            )
        } else {
            String::new()
        }
    );

    let mut problems: Vec<String> = Vec::new();
    match cgroup::cgroup2_root() {
        Ok(root) => println!("cgroup2:  ok ({})", root.display()),
        Err(e) => {
            println!("cgroup2:  missing: {e}");
            problems.push(format!("no cgroup v2: {e}"));
        }
    }
    match ebpf::ensure_bpffs() {
        Ok(()) => println!("bpffs:    ok (/sys/fs/bpf)"),
        Err(e) => {
            println!("bpffs:    missing: {e}");
            problems.push(format!("no bpffs: {e}"));
        }
    }
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    println!(
        "btf:      {}",
        if btf {
            "ok (/sys/kernel/btf/vmlinux)"
        } else {
            "missing (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF)"
        }
    );
    match ebpf::Programs::load() {
        Ok(programs) => {
            println!("programs: ok (loaded and verified, not attached)");
            print_guards(programs.packet_guard());
        }
        Err(e @ ebpf::EbpfError::NotBuilt) => {
            // Not the kernel's fault: say so, and do not call the kernel unsupported.
            println!("programs: {e}");
            return 1;
        }
        Err(e) => {
            let text = e.to_string();
            println!("programs: failed to load:");
            for line in text.lines() {
                println!("  {line}");
            }
            let mut reason = String::new();
            if old {
                reason.push_str(&format!(
                    "kernel {release} is older than {}.{}; ",
                    MIN_KERNEL.0, MIN_KERNEL.1
                ));
            }
            if !btf {
                reason.push_str("no kernel BTF; ");
            }
            reason.push_str(&shorten_log(&text));
            problems.push(reason);
        }
    }

    if problems.is_empty() {
        println!("supported");
        0
    } else {
        println!("unsupported: {}", problems.join("; "));
        UNSUPPORTED_EXIT
    }
}

/// The program types beside the TCP redirect, and how packet sockets are guarded.
fn print_guards(packet: ebpf::PacketGuard) {
    use interceptor_common::names;
    println!(
        "  tcp:     cgroup/connect4, cgroup/connect6, sockops ({}), cgroup/getpeername4, cgroup/getpeername6",
        names::PROG_SOCK_OPS
    );
    println!(
        "  udp/dns: cgroup/sendmsg4, cgroup/sendmsg6, cgroup/recvmsg4, cgroup/recvmsg6 (+ connect4/6 for datagram sockets)"
    );
    println!(
        "  raw:     cgroup/sock_create ({})",
        names::PROG_SOCK_CREATE
    );
    let packet = match packet {
        ebpf::PacketGuard::Lsm { active: true } => {
            "ok (lsm_cgroup/socket_create, BPF LSM active)".to_string()
        }
        ebpf::PacketGuard::Lsm { active: false }
            if !std::path::Path::new("/sys/kernel/security/lsm").exists() =>
        {
            "lsm_cgroup/socket_create loads; whether the BPF LSM is active is unknown (securityfs is not mounted at /sys/kernel/security: `mount -t securityfs none /sys/kernel/security`, then run doctor again)".to_string()
        }
        ebpf::PacketGuard::Lsm { active: false } => {
            "lsm_cgroup/socket_create loads, but the BPF LSM is not active (add `bpf` to the lsm= boot parameter); AF_PACKET then only needs CAP_NET_RAW".to_string()
        }
        ebpf::PacketGuard::Unavailable => "not available: lsm_cgroup/socket_create did not load (the kernel's answer is in the warning above; it needs a kernel ≥ 6.0 built with CONFIG_BPF_LSM, and some sandboxes refuse LSM programs with EPERM); AF_PACKET only needs CAP_NET_RAW: run agents as a non-root user".to_string(),
    };
    println!("  packet:  {packet}");
}

/// `6.1.0-56-cloud-amd64` → (6, 1).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A load error (often with a long verifier log) as one line: its first and last lines,
/// joined with ` | `.
fn shorten_log(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() <= 2 * LOG_LINES {
        return lines.join(" | ");
    }
    format!(
        "{} | … {} lines … | {}",
        lines[..LOG_LINES].join(" | "),
        lines.len() - 2 * LOG_LINES,
        lines[lines.len() - LOG_LINES..].join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("6.1.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn long_logs_are_shortened() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let short = shorten_log(&log);
        assert!(short.starts_with("line 0 | line 1"));
        assert!(short.contains("… 76 lines …"));
        assert!(short.ends_with("line 99"));
        assert_eq!(shorten_log("a\n\nb"), "a | b");
    }
}
