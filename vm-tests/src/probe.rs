//! The "agent": a real process making one real connect, and the one-line result it prints.
//!
//! ```text
//! pid=812 exe=/init peer=127.0.0.2:40001 ok=1 reply=echo:hello
//! pid=813 exe=/init ok=0 errno=104 error=Connection reset by peer (os error 104)
//! ```
//! `reply=` and `error=` are always last and take the rest of the line.

use std::{
    fs,
    io::{self, Read, Write},
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    path::Path,
    thread,
    time::{Duration, Instant},
};

/// Socket timeouts of the probe (connect, send, receive).
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// What one probe saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeResult {
    pub pid: i32,
    pub exe: String,
    /// Set when the probe ran in a forked child: the parent's pid.
    pub parent_pid: Option<i32>,
    /// `getpeername()` right after the connect.
    pub peer: Option<String>,
    pub ok: bool,
    pub reply: Option<String>,
    pub errno: Option<i32>,
    pub error: Option<String>,
}

impl ProbeResult {
    pub fn line(&self) -> String {
        let mut s = format!("pid={} exe={}", self.pid, self.exe);
        if let Some(p) = self.parent_pid {
            s.push_str(&format!(" parent_pid={p}"));
        }
        if let Some(p) = &self.peer {
            s.push_str(&format!(" peer={p}"));
        }
        s.push_str(if self.ok { " ok=1" } else { " ok=0" });
        if let Some(e) = self.errno {
            s.push_str(&format!(" errno={e}"));
        }
        if let Some(r) = &self.reply {
            s.push_str(&format!(" reply={r}"));
        } else if let Some(e) = &self.error {
            s.push_str(&format!(" error={e}"));
        }
        s
    }

    /// Parses the first line of `text` that [`ProbeResult::line`] could have written.
    pub fn parse(text: &str) -> Option<ProbeResult> {
        let line = text.lines().find(|l| l.starts_with("pid="))?;
        let mut r = ProbeResult::default();
        let mut rest = line;
        let mut seen_ok = false;
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key.trim();
            if key == "reply" || key == "error" {
                let v = after.to_string();
                if key == "reply" {
                    r.reply = Some(v);
                } else {
                    r.error = Some(v);
                }
                break;
            }
            let (value, next) = after.split_once(' ').unwrap_or((after, ""));
            match key {
                "pid" => r.pid = value.parse().ok()?,
                "exe" => r.exe = value.to_string(),
                "parent_pid" => r.parent_pid = value.parse().ok(),
                "peer" => r.peer = Some(value.to_string()),
                "ok" => {
                    r.ok = value == "1";
                    seen_ok = true
                }
                "errno" => r.errno = value.parse().ok(),
                _ => {}
            }
            rest = next;
        }
        seen_ok.then_some(r)
    }
}

fn base() -> ProbeResult {
    ProbeResult {
        pid: std::process::id() as i32,
        exe: fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into()),
        ..ProbeResult::default()
    }
}

/// FAMILY: `4` (AF_INET), `6` (AF_INET6), `mapped` (AF_INET6 socket to `::ffff:HOST`),
/// `tfo` (AF_INET, TCP Fast Open: `sendto(MSG_FASTOPEN)` instead of `connect`).
pub fn target(family: &str, host: &str, port: u16) -> Result<SocketAddr, String> {
    let bad = |e: std::net::AddrParseError| format!("bad host {host}: {e}");
    Ok(match family {
        "4" | "tfo" => SocketAddr::new(IpAddr::V4(host.parse::<Ipv4Addr>().map_err(bad)?), port),
        "6" => SocketAddr::new(IpAddr::V6(host.parse::<Ipv6Addr>().map_err(bad)?), port),
        "mapped" => SocketAddr::new(
            IpAddr::V6(host.parse::<Ipv4Addr>().map_err(bad)?.to_ipv6_mapped()),
            port,
        ),
        other => return Err(format!("bad family {other:?} (4 | 6 | mapped | tfo)")),
    })
}

