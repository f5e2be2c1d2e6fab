//! Connections that bypass the proxy because they existed before `attach`: established TCP
//! sockets owned by processes of the guarded cgroup (tree) whose peer is not a proxy listener.
//! Found with sock_diag (every TCP socket, by inode) and `/proc/PID/fd` (inode → process).
//! `status` lists them; `attach --strict` refuses to stay attached while any exists, and
//! `attach --strict=destroy` closes them with `SOCK_DESTROY` (CONFIG_INET_DIAG_DESTROY).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::sockdiag::{self, DiagSock, SockDiagError};

/// One established connection of the cgroup that is not through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideConn {
    pub pid: i32,
    pub comm: String,
    pub local: String,
    pub remote: String,
    #[serde(skip)]
    sock: Option<DiagSock>,
}

/// Process ids in `top` and every cgroup below it.
pub(crate) fn cgroup_pids(top: &Path) -> Vec<i32> {
    let mut dirs: Vec<PathBuf> = vec![top.to_path_buf()];
    let mut pids = Vec::new();
    while let Some(d) = dirs.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// Socket inode → owning pid, for the given processes.
fn socket_inodes(pids: &[i32]) -> HashMap<u32, i32> {
    let mut out = HashMap::new();
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(ino) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u32>().ok())
            {
                out.entry(ino).or_insert(pid);
            }
        }
    }
    out
}

/// Established TCP connections of the cgroup's processes whose peer is not one of
/// `listeners` (the proxy).
pub fn scan(top: &Path, listeners: &[SocketAddr]) -> Result<Vec<OutsideConn>, SockDiagError> {
    let owners = socket_inodes(&cgroup_pids(top));
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let states = 1u32 << sockdiag::TCP_ESTABLISHED;
    let mut socks = sockdiag::tcp_sockets(false, states)?;
    socks.extend(sockdiag::tcp_sockets(true, states)?);
    let through_proxy = |s: &DiagSock| {
        let remote = SocketAddr::new(s.remote.ip().to_canonical(), s.remote.port());
        listeners.contains(&remote)
    };
    let mut out: Vec<OutsideConn> = socks
        .into_iter()
        .filter(|s| !through_proxy(s))
        .filter_map(|s| {
            let pid = *owners.get(&s.inode)?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            Some(OutsideConn {
                pid,
                comm,
                local: s.local.to_string(),
                remote: s.remote.to_string(),
                sock: Some(s),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.pid, &a.remote).cmp(&(b.pid, &b.remote)));
    Ok(out)
}

/// Closes each connection (`SOCK_DESTROY`); returns how many the kernel closed.
pub fn destroy(conns: &[OutsideConn]) -> Result<usize, SockDiagError> {
    let mut n = 0;
    for c in conns {
        if let Some(s) = &c.sock {
            sockdiag::destroy_tcp(s)?;
            n += 1;
        }
    }
    Ok(n)
}
