//! Kernel programs: redirect every TCP connect of the agent's cgroup to the local proxy,
//! remember who connected where, and hand that record to the proxy by client address.
//!
//! Data path (see ARCHITECTURE.md):
//! 1. `connect4` / `connect6` (cgroup/connect*): record {original destination, caller} in
//!    socket storage, rewrite the destination to the proxy listener.
//! 2. `sockops` at `TCP_CONNECT_CB` (source port bound, SYN not yet sent): copy the record into
//!    the `CLIENTS` LRU hash keyed by the client address, where the proxy finds it after
//!    `accept()`.
//! 3. `getpeername4` / `getpeername6`: the application sees the address it asked for.
//!
//! Datagram sockets (`udp.rs`) and socket creation (`sockets.rs`) are guarded too: UDP is
//! denied unless the policy allows the destination, DNS to an allowed resolver is sent to the
//! daemon's DNS proxy, and raw / packet sockets are refused unless the cgroup may have them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::bpf_sock,
    btf_maps::{Array, LruHashMap, PerCpuArray, SkStorage},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns, bpf_sk_storage_get},
    },
    macros::{btf_map, cgroup_sock_addr, sock_ops},
    programs::{SockAddrContext, SockOpsContext},
};
use interceptor_common::{
    counter, ConnRecord, ProxyConfig, SockAddrKey, AF_INET, AF_INET6, CLIENT_MAP_ENTRIES,
    PROXY_MARK,
};

mod sockets;
mod udp;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_UDPLITE: u32 = 136;
const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
/// Return codes of cgroup sock_addr programs: 1 lets the syscall proceed, 0 fails it (EPERM).
pub(crate) const PROCEED: i32 = 1;
pub(crate) const REFUSE: i32 = 0;

#[btf_map]
static CONFIG: Array<ProxyConfig, 1> = Array::new();

#[btf_map]
static STORAGE: SkStorage<ConnRecord> = SkStorage::new();

#[btf_map]
static CLIENTS: LruHashMap<SockAddrKey, ConnRecord, { CLIENT_MAP_ENTRIES as usize }> =
    LruHashMap::new();

#[btf_map]
static COUNTERS: PerCpuArray<u64, { counter::COUNT as usize }> = PerCpuArray::new();

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub(crate) fn sock(ctx: &SockAddrContext) -> *mut bpf_sock {
    // SAFETY: the kernel passes a valid context; `sk` is always set for these hooks.
    unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }
}

/// What kind of socket a sock_addr hook runs for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Udp,
    /// Raw and ICMP sockets: their creation was already allowed by `sock_create`.
    RawOrIcmp,
    /// Anything else (e.g. SCTP seqpacket): refused.
    Other,
}

#[inline(always)]
pub(crate) fn kind(ctx: &SockAddrContext) -> Kind {
    // SAFETY: valid context pointer; type and protocol are readable in every sock_addr hook.
    let (type_, protocol) = unsafe { ((*ctx.sock_addr).type_, (*ctx.sock_addr).protocol) };
    match type_ {
        SOCK_STREAM => Kind::Tcp,
        SOCK_DGRAM if protocol == IPPROTO_UDP || protocol == IPPROTO_UDPLITE => Kind::Udp,
        SOCK_DGRAM | SOCK_RAW => Kind::RawOrIcmp,
        _ => Kind::Other,
    }
}

#[inline(always)]
pub(crate) fn marked(ctx: &SockAddrContext) -> bool {
    let sk = sock(ctx);
    // SAFETY: `sk` is checked for null; `mark` is readable.
    !sk.is_null() && unsafe { (*sk).mark } == PROXY_MARK
}

/// Checks shared by both connect hooks. `Err(code)` ends the hook with that code; `Ok(None)`
/// hands a UDP socket to the datagram path.
#[inline(always)]
fn admit(ctx: &SockAddrContext) -> Result<Option<ProxyConfig>, i32> {
    if marked(ctx) {
        count(counter::SKIPPED_MARKED);
        return Err(PROCEED);
    }
    match kind(ctx) {
        Kind::Tcp => {}
        Kind::Udp => return Ok(None),
        Kind::RawOrIcmp => return Err(PROCEED),
        Kind::Other => {
            count(counter::DENIED_OTHER_TYPE);
            return Err(REFUSE);
        }
    }
    match CONFIG.get(0) {
        Some(cfg) if cfg.v4_port != 0 => Ok(Some(*cfg)),
        _ => {
            count(counter::REFUSED_NOT_SERVING);
            Err(REFUSE)
        }
    }
}

/// Stores the record for this socket; `false` when the kernel has no storage for it.
#[inline(always)]
pub(crate) fn remember(ctx: &SockAddrContext, orig: SockAddrKey) -> bool {
    let rec = caller(orig);
    let mut init = rec;
    // SAFETY: the context's socket is valid for the duration of the hook.
    let slot = unsafe { STORAGE.get_or_insert_ptr_mut(ctx, Some(&mut init)) };
    if slot.is_null() {
        count(counter::REFUSED_NO_STORAGE);
        return false;
    }
    // A socket may connect again after a failed attempt: always keep the latest.
    unsafe { *slot = rec };
    true
}

