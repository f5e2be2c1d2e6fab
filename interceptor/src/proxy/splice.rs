//! Relay between two TCP sockets, driven by tokio readiness. Each direction starts by
//! copying through a stack buffer (recv + send: two system calls per message, and a short
//! read tells that the socket is drained, so no failing call follows); once a read fills
//! the buffer the direction is a bulk transfer and switches for good to zero-copy splice(2)
//! through a pipe. Half-closes are propagated; an error on either side shuts both down.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::{io::Interest, net::TcpStream};

/// Bytes moved per splice call (the default pipe capacity).
const CHUNK: usize = 64 * 1024;

/// The copy buffer (on the stack only while a message is moved: an idle connection holds
/// no buffer). A read that fills it switches the direction to splice.
const COPY_BUF: usize = 16 * 1024;

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
    loop {
        src.readable().await?;
        match copy_once(src, dst)? {
            Moved::Wait => continue,
            Moved::Eof => return Ok(()),
            Moved::Bytes { n, rest, full } => {
                if let Some(rest) = rest {
                    write_all(dst, &rest).await?;
                }
                count.fetch_add(n as u64, Relaxed);
                if full {
                    return splice_pump(src, dst, count).await;
                }
            }
        }
    }
}

/// What one [`copy_once`] did.
enum Moved {
    /// Not readable after all (readiness cleared).
    Wait,
    Eof,
    /// `n` bytes read; `rest` is what `dst` did not take at once; `full`: the read filled
    /// the buffer.
    Bytes {
        n: usize,
        rest: Option<Vec<u8>>,
        full: bool,
    },
}

/// One read of up to [`COPY_BUF`] bytes from `src`, written to `dst` as far as it takes
/// them without waiting. A short read means the receive queue was drained (TCP recv copies
/// until the queue is empty or the buffer full), so readiness is cleared right away, as
/// tokio's own `poll_read` does, instead of learning it from an extra failing call.
fn copy_once(src: &TcpStream, dst: &TcpStream) -> io::Result<Moved> {
    let mut buf = [0u8; COPY_BUF];
    let mut short = None;
    let read = src.try_io(Interest::READABLE, || {
        // SAFETY: `buf` is valid for `COPY_BUF` bytes; the fd is owned by `src`.
        let n = unsafe { libc::recv(src.as_raw_fd(), buf.as_mut_ptr().cast(), COPY_BUF, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > 0 && n < COPY_BUF {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    let n = match read {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => match short {
            Some(n) => n,
            None => return Ok(Moved::Wait),
        },
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Moved::Eof);
    }
    let written = match dst.try_write(&buf[..n]) {
        Ok(w) => w,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok(Moved::Bytes {
        n,
        rest: (written < n).then(|| buf[written..n].to_vec()),
        full: n == COPY_BUF,
    })
}

async fn write_all(dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        dst.writable().await?;
        match dst.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bulk mode: socket → pipe → socket with splice, no copy through user space.
async fn splice_pump(src: &TcpStream, dst: &TcpStream, count: &AtomicU64) -> io::Result<()> {
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

    /// Many small request/response exchanges stay in copy mode; each side waits for the
    /// other's answer, so a readiness wrongly cleared after a short read would hang here.
    #[tokio::test]
    async fn small_exchanges_in_copy_mode() {
        let (mut client, proxy_in) = pair().await;
        let (proxy_out, mut server) = pair().await;
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let server_task = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                let mut reply = buf[..n].to_vec();
                reply.reverse();
                server.write_all(&reply).await.unwrap();
            }
        });
        let client_task = tokio::spawn(async move {
            for i in 0..2_000u32 {
                let msg = format!("ping {i}");
                client.write_all(msg.as_bytes()).await.unwrap();
                let mut back = vec![0u8; msg.len()];
                client.read_exact(&mut back).await.unwrap();
                back.reverse();
                assert_eq!(back, msg.as_bytes());
            }
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        });
        let relayed = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            relay(&proxy_in, &proxy_out, &up, &down),
        )
        .await
        .expect("the relay stalled");
        assert!(matches!(relayed, (End::Eof, End::Eof)), "{relayed:?}");
        client_task.await.unwrap();
        server_task.await.unwrap();
        assert_eq!(up.load(Relaxed), down.load(Relaxed));
        assert!(up.load(Relaxed) > 2_000 * 6);
    }
}
