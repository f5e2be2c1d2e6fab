//! Finding the socket cookie of the client socket without sock_diag (kernels where
//! `inet_diag`/`udp_diag` are modules that cannot be loaded, e.g. a VM without modules):
//! `/proc/net/udp{,6}` gives the socket's inode from its local address, `/proc/PID/fd` of the
//! guarded cgroup's processes gives the owner, and `pidfd_getfd` + `SO_COOKIE` the cookie.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const SYS_PIDFD_OPEN: libc::c_long = 434;
const SYS_PIDFD_GETFD: libc::c_long = 438;
const SO_COOKIE: libc::c_int = 57;

/// Parses a `/proc/net/udp` address ("0100007F:9C4F", or 32 hex digits for IPv6).
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Inode of the UDP socket bound to `local` (or to the wildcard address on its port).
fn inode_of(local: SocketAddr) -> Option<u64> {
    let mut wildcard = None;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(inode)) = (f.get(1).and_then(|a| parse_addr(a)), f.get(9)) else {
                continue;
            };
            if addr.port() != local.port() {
                continue;
            }
            let inode = inode.parse().ok()?;
            if addr.ip().to_canonical() == local.ip().to_canonical() {
                return Some(inode);
            }
            if addr.ip().is_unspecified() {
                wildcard = Some(inode);
            }
        }
    }
    wildcard
}

/// The cookie of the UDP socket sending from `client`, owned by one of `pids`.
pub fn cookie(client: SocketAddr, pids: &[i32], proc_root: &Path) -> Option<u64> {
    let inode = inode_of(client)?;
    let target = format!("socket:[{inode}]");
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == target.as_str()) {
                let num: i32 = fd.file_name().to_str()?.parse().ok()?;
                return cookie_of(pid, num);
            }
        }
    }
    None
}

fn cookie_of(pid: i32, fd: i32) -> Option<u64> {
    // SAFETY: plain syscalls; returned fds are owned and closed on drop.
    unsafe {
        let pidfd = libc::syscall(SYS_PIDFD_OPEN, pid, 0);
        if pidfd < 0 {
            return None;
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let dup = libc::syscall(SYS_PIDFD_GETFD, pidfd.as_raw_fd(), fd, 0);
        if dup < 0 {
            return None;
        }
        let dup = OwnedFd::from_raw_fd(dup as i32);
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            dup.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        (rc == 0).then_some(cookie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            parse_addr("0100007F:0035"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0035"),
            Some("[::1]:53".parse().unwrap())
        );
    }

    /// Our own socket, found through /proc and pidfd_getfd (needs ptrace rights on ourselves:
    /// always granted).
    #[test]
    fn finds_own_socket_cookie() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let pid = std::process::id() as i32;
        let c = cookie(s.local_addr().unwrap(), &[pid], Path::new("/proc")).expect("cookie");
        let mut own: u64 = 0;
        let mut len = 8;
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_COOKIE,
                (&mut own as *mut u64).cast(),
                &mut len,
            )
        };
        assert_eq!((rc, c), (0, own));
    }
}
