//! Loads the kernel programs, attaches them to a cgroup (links pinned in bpffs so a crashed
//! daemon leaves the cgroup closed, not open), and reads the maps they fill.

use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        CgroupAttachMode, CgroupSockAddr, SockOps,
    },
    Ebpf,
};
use interceptor_common::{counter, names, ConnRecord, ProxyConfig, SockAddrKey, AF_INET, AF_INET6};

mod guard;
pub use guard::{bpf_lsm_active, Applied, KernelPolicy, PacketGuard, UdpCallers};

/// The object built by `cargo xtask build`, embedded by build.rs (empty if it was not built).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/interceptor-ebpf.o"));

/// Where pinned links live: one directory per attachment under this bpffs path.
pub const PIN_ROOT: &str = "/sys/fs/bpf/interceptor";

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("this interceptor binary was built without its eBPF object; build it with `cargo xtask build`")]
    NotBuilt,
    #[error("loading the eBPF object failed (are you root, with bpffs and BTF? kernel ≥ 5.8 is required): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "eBPF object has no {0} (object and daemon out of sync; rebuild with `cargo xtask build`)"
    )]
    Missing(&'static str),
    #[error("pinning link at {path}: {detail} (is bpffs mounted at /sys/fs/bpf?)")]
    Pin { path: PathBuf, detail: String },
    #[error("policy cannot be written to the kernel maps: {detail}")]
    Policy { detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The loaded (not yet attached) programs and their maps.
pub struct Programs {
    ebpf: Ebpf,
    config: Array<MapData, ProxyConfig>,
    packet: PacketGuard,
}

/// Program name and the hook it attaches to.
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    names::PROG_CONNECT4,
    names::PROG_CONNECT6,
    names::PROG_GETPEERNAME4,
    names::PROG_GETPEERNAME6,
];

impl Programs {
    /// Loads every program into the kernel (verifier runs here).
    pub fn load() -> Result<Self, EbpfError> {
        if OBJECT.is_empty() {
            return Err(EbpfError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(OBJECT)?;
        for name in SOCK_ADDR_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| EbpfError::Program { name, source })?;
        }
        let name = names::PROG_SOCK_OPS;
        let prog: &mut SockOps = program(&mut ebpf, name)?;
        prog.load()
            .map_err(|source| EbpfError::Program { name, source })?;
        let packet = guard::load(&mut ebpf)?;
        let config = take_map(&mut ebpf, names::MAP_CONFIG)?;
        Ok(Self {
            ebpf,
            config,
            packet,
        })
    }

    /// How packet sockets are guarded on this kernel.
    pub fn packet_guard(&self) -> PacketGuard {
        self.packet
    }

    /// The maps the daemon fills from the policy's `sockets:` and `dns:` sections.
    pub fn take_kernel_policy(&mut self) -> Result<KernelPolicy, EbpfError> {
        KernelPolicy::take(&mut self.ebpf)
    }

    /// The map where the datagram hooks note who sent DNS from which socket.
    pub fn take_udp_callers(&mut self) -> Result<UdpCallers, EbpfError> {
        UdpCallers::take(&mut self.ebpf)
    }

    /// Tells the hooks where the proxy listens. Until this is called every connect from an
    /// attached cgroup fails with EPERM.
    pub fn set_proxy(&mut self, v4: SocketAddr, v6: Option<SocketAddr>) -> Result<(), EbpfError> {
        let cfg = proxy_config(v4, v6);
        self.config.set(0, cfg, 0).map_err(|source| EbpfError::Map {
            name: names::MAP_CONFIG,
            source,
        })
    }

    /// The map where the kernel hands each redirected connection to the proxy.
    pub fn take_clients(&mut self) -> Result<ClientMap, EbpfError> {
        Ok(ClientMap(Mutex::new(take_map(
            &mut self.ebpf,
            names::MAP_CLIENTS,
        )?)))
    }

    pub fn take_counters(&mut self) -> Result<Counters, EbpfError> {
        Ok(Counters(take_map(&mut self.ebpf, names::MAP_COUNTERS)?))
    }

    /// Attaches all programs to `cgroup` and pins their links under `pin_dir`.
    ///
    /// `CgroupAttachMode::Single` means "no flags": the kernel refuses flags on
    /// `bpf_link_create` for cgroups, and bpf_links are always multi-attach, so other
    /// programs on the cgroup (or a second interceptor instance) are not displaced.
    ///
    /// Links are attached first and only then are stale pins of a previous (crashed) daemon
    /// replaced, so there is no instant when the cgroup is unguarded.
    pub fn attach(&mut self, cgroup: &Path, pin_dir: &Path) -> Result<Attachment, EbpfError> {
        ensure_bpffs()?;
        let cg = fs::File::open(cgroup).map_err(|source| EbpfError::Io {
            path: cgroup.into(),
            source,
        })?;
        fs::create_dir_all(pin_dir).map_err(|source| EbpfError::Io {
            path: pin_dir.into(),
            source,
        })?;
        let mut links: Vec<(&'static str, FdLink)> = Vec::new();
        for name in SOCK_ADDR_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&cg, CgroupAttachMode::Single)
                .map_err(|source| EbpfError::Program { name, source })?;
            let link = prog
                .take_link(id)
                .map_err(|source| EbpfError::Program { name, source })?;
            links.push((name, fd_link(name, link)?));
        }
        let name = names::PROG_SOCK_OPS;
        let prog: &mut SockOps = program(&mut self.ebpf, name)?;
        let id = prog
            .attach(&cg, CgroupAttachMode::Single)
            .map_err(|source| EbpfError::Program { name, source })?;
        let link = prog
            .take_link(id)
            .map_err(|source| EbpfError::Program { name, source })?;
        links.push((name, fd_link(name, link)?));
        links.extend(guard::attach(&mut self.ebpf, &cg, self.packet)?);

        let mut pinned = Vec::new();
        for (name, link) in links {
            let path = pin_dir.join(name);
            // A stale pin from a crashed daemon: its link keeps the cgroup closed until ours
            // is in place, then goes.
            if path.exists() {
                if let Ok(old) = PinnedLink::from_pin(&path) {
                    let _ = old.unpin();
                }
            }
            let p = link.pin(&path).map_err(|e| EbpfError::Pin {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            pinned.push(p);
        }
        Ok(Attachment {
            pin_dir: pin_dir.to_path_buf(),
            links: pinned,
        })
    }
}

pub(crate) fn fd_link<L>(name: &'static str, link: L) -> Result<FdLink, EbpfError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    FdLink::try_from(link).map_err(|e| EbpfError::Pin {
        path: PathBuf::from(name),
        detail: format!("kernel gave no bpf_link (kernel ≥ 5.7 needed): {e}"),
    })
}

pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(EbpfError::Missing(name))?;
    prog.try_into()
        .map_err(|source| EbpfError::Program { name, source })
}

pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(EbpfError::Missing(name))?;
    T::try_from(map).map_err(|source| EbpfError::Map { name, source })
}

/// The programs attached to one cgroup, their links pinned in bpffs.
pub struct Attachment {
    pin_dir: PathBuf,
    links: Vec<PinnedLink>,
}

impl Attachment {
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Orderly detach: unpin and close every link, then remove the pin directory.
    pub fn detach(self) -> Result<(), EbpfError> {
        for link in self.links {
            let fd = link.unpin().map_err(|source| EbpfError::Io {
                path: self.pin_dir.clone(),
                source,
            })?;
            drop(fd);
        }
        match fs::remove_dir(&self.pin_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(EbpfError::Io {
                path: self.pin_dir,
                source,
            }),
        }
    }
}

/// Removes the pinned links under `pin_dir` (what `interceptor detach` does after a crash).
pub fn remove_pins(pin_dir: &Path) -> Result<usize, EbpfError> {
    let mut removed = 0;
    let entries = match fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(EbpfError::Io {
                path: pin_dir.into(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match PinnedLink::from_pin(&path) {
            Ok(link) => {
                let _ = link.unpin();
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
            }
        }
        removed += 1;
    }
    let _ = fs::remove_dir(pin_dir);
    Ok(removed)
}

/// The kernel's hand-over map: client address → who connected where.
pub struct ClientMap(Mutex<HashMap<MapData, SockAddrKey, ConnRecord>>);

impl ClientMap {
    /// Looks up and deletes the record for an accepted connection's peer address.
    pub fn take(&self, peer: SocketAddr) -> Option<ConnRecord> {
        let key = sock_key(peer);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let rec = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(rec)
    }

    /// Entries not yet claimed (for status).
    pub fn pending(&self) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.keys().count()
    }
}

/// The kernel programs' per-CPU counters.
pub struct Counters(PerCpuArray<MapData, u64>);

impl Counters {
    /// (name, value summed over CPUs) for every counter.
    pub fn read(&self) -> Vec<(&'static str, u64)> {
        (0..counter::COUNT)
            .map(|i| {
                let v = self.0.get(&i, 0).map(|vals| vals.iter().sum()).unwrap_or(0);
                (counter::NAMES[i as usize], v)
            })
            .collect()
    }
}

/// The key the `sockops` program uses for a client address (IPv4-mapped → IPv4).
pub fn sock_key(addr: SocketAddr) -> SockAddrKey {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => SockAddrKey {
            family: AF_INET,
            port: addr.port(),
            _pad: 0,
            addr: [u32::from_ne_bytes(ip.octets()), 0, 0, 0],
        },
        IpAddr::V6(ip) => SockAddrKey {
            family: AF_INET6,
            port: addr.port(),
            _pad: 0,
            addr: words(ip),
        },
    }
}

