//! sock_diag netlink (`NETLINK_SOCK_DIAG`, `inet_diag_req_v2`): find a UDP socket by its
//! addresses (the DNS proxy learns the client socket's cookie), list TCP sockets (status,
//! `attach --strict`) and destroy one (`SOCK_DESTROY`, needs `CONFIG_INET_DIAG_DESTROY`).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// TCP state numbers (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("sock_diag netlink: {0} (is CONFIG_INET_DIAG / INET_UDP_DIAG enabled?)")]
    Io(#[from] io::Error),
    #[error("sock_diag: the kernel refused the request: {0}")]
    Kernel(io::Error),
}

/// One socket as sock_diag reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSock {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub cookie: u64,
    pub uid: u32,
    pub inode: u32,
}

fn socket() -> Result<OwnedFd, SockDiagError> {
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ip_words(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// nlmsghdr + inet_diag_req_v2 (72 bytes).
#[allow(clippy::too_many_arguments)]
fn request(
    kind: u16,
    flags: u16,
    family: u8,
    protocol: u8,
    states: u32,
    src: SocketAddr,
    dst: SocketAddr,
    cookie: u64,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.extend_from_slice(&src.port().to_be_bytes());
    m.extend_from_slice(&dst.port().to_be_bytes());
    m.extend_from_slice(&ip_words(src.ip()));
    m.extend_from_slice(&ip_words(dst.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // interface
    m.extend_from_slice(&(cookie as u32).to_ne_bytes());
    m.extend_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    debug_assert_eq!(m.len(), 72);
    m
}

fn parse_msg(b: &[u8]) -> Option<DiagSock> {
    // inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue,
    // uid, inode.
    if b.len() < 72 {
        return None;
    }
    let family = b[0];
    let sport = u16::from_be_bytes([b[4], b[5]]);
    let dport = u16::from_be_bytes([b[6], b[7]]);
    let addr = |o: usize| -> IpAddr {
        if i32::from(family) == libc::AF_INET {
            IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    };
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    Some(DiagSock {
        local: SocketAddr::new(addr(8), sport),
        remote: SocketAddr::new(addr(24), dport),
        state: b[1],
        cookie: u64::from(u32_at(44)) | (u64::from(u32_at(48)) << 32),
        uid: u32_at(64),
        inode: u32_at(68),
    })
}

/// Sends one request and collects the answers (until DONE, or one answer / ack when not a
/// dump).
fn exchange(req: &[u8], dump: bool) -> Result<Vec<DiagSock>, SockDiagError> {
    let fd = socket()?;
    // SAFETY: req is a valid buffer; the kernel is addressed by a zeroed sockaddr_nl.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let mut off = 0usize;
        let n = n as usize;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Ok(out);
            }
            let body = &buf[off + 16..off + len];
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(body[..4].try_into().unwrap());
                    if code == 0 {
                        return Ok(out);
                    }
                    return Err(SockDiagError::Kernel(io::Error::from_raw_os_error(-code)));
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(s) = parse_msg(body) {
                        out.push(s);
                    }
                    if !dump {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

fn family(a: &SocketAddr) -> u8 {
    if a.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

/// The UDP socket that sends from `client` (its local address) to `server`: the socket that
/// would receive a datagram from `server` to `client`. `None` if there is none.
pub fn udp_socket(
    client: SocketAddr,
    server: SocketAddr,
) -> Result<Option<DiagSock>, SockDiagError> {
    // udp_dump_one looks the socket up with (src, dst) swapped "for historical reasons":
    // idiag_src is the packet's source (the server), idiag_dst our client socket.
    let req = request(
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST,
        family(&client),
        IPPROTO_UDP,
        u32::MAX,
        server,
        client,
        u64::MAX,
    );
    match exchange(&req, false) {
        Ok(v) => Ok(v.into_iter().next()),
        Err(SockDiagError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every TCP socket of one family in the given states (bit mask of `1 << state`).
pub fn tcp_sockets(v6: bool, states: u32) -> Result<Vec<DiagSock>, SockDiagError> {
    let any: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let req = request(
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        family(&any),
        IPPROTO_TCP,
        states,
        any,
        any,
        u64::MAX,
    );
    exchange(&req, true)
}

/// Closes a TCP socket from outside (`SOCK_DESTROY`): its owner gets ECONNABORTED and the
/// peer a reset.
pub fn destroy_tcp(s: &DiagSock) -> Result<(), SockDiagError> {
    let req = request(
        SOCK_DESTROY,
        NLM_F_REQUEST | NLM_F_ACK,
        family(&s.local),
        IPPROTO_TCP,
        u32::MAX,
        s.local,
        s.remote,
        s.cookie,
    );
    exchange(&req, false).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST,
            2,
            17,
            u32::MAX,
            "127.0.0.1:53".parse().unwrap(),
            "127.0.0.2:4000".parse().unwrap(),
            u64::MAX,
        );
        assert_eq!(r.len(), 72);
        assert_eq!(&r[16..18], &[2, 17]);
        assert_eq!(&r[24..26], &53u16.to_be_bytes());
        assert_eq!(&r[26..28], &4000u16.to_be_bytes());
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
        assert_eq!(&r[44..48], &[127, 0, 0, 2]);
    }

    /// Needs no privileges: finds a UDP socket of this process by its addresses.
    #[test]
    fn finds_own_udp_socket() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        let found = udp_socket(client.local_addr().unwrap(), server.local_addr().unwrap())
            .unwrap()
            .expect("socket found");
        assert_eq!(found.local, client.local_addr().unwrap());
        assert_ne!(found.cookie, 0);
        // An unconnected socket is found too (wildcard remote).
        let loose = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let f2 = udp_socket(loose.local_addr().unwrap(), server.local_addr().unwrap())
            .unwrap()
            .expect("unconnected socket found");
        assert_eq!(f2.local, loose.local_addr().unwrap());
    }
}