/// Who is calling, and where they asked to go.
#[inline(always)]
pub(crate) fn caller(orig: SockAddrKey) -> ConnRecord {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    ConnRecord {
        orig,
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        // SAFETY: plain helper calls without pointer arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        time_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let cfg = match admit(&ctx) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return udp::connect4(&ctx),
        Err(code) => return code,
    };
    let sa = ctx.sock_addr;
    // SAFETY: valid context pointer; user_ip4/user_port are readable and writable here.
    let orig = SockAddrKey {
        family: AF_INET,
        port: u16::from_be(unsafe { (*sa).user_port } as u16),
        _pad: 0,
        addr: [unsafe { (*sa).user_ip4 }, 0, 0, 0],
    };
    if !remember(&ctx, orig) {
        return REFUSE;
    }
    unsafe {
        (*sa).user_ip4 = cfg.v4_addr;
        (*sa).user_port = u32::from(cfg.v4_port.to_be());
    }
    count(counter::REDIRECTED_V4);
    PROCEED
}

/// Writes the destination of a sock_addr context. Each word is stored with a volatile write
/// at a constant offset from the context pointer: the verifier rejects stores through a
/// context pointer that the compiler has offset (e.g. when it copies the array in one go).
#[inline(always)]
pub(crate) fn set_user_ip6(sa: *mut aya_ebpf::bindings::bpf_sock_addr, ip6: [u32; 4]) {
    // SAFETY: `sa` is the valid context pointer of a connect6/getpeername6 hook.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[0]), ip6[0]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[1]), ip6[1]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[2]), ip6[2]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*sa).user_ip6[3]), ip6[3]);
    }
}

#[inline(always)]
pub(crate) fn is_v4_mapped(a: &[u32; 4]) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0xffffu32.to_be()
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let cfg = match admit(&ctx) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return udp::connect6(&ctx),
        Err(code) => return code,
    };
    let sa = ctx.sock_addr;
    let ip6 = unsafe { (*sa).user_ip6 };
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    if is_v4_mapped(&ip6) {
        // An AF_INET6 socket talking IPv4: send it to the IPv4 listener, still mapped.
        let orig = SockAddrKey {
            family: AF_INET,
            port,
            _pad: 0,
            addr: [ip6[3], 0, 0, 0],
        };
        if !remember(&ctx, orig) {
            return REFUSE;
        }
        unsafe {
            set_user_ip6(sa, [0, 0, 0xffffu32.to_be(), cfg.v4_addr]);
            (*sa).user_port = u32::from(cfg.v4_port.to_be());
        }
        count(counter::REDIRECTED_MAPPED);
        return PROCEED;
    }
    if cfg.v6_port == 0 {
        count(counter::REFUSED_NOT_SERVING);
        return REFUSE;
    }
    let orig = SockAddrKey {
        family: AF_INET6,
        port,
        _pad: 0,
        addr: ip6,
    };
    if !remember(&ctx, orig) {
        return REFUSE;
    }
    unsafe {
        set_user_ip6(sa, cfg.v6_addr);
        (*sa).user_port = u32::from(cfg.v6_port.to_be());
    }
    count(counter::REDIRECTED_V6);
    PROCEED
}

#[sock_ops]
pub fn handoff(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    // SAFETY: valid context pointer; `sk` may be null and is checked.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return 1;
    }
    let map = core::ptr::from_ref(&STORAGE).cast_mut().cast();
    // SAFETY: `sk` is a full socket at TCP_CONNECT_CB; lookup only (no create flag).
    let rec = unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), 0) }
        .cast::<ConnRecord>();
    if rec.is_null() {
        return 1; // not a socket the connect hooks redirected
    }
    let ip6 = ctx.local_ip6();
    let key = if ctx.family() == u32::from(AF_INET) {
        SockAddrKey {
            family: AF_INET,
            port: ctx.local_port() as u16,
            _pad: 0,
            addr: [ctx.local_ip4(), 0, 0, 0],
        }
    } else if is_v4_mapped(&ip6) {
        SockAddrKey {
            family: AF_INET,
            port: ctx.local_port() as u16,
            _pad: 0,
            addr: [ip6[3], 0, 0, 0],
        }
    } else {
        SockAddrKey {
            family: AF_INET6,
            port: ctx.local_port() as u16,
            _pad: 0,
            addr: ip6,
        }
    };
    // SAFETY: `rec` points at a live storage value.
    let value = unsafe { *rec };
    if CLIENTS.insert(&key, &value, 0).is_ok() {
        count(counter::HANDED_TO_PROXY);
    }
    1
}

#[inline(always)]
fn recorded(ctx: &SockAddrContext) -> Option<ConnRecord> {
    // SAFETY: lookup without creation on the context's socket.
    let rec = unsafe { STORAGE.get_ptr_mut(ctx) };
    if rec.is_null() {
        None
    } else {
        Some(unsafe { *rec })
    }
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(rec) = recorded(&ctx) {
        if rec.orig.family == AF_INET {
            unsafe {
                (*ctx.sock_addr).user_ip4 = rec.orig.addr[0];
                (*ctx.sock_addr).user_port = u32::from(rec.orig.port.to_be());
            }
            count(counter::PEERNAME_RESTORED);
        }
    }
    PROCEED
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(rec) = recorded(&ctx) {
        let ip6 = if rec.orig.family == AF_INET {
            [0, 0, 0xffffu32.to_be(), rec.orig.addr[0]]
        } else {
            rec.orig.addr
        };
        set_user_ip6(ctx.sock_addr, ip6);
        unsafe { (*ctx.sock_addr).user_port = u32::from(rec.orig.port.to_be()) };
        count(counter::PEERNAME_RESTORED);
    }
    PROCEED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
