//! Datagram sockets (UDP, UDP-Lite): default deny.
//!
//! `sendmsg4/6` (unconnected `sendto`/`sendmsg`) and the connect hooks (connected sockets,
//! whose later `send` runs no hook) decide each destination the same way:
//! - an allowed DNS resolver (`DNS_REDIRECT`, port 53): rewrite the destination to the
//!   daemon's DNS proxy listener for that resolver and note the caller in `UDP_CALLERS`
//!   under the socket cookie (the proxy finds the cookie with sock_diag);
//! - a destination in `UDP_ALLOW` (exact address and port, or port 0 = every port): proceed;
//! - anything else: EPERM.
//!
//! `recvmsg4/6` turn a reply's source (the proxy listener, `DNS_REVERSE`) back into the
//! resolver the application asked, so resolvers that check the reply's source accept it.

use aya_ebpf::{
    btf_maps::{HashMap, LruHashMap},
    helpers::generated::bpf_get_socket_cookie,
    macros::{btf_map, cgroup_sock_addr},
    programs::SockAddrContext,
    EbpfContext,
};
use interceptor_common::{
    counter, ConnRecord, SockAddrKey, AF_INET, AF_INET6, DNS_RESOLVER_ENTRIES, UDP_ALLOW_ENTRIES,
    UDP_CALLER_ENTRIES,
};

use crate::{
    caller, count, is_v4_mapped, kind, marked, remember, set_user_ip6, Kind, PROCEED, REFUSE,
};

#[btf_map]
static UDP_ALLOW: HashMap<SockAddrKey, u32, { UDP_ALLOW_ENTRIES as usize }> = HashMap::new();

/// Allowed resolver (port 53) → the DNS proxy listener that serves it.
#[btf_map]
static DNS_REDIRECT: HashMap<SockAddrKey, SockAddrKey, { DNS_RESOLVER_ENTRIES as usize }> =
    HashMap::new();

/// DNS proxy listener → the resolver it stands for.
#[btf_map]
static DNS_REVERSE: HashMap<SockAddrKey, SockAddrKey, { DNS_RESOLVER_ENTRIES as usize }> =
    HashMap::new();

/// Socket cookie → who sent DNS through the proxy from that socket.
#[btf_map]
static UDP_CALLERS: LruHashMap<u64, ConnRecord, { UDP_CALLER_ENTRIES as usize }> =
    LruHashMap::new();

enum Action {
    Redirect(SockAddrKey),
    Allow,
    Deny,
}

#[inline(always)]
fn v4_key(addr: u32, port: u16) -> SockAddrKey {
    SockAddrKey {
        family: AF_INET,
        port,
        _pad: 0,
        addr: [addr, 0, 0, 0],
    }
}

#[inline(always)]
fn decide(dst: &SockAddrKey) -> Action {
    // SAFETY: read-only lookups of plain values.
    if let Some(l) = unsafe { DNS_REDIRECT.get(dst) } {
        return Action::Redirect(*l);
    }
    // Straight to a DNS proxy listener: what a connected AF_INET6 socket to a v4-mapped
    // resolver does on every send (udpv6_sendmsg hands it to udp_sendmsg with an address).
    // Harmless: the proxy answers only callers the hooks recorded, under the DNS policy.
    if unsafe { DNS_REVERSE.get(dst) }.is_some() {
        return Action::Allow;
    }
    let any_port = SockAddrKey { port: 0, ..*dst };
    if unsafe { UDP_ALLOW.get(dst) }.is_some() || unsafe { UDP_ALLOW.get(&any_port) }.is_some() {
        return Action::Allow;
    }
    Action::Deny
}

