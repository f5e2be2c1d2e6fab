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
}

/// An IPv4 or IPv6 socket address as the kernel hooks see it.
///
/// `addr` holds the address in network byte order exactly as `bpf_sock_addr.user_ip6` /
/// `bpf_sock_ops.local_ip6` present it (four `u32` words); an IPv4 address lives in
/// `addr[0]` with the other words zero. `port` is in host byte order.
/// IPv4-mapped IPv6 addresses are always stored as `AF_INET`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
    pub const COUNT: u32 = 9;
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
