//! The socket guards beside the TCP redirect: `sock_create` + `lsm_socket_create` (raw and
//! packet sockets) and the datagram hooks (`sendmsg4/6`, `recvmsg4/6`), with the maps the
//! daemon fills from the policy (`KernelPolicy`) and the caller map the DNS proxy reads.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    os::fd::AsFd,
    path::Path,
    sync::Mutex,
};

use aya::{
    maps::{HashMap, MapData},
    programs::{links::FdLink, CgroupAttachMode, CgroupSock, CgroupSockAddr, LsmCgroup},
    Btf, Ebpf,
};
use interceptor_common::{names, sockets, ConnRecord, SockAddrKey};

use super::{fd_link, program, sock_key, take_map, EbpfError};
use crate::policy::{self, Policy};

/// Datagram programs (all `CgroupSockAddr`).
pub(super) const DGRAM_PROGRAMS: [&str; 4] = [
    names::PROG_SENDMSG4,
    names::PROG_SENDMSG6,
    names::PROG_RECVMSG4,
    names::PROG_RECVMSG6,
];

/// Whether the per-cgroup LSM program (packet sockets) could be loaded on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketGuard {
    /// Loaded; it acts when the BPF LSM is active (`lsm=` contains `bpf`).
    Lsm { active: bool },
    /// Not loadable here (kernel < 6.0, no BTF, or no BPF LSM): the reason was logged.
    Unavailable,
}

/// Loads the guard programs; the LSM one is optional.
pub(super) fn load(ebpf: &mut Ebpf) -> Result<PacketGuard, EbpfError> {
    for name in DGRAM_PROGRAMS {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?;
        prog.load()
            .map_err(|source| EbpfError::Program { name, source })?;
    }
    let name = names::PROG_SOCK_CREATE;
    let prog: &mut CgroupSock = program(ebpf, name)?;
    prog.load()
        .map_err(|source| EbpfError::Program { name, source })?;
    let name = names::PROG_LSM_SOCKET;
    let loaded = Btf::from_sys_fs()
        .map_err(|e| e.to_string())
        .and_then(|btf| {
            let prog: &mut LsmCgroup = program(ebpf, name).map_err(|e| e.to_string())?;
            prog.load(names::LSM_SOCKET_HOOK, &btf)
                .map_err(|e| format!("{e}: {}", error_chain(&e)))
        });
    Ok(match loaded {
        Ok(()) => PacketGuard::Lsm {
            active: bpf_lsm_active(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the per-cgroup LSM program: AF_PACKET sockets are not guarded (they still need CAP_NET_RAW; run agents as a non-root user)");
            PacketGuard::Unavailable
        }
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(&s.to_string());
        out.push_str("; ");
        cur = s.source();
    }
    out
}

/// Whether `bpf` is among the active LSMs (`/sys/kernel/security/lsm`).
pub fn bpf_lsm_active() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().split(',').any(|l| l == "bpf"))
        .unwrap_or(false)
}

/// Attaches the guard programs; returns their links for pinning.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    cg: &std::fs::File,
    packet: PacketGuard,
) -> Result<Vec<(&'static str, FdLink)>, EbpfError> {
    let mut links = Vec::new();
    for name in DGRAM_PROGRAMS {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?;
        let id = prog
            .attach(cg.as_fd(), CgroupAttachMode::Single)
            .map_err(|source| EbpfError::Program { name, source })?;
        let link = prog
            .take_link(id)
            .map_err(|source| EbpfError::Program { name, source })?;
        links.push((name, fd_link(name, link)?));
    }
    let name = names::PROG_SOCK_CREATE;
    let prog: &mut CgroupSock = program(ebpf, name)?;
    let id = prog
        .attach(cg.as_fd(), CgroupAttachMode::Single)
        .map_err(|source| EbpfError::Program { name, source })?;
    let link = prog
        .take_link(id)
        .map_err(|source| EbpfError::Program { name, source })?;
    links.push((name, fd_link(name, link)?));
    if packet != PacketGuard::Unavailable {
        let name = names::PROG_LSM_SOCKET;
        let prog: &mut LsmCgroup = program(ebpf, name)?;
        let id = prog
            .attach(cg.as_fd())
            .map_err(|source| EbpfError::Program { name, source })?;
        let link = prog
            .take_link(id)
            .map_err(|source| EbpfError::Program { name, source })?;
        links.push((name, fd_link(name, link)?));
    }
    Ok(links)
}

/// The kernel's copy of the policy's socket, UDP and DNS parts.
pub struct KernelPolicy {
    socket_policy: HashMap<MapData, u64, u32>,
    udp_allow: HashMap<MapData, SockAddrKey, u32>,
    dns_redirect: HashMap<MapData, SockAddrKey, SockAddrKey>,
    dns_reverse: HashMap<MapData, SockAddrKey, SockAddrKey>,
    /// What was last written to each map: unchanged maps are not rewritten.
    written: Written,
}