/// The decision for one datagram destination; `connect` also records it for getpeername.
#[inline(always)]
fn apply(
    ctx: &SockAddrContext,
    dst: SockAddrKey,
    connect: bool,
) -> Result<Option<SockAddrKey>, i32> {
    match decide(&dst) {
        Action::Redirect(listener) => {
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            let _ = UDP_CALLERS.insert(&cookie, &caller(dst), 0);
            if connect && !remember(ctx, dst) {
                return Err(REFUSE);
            }
            count(counter::DNS_REDIRECTED);
            Ok(Some(listener))
        }
        Action::Allow => {
            count(counter::ALLOWED_UDP);
            Ok(None)
        }
        Action::Deny => {
            count(counter::DENIED_UDP);
            Err(REFUSE)
        }
    }
}

#[inline(always)]
fn guard4(ctx: &SockAddrContext, connect: bool) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: valid context; user_ip4/user_port are readable and writable in these hooks.
    let dst = v4_key(
        unsafe { (*sa).user_ip4 },
        u16::from_be(unsafe { (*sa).user_port } as u16),
    );
    match apply(ctx, dst, connect) {
        Ok(Some(l)) => {
            unsafe {
                (*sa).user_ip4 = l.addr[0];
                (*sa).user_port = u32::from(l.port.to_be());
            }
            PROCEED
        }
        Ok(None) => PROCEED,
        Err(code) => code,
    }
}

#[inline(always)]
fn guard6(ctx: &SockAddrContext, connect: bool) -> i32 {
    let sa = ctx.sock_addr;
    let ip6 = unsafe { (*sa).user_ip6 };
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    let dst = if is_v4_mapped(&ip6) {
        v4_key(ip6[3], port)
    } else {
        SockAddrKey {
            family: AF_INET6,
            port,
            _pad: 0,
            addr: ip6,
        }
    };
    match apply(ctx, dst, connect) {
        Ok(Some(l)) => {
            let ip = if l.family == AF_INET {
                [0, 0, 0xffffu32.to_be(), l.addr[0]]
            } else {
                l.addr
            };
            set_user_ip6(sa, ip);
            unsafe { (*sa).user_port = u32::from(l.port.to_be()) };
            PROCEED
        }
        Ok(None) => PROCEED,
        Err(code) => code,
    }
}

/// `connect()` of a UDP socket (called from the connect4 hook).
#[inline(always)]
pub(crate) fn connect4(ctx: &SockAddrContext) -> i32 {
    guard4(ctx, true)
}

#[inline(always)]
pub(crate) fn connect6(ctx: &SockAddrContext) -> i32 {
    guard6(ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    if marked(&ctx) || kind(&ctx) != Kind::Udp {
        return PROCEED;
    }
    guard4(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    if marked(&ctx) || kind(&ctx) != Kind::Udp {
        return PROCEED;
    }
    guard6(&ctx, false)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let src = v4_key(
        unsafe { (*sa).user_ip4 },
        u16::from_be(unsafe { (*sa).user_port } as u16),
    );
    if let Some(r) = unsafe { DNS_REVERSE.get(&src) } {
        if r.family == AF_INET {
            unsafe {
                (*sa).user_ip4 = r.addr[0];
                (*sa).user_port = u32::from(r.port.to_be());
            }
            count(counter::DNS_REPLY_RESTORED);
        }
    }
    PROCEED
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let ip6 = unsafe { (*sa).user_ip6 };
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    let mapped = is_v4_mapped(&ip6);
    let src = if mapped {
        v4_key(ip6[3], port)
    } else {
        SockAddrKey {
            family: AF_INET6,
            port,
            _pad: 0,
            addr: ip6,
        }
    };
    if let Some(r) = unsafe { DNS_REVERSE.get(&src) } {
        let r = *r;
        let ip = if r.family == AF_INET {
            [0, 0, 0xffffu32.to_be(), r.addr[0]]
        } else {
            r.addr
        };
        set_user_ip6(sa, ip);
        unsafe { (*sa).user_port = u32::from(r.port.to_be()) };
        count(counter::DNS_REPLY_RESTORED);
    }
    PROCEED
}