/// The address a kernel key names.
pub fn key_addr(key: &SockAddrKey) -> SocketAddr {
    if key.family == AF_INET {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(key.addr[0].to_ne_bytes())),
            key.port,
        )
    } else {
        let mut b = [0u8; 16];
        for (i, w) in key.addr.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), key.port)
    }
}

/// IPv6 address as four u32 words holding network-order bytes (the kernel's layout).
fn words(ip: Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

pub fn proxy_config(v4: SocketAddr, v6: Option<SocketAddr>) -> ProxyConfig {
    let v4_addr = match v4.ip() {
        IpAddr::V4(ip) => u32::from_ne_bytes(ip.octets()),
        IpAddr::V6(_) => 0,
    };
    let (v6_addr, v6_port) = match v6 {
        Some(SocketAddr::V6(a)) => (words(*a.ip()), a.port()),
        _ => ([0; 4], 0),
    };
    ProxyConfig {
        v4_addr,
        v4_port: v4.port(),
        v6_port,
        v6_addr,
    }
}

/// Makes sure a bpf filesystem is mounted at `/sys/fs/bpf` (mounts one if not), so that
/// links can be pinned.
pub fn ensure_bpffs() -> Result<(), EbpfError> {
    let bpffs = Path::new("/sys/fs/bpf");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|source| EbpfError::Io {
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    let mounted = mountinfo.lines().any(|l| {
        let (pre, post) = l.split_once(" - ").unwrap_or((l, ""));
        pre.split_whitespace().nth(4) == Some("/sys/fs/bpf")
            && post.split_whitespace().next() == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    tracing::info!("mounting a bpf filesystem at /sys/fs/bpf (none was mounted) to pin links");
    nix::mount::mount(
        Some("bpf"),
        bpffs,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| EbpfError::Io {
        path: bpffs.into(),
        source: e.into(),
    })
}

/// Pin directory for an attachment name (e.g. `run-1234`, `attach-agents.slice`).
pub fn pin_dir(name: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for a in ["127.0.0.1:40000", "[::1]:5", "[2001:db8::7]:65535"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(key_addr(&sock_key(addr)), addr);
        }
    }

    #[test]
    fn mapped_client_is_v4_key() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        let plain: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(sock_key(mapped), sock_key(plain));
    }

    #[test]
    fn v4_key_is_network_order_in_memory() {
        let k = sock_key("127.0.0.1:80".parse().unwrap());
        assert_eq!(k.addr[0].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(k.port, 80);
    }

    #[test]
    fn config_layout() {
        let c = proxy_config(
            "127.0.0.1:15001".parse().unwrap(),
            Some("[::1]:15002".parse().unwrap()),
        );
        assert_eq!(c.v4_addr.to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!((c.v4_port, c.v6_port), (15001, 15002));
        assert_eq!(c.v6_addr[3].to_ne_bytes(), [0, 0, 0, 1]);
    }
}