/// Connects, sends `text` + "\n", reads one line back.
pub fn probe(family: &str, host: &str, port: u16, text: &str) -> ProbeResult {
    let mut r = base();
    let addr = match target(family, host, port) {
        Ok(a) => a,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let payload = format!("{text}\n");
    let outcome = (|| -> io::Result<String> {
        let mut stream = open(addr, family == "tfo", payload.as_bytes())?;
        r.peer = stream.peer_addr().ok().map(|p| p.to_string());
        if family != "tfo" {
            stream.write_all(payload.as_bytes())?;
        }
        read_line(&mut stream)
    })();
    match outcome {
        Ok(line) if !line.is_empty() => {
            r.ok = true;
            r.reply = Some(line);
        }
        Ok(_) => r.error = Some("closed without reply".into()),
        Err(e) => {
            r.errno = e.raw_os_error();
            r.error = Some(e.to_string());
        }
    }
    r
}

fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A raw socket so that the family, `IPV6_V6ONLY` and TCP Fast Open are explicit.
fn open(addr: SocketAddr, fast_open: bool, data: &[u8]) -> io::Result<TcpStream> {
    let (storage, len) = sockaddr(addr);
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscalls on a descriptor this function owns; the TcpStream takes it over.
    unsafe {
        let fd = cvt(libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let stream = TcpStream::from_raw_fd(fd);
        if domain == libc::AF_INET6 {
            let off: libc::c_int = 0;
            cvt(libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&off as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        // SO_SNDTIMEO also bounds connect().
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let sa = (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
        if fast_open {
            let n = libc::sendto(
                stream.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_FASTOPEN | libc::MSG_NOSIGNAL,
                sa,
                len,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if (n as usize) < data.len() {
                let mut s = &stream;
                s.write_all(&data[n as usize..])?;
            }
        } else {
            cvt(libc::connect(stream.as_raw_fd(), sa, len))?;
        }
        Ok(stream)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// `probe-fork`: the same probe from a forked child; the parent prints the child's result
/// with `parent_pid` set.
pub fn probe_forked(family: &str, host: &str, port: u16, text: &str) -> ProbeResult {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: the probe process is single-threaded here, so fork is safe; the child only
    // probes, writes to the pipe and _exits.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            let mut r = base();
            r.error = Some(format!("pipe: {}", io::Error::last_os_error()));
            return r;
        }
        let pid = libc::fork();
        if pid == 0 {
            libc::close(fds[0]);
            let line = probe(family, host, port, text).line();
            let mut w = fs::File::from_raw_fd(fds[1]);
            let _ = w.write_all(line.as_bytes());
            drop(w);
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut out = String::new();
        let _ = fs::File::from_raw_fd(fds[0]).read_to_string(&mut out);
        if pid > 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        let mut r = ProbeResult::parse(&out).unwrap_or_else(|| {
            let mut r = base();
            r.error = Some(format!("child said {out:?}"));
            r
        });
        r.parent_pid = Some(std::process::id() as i32);
        r
    }
}

/// `probe-wait GOFILE OUTFILE …`: writes `OUTFILE.ready` (its pid), waits up to a minute for
/// GOFILE, probes, and writes the result line to OUTFILE (atomically).
pub fn probe_wait(go: &Path, out: &Path, family: &str, host: &str, port: u16, text: &str) {
    let ready = with_suffix(out, ".ready");
    let tmp = with_suffix(out, ".tmp");
    let _ = fs::write(&tmp, std::process::id().to_string());
    let _ = fs::rename(&tmp, &ready);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !go.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let line = probe(family, host, port, text).line();
    let _ = fs::write(&tmp, line);
    let _ = fs::rename(&tmp, out);
}

pub fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let r = ProbeResult {
            pid: 7,
            exe: "/init".into(),
            parent_pid: Some(6),
            peer: Some("[::ffff:127.0.0.2]:4000".into()),
            ok: true,
            reply: Some("echo:a b=c".into()),
            ..Default::default()
        };
        assert_eq!(ProbeResult::parse(&r.line()), Some(r));
        let r = ProbeResult {
            pid: 8,
            exe: "/init".into(),
            errno: Some(104),
            error: Some("Connection reset by peer (os error 104)".into()),
            ..Default::default()
        };
        assert_eq!(
            ProbeResult::parse(&format!("noise\n{}\n", r.line())),
            Some(r)
        );
        assert_eq!(ProbeResult::parse("nothing"), None);
    }

    #[test]
    fn targets() {
        assert_eq!(
            target("mapped", "127.0.0.2", 5).unwrap().to_string(),
            "[::ffff:127.0.0.2]:5"
        );
        assert_eq!(target("6", "::1", 5).unwrap().to_string(), "[::1]:5");
        assert!(target("7", "::1", 5).is_err());
        assert!(target("4", "::1", 5).is_err());
    }
}
