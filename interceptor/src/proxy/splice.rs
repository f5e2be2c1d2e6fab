//! Zero-copy relay between two TCP sockets with splice(2) through a pipe, driven by tokio
//! readiness. Half-closes are propagated; an error on either side shuts both down.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::{io::Interest, net::TcpStream};

/// Bytes moved per splice call (the default pipe capacity).
const CHUNK: usize = 64 * 1024;

/// How one direction ended.
#[derive(Debug)]
pub enum End {
    /// The source closed its write side; the destination's write side was shut down.
    Eof,
    Error(io::Error),
}

/// Relays `a` ⇄ `b` until both directions end. Byte counts go to `a_to_b` / `b_to_a` as
/// they move (so live status sees them).
pub async fn relay(
    a: &TcpStream,
    b: &TcpStream,
    a_to_b: &AtomicU64,
    b_to_a: &AtomicU64,
) -> (End, End) {
    tokio::join!(pump_or_abort(a, b, a_to_b), pump_or_abort(b, a, b_to_a))
}

async fn pump_or_abort(src: &TcpStream, dst: &TcpStream, count: &AtomicU64) -> End {
    match pump(src, dst, count).await {
        Ok(()) => {
            shutdown(dst, libc::SHUT_WR);
            End::Eof
        }
        Err(e) => {
            // Wake the other direction too: nothing more can be relayed reliably.
            shutdown(src, libc::SHUT_RDWR);
            shutdown(dst, libc::SHUT_RDWR);
            End::Error(e)
        }
    }
}

/// Shuts both sockets down so a running [`relay`] ends promptly.
pub fn abort(a: &TcpStream, b: &TcpStream) {
    shutdown(a, libc::SHUT_RDWR);
    shutdown(b, libc::SHUT_RDWR);
}

fn shutdown(s: &TcpStream, how: libc::c_int) {
    // SAFETY: valid fd owned by `s`; shutdown has no memory effects.
    unsafe { libc::shutdown(s.as_raw_fd(), how) };
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)
}

async fn pump(src: &TcpStream, dst: &TcpStream, count: &AtomicU64) -> io::Result<()> {
    let (rd, wr) = pipe()?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // Socket → pipe (the pipe is empty here, so EAGAIN can only mean "no data yet").
        let mut in_pipe = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), None, wr.as_fd(), None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if in_pipe == 0 {
            return Ok(());
        }
        // Pipe → socket until the pipe is empty again.
        while in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(rd.as_fd(), None, dst.as_fd(), None, in_pipe, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    in_pipe -= n;
                    count.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        // client ⇄ [proxy_in | proxy_out] ⇄ server
        let (mut client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let p2 = payload.clone();
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, p2);
            server.write_all(b"bye").await.unwrap();
        });
        let client_task = tokio::spawn(async move {
            client.write_all(&payload).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let (e1, e2) = relay(&proxy_in, &proxy_out, &up, &down).await;
        assert!(
            matches!(e1, End::Eof) && matches!(e2, End::Eof),
            "{e1:?} {e2:?}"
        );
        server_task.await.unwrap();
        assert_eq!(client_task.await.unwrap(), b"bye");
        assert_eq!(up.load(Relaxed), 1_000_000);
        assert_eq!(down.load(Relaxed), 3);
    }
}
