//! Noticing that an agent waiting on a held command gave up: its connection was closed or
//! reset. Checked the way PostgreSQL's `client_connection_check_interval` does it: poll(2)
//! for `POLLRDHUP` on the agent's socket, which unread pipelined data does not hide.

use std::os::fd::RawFd;
use std::time::Duration;

/// How often a waiting agent's socket is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Whether the peer of socket `fd` has closed its side (FIN or reset).
pub fn peer_closed(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; timeout 0, so poll never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    let gone = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    n > 0 && p.revents & gone != 0
}

/// Resolves (with the reason for the record) once the agent on `fd` hung up; never
/// without a socket (`None`). `fd` must stay the agent's socket while this is polled:
/// callers pass the socket of the connection whose task awaits it.
pub async fn hung_up(fd: Option<RawFd>) -> String {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if peer_closed(fd) {
            return "the agent closed its connection".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_closed_peer_is_noticed_and_pending_data_does_not_hide_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(!peer_closed(s.as_raw_fd()), "open and idle");
        c.write_all(b"pipelined").unwrap();
        assert!(!peer_closed(s.as_raw_fd()), "open with unread data");
        drop(c);
        // The FIN is queued behind the unread data; poll reports it at once on loopback,
        // but allow the kernel a moment without asserting on time.
        let mut seen = false;
        for _ in 0..100 {
            if peer_closed(s.as_raw_fd()) {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(seen, "the close is noticed");
    }

    #[tokio::test]
    async fn hung_up_resolves_for_a_closed_peer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(c);
        let why = hung_up(Some(s.as_raw_fd())).await;
        assert!(why.contains("closed"), "{why}");
    }
}