#[derive(Default)]
struct Written {
    socket_policy: Option<BTreeMap<u64, u32>>,
    udp_allow: Option<BTreeMap<SockAddrKey, u32>>,
    dns_redirect: Option<BTreeMap<SockAddrKey, SockAddrKey>>,
    dns_reverse: Option<BTreeMap<SockAddrKey, SockAddrKey>>,
}

/// What `KernelPolicy::apply` wrote (for logs and status).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Allow bits of the default entry and of each known cgroup (by path).
    pub default_bits: u32,
    pub cgroups: BTreeMap<String, u32>,
    pub udp_entries: usize,
    /// resolver → proxy listener.
    pub dns: BTreeMap<String, String>,
}

impl KernelPolicy {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, EbpfError> {
        Ok(Self {
            socket_policy: take_map(ebpf, names::MAP_SOCKET_POLICY)?,
            udp_allow: take_map(ebpf, names::MAP_UDP_ALLOW)?,
            dns_redirect: take_map(ebpf, names::MAP_DNS_REDIRECT)?,
            dns_reverse: take_map(ebpf, names::MAP_DNS_REVERSE)?,
            written: Written::default(),
        })
    }

    /// Writes the policy's socket kinds (for `top` and every cgroup below it), the UDP allow
    /// list and the resolver → DNS listener pairs, and removes entries no longer wanted.
    pub fn apply(
        &mut self,
        policy: &Policy,
        root: &Path,
        top: &Path,
        dns: &[(IpAddr, SocketAddr)],
    ) -> Result<Applied, EbpfError> {
        let s = policy.sockets();
        let mut applied = Applied::default();
        let mut want: BTreeMap<u64, u32> = BTreeMap::new();
        let top_rel = crate::cgroup::relative_to(root, top);
        // Key 0 serves cgroups created since the last scan: never more than the default and
        // the guarded cgroup itself both allow.
        let default_bits = policy::socket_bits(&s, None) & policy::socket_bits(&s, Some(&top_rel));
        want.insert(sockets::DEFAULT_KEY, default_bits);
        applied.default_bits = default_bits;
        for dir in cgroup_tree(top) {
            let rel = crate::cgroup::relative_to(root, &dir);
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let bits = policy::socket_bits(&s, Some(&rel));
            want.insert(std::os::unix::fs::MetadataExt::ino(&meta), bits);
            applied.cgroups.insert(rel, bits);
        }
        sync(
            &mut self.socket_policy,
            names::MAP_SOCKET_POLICY,
            want,
            &mut self.written.socket_policy,
        )?;

        let udp: BTreeMap<SockAddrKey, u32> = policy::udp_entries(&s)
            .map_err(|detail| EbpfError::Policy { detail })?
            .into_iter()
            .map(|(ip, port)| (sock_key(SocketAddr::new(ip, port)), 1))
            .collect();
        applied.udp_entries = udp.len();
        sync(
            &mut self.udp_allow,
            names::MAP_UDP_ALLOW,
            udp,
            &mut self.written.udp_allow,
        )?;

        let mut redirect = BTreeMap::new();
        let mut reverse = BTreeMap::new();
        for (resolver, listener) in dns {
            let r = sock_key(SocketAddr::new(*resolver, policy::DNS_PORT));
            let l = sock_key(*listener);
            redirect.insert(r, l);
            reverse.insert(l, r);
            applied.dns.insert(
                SocketAddr::new(*resolver, 53).to_string(),
                listener.to_string(),
            );
        }
        // Reverse first: a redirect must never exist without its way back.
        sync(
            &mut self.dns_reverse,
            names::MAP_DNS_REVERSE,
            reverse,
            &mut self.written.dns_reverse,
        )?;
        sync(
            &mut self.dns_redirect,
            names::MAP_DNS_REDIRECT,
            redirect,
            &mut self.written.dns_redirect,
        )?;
        Ok(applied)
    }
}

/// Makes `map` hold exactly `want` (nothing to do when `written` already equals it).
fn sync<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    want: BTreeMap<K, V>,
    written: &mut Option<BTreeMap<K, V>>,
) -> Result<(), EbpfError>
where
    K: aya::Pod + Ord,
    V: aya::Pod + PartialEq,
{
    if written.as_ref() == Some(&want) {
        return Ok(());
    }
    *written = None;
    for (k, v) in &want {
        map.insert(k, v, 0)
            .map_err(|source| EbpfError::Map { name, source })?;
    }
    let stale: BTreeSet<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    *written = Some(want);
    Ok(())
}

/// `top` and every cgroup directory below it.
fn cgroup_tree(top: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![top.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Socket cookie → who sent DNS from that socket (filled by the datagram hooks).
pub struct UdpCallers(Mutex<HashMap<MapData, u64, ConnRecord>>);

impl UdpCallers {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, EbpfError> {
        Ok(Self(Mutex::new(take_map(ebpf, names::MAP_UDP_CALLERS)?)))
    }

    pub fn get(&self, cookie: u64) -> Option<ConnRecord> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&cookie, 0).ok()
    }
}
