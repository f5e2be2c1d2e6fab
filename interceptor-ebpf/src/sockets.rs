//! Socket creation: raw (and ICMP "ping") sockets and packet sockets bypass every address
//! hook, so a cgroup gets them only where the policy allows it.
//!
//! - `cgroup/sock_create` runs in `inet_create`/`inet6_create` (IPv4/IPv6 sockets only).
//! - `lsm_cgroup/socket_create` runs for every family, so it also sees `AF_PACKET`; it needs
//!   the BPF LSM to be active (`lsm=...,bpf`). Where it is not, packet sockets still need
//!   `CAP_NET_RAW`, which an agent run as a non-root user does not have.
//!
//! The decision is per cgroup: `SOCKET_POLICY[cgroup id]`, else `SOCKET_POLICY[0]` (the
//! instance default the daemon writes), else deny.

use aya_ebpf::{
    btf_maps::HashMap,
    helpers::generated::bpf_get_current_cgroup_id,
    macros::{btf_map, cgroup_sock, lsm_cgroup},
    programs::{LsmContext, SockContext},
};
use interceptor_common::{counter, sockets, SOCKET_POLICY_ENTRIES};

use crate::{count, PROCEED, REFUSE, SOCK_DGRAM, SOCK_RAW};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_PACKET: i32 = 17;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;

#[btf_map]
static SOCKET_POLICY: HashMap<u64, u32, { SOCKET_POLICY_ENTRIES as usize }> = HashMap::new();

/// The allow bits for the calling process's cgroup.
#[inline(always)]
fn allowed() -> u32 {
    // SAFETY: helper without pointer arguments.
    let id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookups; values are plain integers.
    unsafe {
        match SOCKET_POLICY.get(id) {
            Some(bits) => *bits,
            None => SOCKET_POLICY
                .get(sockets::DEFAULT_KEY)
                .copied()
                .unwrap_or(0),
        }
    }
}

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel passes a valid socket; these fields are readable at sock_create.
    let (family, type_, protocol) =
        unsafe { ((*ctx.sock).family, (*ctx.sock).type_, (*ctx.sock).protocol) };
    if family != AF_INET && family != AF_INET6 {
        return PROCEED;
    }
    let raw = type_ == SOCK_RAW
        || (type_ == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6));
    if raw && allowed() & sockets::ALLOW_RAW == 0 {
        count(counter::DENIED_RAW);
        return REFUSE;
    }
    PROCEED
}

/// `int socket_create(int family, int type, int protocol, int kern)`.
#[lsm_cgroup(hook = "socket_create")]
pub fn lsm_socket_create(ctx: LsmContext) -> i32 {
    let family: i32 = ctx.arg(0);
    let kern: i32 = ctx.arg(3);
    if family == AF_PACKET && kern == 0 && allowed() & sockets::ALLOW_PACKET == 0 {
        count(counter::DENIED_PACKET);
        return 0;
    }
    1
}
