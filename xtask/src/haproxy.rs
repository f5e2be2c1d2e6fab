//! HAProxy as the peer of `cargo xtask bench http`: a C reverse proxy doing comparable
//! work (HTTP mode: parse each request, a deny rule, set a header, keep-alive both ways;
//! TCP mode: the plain relay), on 127.0.0.3 so it differs from the upstream. Installed
//! from Debian's package when missing; `None` (comparison skipped) when that fails.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::pg::free_port;

const HOST: &str = "127.0.0.3";

/// A running haproxy; killed on drop.
pub struct Haproxy {
    child: Child,
    /// HTTP-mode frontend (forwards to the plain upstream).
    pub http: SocketAddr,
    /// TCP-mode frontend (forwards to the relay upstream).
    pub tcp: SocketAddr,
}

/// The haproxy binary, installing Debian's package when missing.
pub fn ensure() -> Option<PathBuf> {
    crate::util::ensure_daemon_package("/usr/sbin/haproxy", "haproxy")
}

impl Haproxy {
    /// Starts haproxy with `threads` threads in front of `plain` (HTTP) and `l4` (TCP).
    pub fn start(
        bin: &Path,
        dir: &Path,
        threads: usize,
        plain: SocketAddr,
        l4: SocketAddr,
    ) -> Result<Haproxy> {
        let free =
            || -> Result<SocketAddr> { Ok(SocketAddr::new(HOST.parse()?, free_port(HOST)?)) };
        let (http, tcp) = (free()?, free()?);
        let cfg = dir.join("haproxy.cfg");
        fs::write(
            &cfg,
            format!(
                "global
  nbthread {threads}
  maxconn 4096
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench_http
  mode http
  option http-keep-alive
  bind {http}
  http-request deny deny_status 403 if {{ method DELETE }}
  http-request set-header Authorization \"Bearer bench-secret\"
  default_backend plain
backend plain
  mode http
  http-reuse always
  server up {plain}
frontend bench_tcp
  mode tcp
  bind {tcp}
  default_backend relay
backend relay
  mode tcp
  server up {l4}
"
            ),
        )?;
        let child = Command::new(bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting haproxy")?;
        let mut me = Haproxy { child, http, tcp };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(http).is_err()
            || std::net::TcpStream::connect(tcp).is_err()
        {
            if let Some(status) = me.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = me.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("haproxy exited ({status}): {err}");
            }
            if Instant::now() > deadline {
                bail!("haproxy did not listen on {http} and {tcp} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
