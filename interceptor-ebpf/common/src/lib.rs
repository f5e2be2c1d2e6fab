//! `#[repr(C)]` types shared by the kernel programs (interceptor-ebpf) and the daemon.
//!
//! Every struct here is read by both sides byte for byte: fields are ordered so that no
//! implicit padding exists, and explicit `_pad` fields say where alignment needs filling.
#![no_std]

/// `SO_MARK` value the daemon puts on its own upstream sockets; the connect hooks never
/// redirect a socket that carries it (defence in depth: the daemon also runs outside the
/// agent's cgroup).
pub const PROXY_MARK: u32 = 0x1e7c_e900;

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Capacity of the client-address map (connections accepted by the kernel hooks and not yet
/// claimed by the proxy). LRU: a connection the proxy never accepts is evicted eventually.
pub const CLIENT_MAP_ENTRIES: u32 = 65_536;

/// Names of the maps and programs in the object file, in one place for both sides.
pub mod names {
    pub const MAP_CONFIG: &str = "CONFIG";
    pub const MAP_CLIENTS: &str = "CLIENTS";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const PROG_CONNECT4: &str = "connect4";
    pub const PROG_CONNECT6: &str = "connect6";
    pub const PROG_GETPEERNAME4: &str = "getpeername4";
    pub const PROG_GETPEERNAME6: &str = "getpeername6";
    pub const PROG_SOCK_OPS: &str = "handoff";
    pub const MAP_SOCKET_POLICY: &str = "SOCKET_POLICY";
    pub const MAP_UDP_ALLOW: &str = "UDP_ALLOW";
    pub const MAP_DNS_REDIRECT: &str = "DNS_REDIRECT";
    pub const MAP_DNS_REVERSE: &str = "DNS_REVERSE";
    pub const MAP_UDP_CALLERS: &str = "UDP_CALLERS";
    pub const PROG_SOCK_CREATE: &str = "sock_create";
    pub const PROG_LSM_SOCKET: &str = "lsm_socket_create";
    pub const PROG_SENDMSG4: &str = "sendmsg4";
    pub const PROG_SENDMSG6: &str = "sendmsg6";
    pub const PROG_RECVMSG4: &str = "recvmsg4";
    pub const PROG_RECVMSG6: &str = "recvmsg6";
    /// The LSM hook `PROG_LSM_SOCKET` attaches to (per cgroup, `BPF_LSM_CGROUP`).
    pub const LSM_SOCKET_HOOK: &str = "socket_create";
}

/// Bits of a `SOCKET_POLICY` value: which socket kinds a cgroup may create. The map is keyed
/// by cgroup id; key 0 holds the instance default for cgroups without their own entry.
pub mod sockets {
    /// `SOCK_RAW` in `AF_INET`/`AF_INET6` and ICMP datagram ("ping") sockets.
    pub const ALLOW_RAW: u32 = 1;
    /// `AF_PACKET` sockets of any type.
    pub const ALLOW_PACKET: u32 = 2;
    /// Key of the default entry.
    pub const DEFAULT_KEY: u64 = 0;
}

/// Capacity of the UDP allow map (exact address + port entries; port 0 = every port).
pub const UDP_ALLOW_ENTRIES: u32 = 4096;
/// Capacity of the DNS redirect maps (one entry per allowed resolver address).
pub const DNS_RESOLVER_ENTRIES: u32 = 64;
/// Capacity of the socket-cookie → caller map the DNS proxy reads.
pub const UDP_CALLER_ENTRIES: u32 = 16_384;
/// Capacity of the per-cgroup socket policy map.
pub const SOCKET_POLICY_ENTRIES: u32 = 1024;

/// An IPv4 or IPv6 socket address as the kernel hooks see it.
///
/// `addr` holds the address in network byte order exactly as `bpf_sock_addr.user_ip6` /
/// `bpf_sock_ops.local_ip6` present it (four `u32` words); an IPv4 address lives in
/// `addr[0]` with the other words zero. `port` is in host byte order.
/// IPv4-mapped IPv6 addresses are always stored as `AF_INET`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockAddrKey {
    pub family: u16,
    pub port: u16,
    pub _pad: u32,
    pub addr: [u32; 4],
}

/// What the connect hook recorded about one redirected connection: the destination the
/// application asked for and who asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRecord {
    /// The original destination.
    pub orig: SockAddrKey,
    /// Thread-group id (the process id as user space knows it).
    pub tgid: u32,
    /// Thread id of the calling thread.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()` at connect time (CLOCK_BOOTTIME), to check a pid against
    /// reuse with the process start time from /proc.
    pub time_boot_ns: u64,
    /// `comm` of the calling thread, NUL padded.
    pub comm: [u8; 16],
}

/// Where the proxy listens; written by the daemon into the one-slot `CONFIG` array.
/// While `v4_port` is 0 the connect hooks refuse every connect (fail closed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// IPv4 listener address, network byte order.
    pub v4_addr: u32,
    /// IPv4 listener port, host byte order; 0 = not serving.
    pub v4_port: u16,
    /// IPv6 listener port, host byte order; 0 = no IPv6 listener (IPv6 connects refused).
    pub v6_port: u16,
    /// IPv6 listener address, network byte order words.
    pub v6_addr: [u32; 4],
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    pub const REDIRECTED_V4: u32 = 0;
    pub const REDIRECTED_V6: u32 = 1;
    pub const REDIRECTED_MAPPED: u32 = 2;
    pub const REFUSED_NOT_SERVING: u32 = 3;
    pub const REFUSED_NO_STORAGE: u32 = 4;
    pub const SKIPPED_MARKED: u32 = 5;
    pub const SKIPPED_NOT_TCP: u32 = 6;
    pub const HANDED_TO_PROXY: u32 = 7;
    pub const PEERNAME_RESTORED: u32 = 8;
    pub const DENIED_RAW: u32 = 9;
    pub const DENIED_PACKET: u32 = 10;
    pub const DENIED_UDP: u32 = 11;
    pub const ALLOWED_UDP: u32 = 12;
    pub const DNS_REDIRECTED: u32 = 13;
    pub const DNS_REPLY_RESTORED: u32 = 14;
    pub const DENIED_OTHER_TYPE: u32 = 15;
    pub const COUNT: u32 = 16;
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected_v4",
        "redirected_v6",
        "redirected_v4_mapped",
        "refused_not_serving",
        "refused_no_storage",
        "skipped_marked",
        "skipped_not_tcp",
        "handed_to_proxy",
        "peername_restored",
        "denied_raw_socket",
        "denied_packet_socket",
        "denied_udp",
        "allowed_udp",
        "dns_redirected",
        "dns_reply_source_restored",
        "denied_other_socket_type",
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are repr(C), Copy, contain only integers and have no implicit padding.
    unsafe impl aya::Pod for super::SockAddrKey {}
    unsafe impl aya::Pod for super::ConnRecord {}
    unsafe impl aya::Pod for super::ProxyConfig {}
}

const _: () = {
    assert!(core::mem::size_of::<SockAddrKey>() == 24);
    assert!(core::mem::size_of::<ConnRecord>() == 24 + 16 + 16 + 16);
    assert!(core::mem::size_of::<ProxyConfig>() == 24);
};
