//! Upstream connections: connect (through the proxy's marked socket), TLS, login, and a
//! pool of idle logged-in connections per resource (reset with `DISCARD ALL`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{split, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::auth::{self, Session};
use super::backend::{self, DATA_ROW, ERROR, READY};
use super::codec::{FrameReader, DEFAULT_MAX_FRAME};
use super::error::{PgError, Result};
use super::frontend;
use super::tls;
use crate::policy::{PostgresResource, TlsMode};

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// A logged-in upstream connection.
pub struct Upstream {
    pub reader: FrameReader<ReadHalf<BoxStream>>,
    pub writer: WriteHalf<BoxStream>,
    pub session: Session,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Identifies interchangeable connections: same resource, same settings.
pub fn pool_key(name: &str, r: &PostgresResource) -> String {
    format!(
        "{name}|{}|{}|{}|{}|{}",
        r.address, r.port, r.database, r.user, r.tls
    )
}

/// Reads the resource's secret from its file or the daemon's environment.
pub fn secret(name: &str, r: &PostgresResource) -> Result<Option<Vec<u8>>> {
    let err = |message: String| PgError::Secret {
        resource: name.to_owned(),
        message,
    };
    if let Some(path) = &r.password_file {
        let mut s = std::fs::read(path)
            .map_err(|e| err(format!("password_file {}: {e}", path.display())))?;
        if s.last() == Some(&b'\n') {
            s.pop();
            if s.last() == Some(&b'\r') {
                s.pop();
            }
        }
        return Ok(Some(s));
    }
    if let Some(var) = &r.password_env {
        return std::env::var_os(var)
            .map(|v| Some(v.into_encoded_bytes()))
            .ok_or_else(|| {
                err(format!(
                    "environment variable {var} of the daemon is not set"
                ))
            });
    }
    Ok(None)
}

/// Connects, negotiates TLS per the resource's mode and logs in.
pub async fn connect(name: &str, r: &PostgresResource, timeout: Duration) -> Result<Upstream> {
    let addr = SocketAddr::new(r.address, r.port);
    let up_err = |message: String| PgError::Upstream {
        resource: name.to_owned(),
        message,
    };
    let password = secret(name, r)?;
    let tcp = crate::proxy::session::connect_upstream(addr, timeout)
        .await
        .map_err(|e| up_err(format!("cannot connect to {addr}: {e}")))?;
    // A server that accepts and then hangs up or resets is named like one that refuses.
    handshake(name, r, tcp, password, addr)
        .await
        .map_err(|e| match e {
            PgError::Io(e) => up_err(format!("{addr} failed during the handshake: {e}")),
            PgError::Closed(_) => {
                up_err(format!("{addr} closed the connection during the handshake"))
            }
            other => other,
        })
}

async fn handshake(
    name: &str,
    r: &PostgresResource,
    mut tcp: tokio::net::TcpStream,
    password: Option<Vec<u8>>,
    addr: SocketAddr,
) -> Result<Upstream> {
    let up_err = |message: String| PgError::Upstream {
        resource: name.to_owned(),
        message,
    };
    let (stream, tls, binding): (BoxStream, bool, Option<Option<Vec<u8>>>) = match tls::config(
        name, r,
    )? {
        None => (Box::new(tcp), false, None),
        Some(cfg) => {
            let mut req = bytes::BytesMut::new();
            postgres_protocol::message::frontend::ssl_request(&mut req);
            tcp.write_all(&req).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            match (answer[0], r.tls) {
                (b'S', _) => {
                    let connector = tokio_rustls::TlsConnector::from(cfg);
                    let s = connector
                        .connect(tls::server_name(name, r)?, tcp)
                        .await
                        .map_err(|e| PgError::Tls { resource: name.to_owned(), message: tls_failure(&e, r) })?;
                    let binding = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| tls::server_end_point(c));
                    (Box::new(s), true, Some(binding))
                }
                (b'N', TlsMode::Prefer) => (Box::new(tcp), false, None),
                (b'N', mode) => {
                    return Err(PgError::Tls {
                        resource: name.to_owned(),
                        message: format!("the server does not offer TLS but the resource requires it (tls: {mode}); enable ssl on the server or set `tls: disable`"),
                    })
                }
                (other, _) => return Err(up_err(format!("unexpected answer {other:#x} to SSLRequest"))),
            }
        }
    };
    let (rd, mut writer) = split(stream);
    let mut reader = FrameReader::new(rd, DEFAULT_MAX_FRAME, "upstream");
    let session = auth::login(
        &mut reader,
        &mut writer,
        name,
        &r.user,
        &r.database,
        password.as_deref(),
        binding,
    )
    .await?;
    Ok(Upstream {
        reader,
        writer,
        session,
        addr,
        tls,
    })
}

/// The handshake error, with what to check when the certificate was not accepted.
fn tls_failure(e: &std::io::Error, r: &PostgresResource) -> String {
    let cert = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    if !cert {
        return e.to_string();
    }
    let roots = match &r.ca_file {
        Some(p) => format!("ca_file {}", p.display()),
        None => "the system's CA certificates".to_owned(),
    };
    let name = r
        .server_name
        .clone()
        .unwrap_or_else(|| r.address.to_string());
    format!("{e} (verified against {roots} for the name {name}; no login was attempted)")
}

impl Upstream {
    /// Runs one simple query (not from the agent) and returns its rows as text; an
    /// ErrorResponse becomes an error. The connection must be idle.
    pub async fn side_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.writer
            .write_all(&frontend::query(sql).to_bytes())
            .await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let f = self.reader.expect().await?;
            match f.tag {
                DATA_ROW => rows.push(
                    backend::data_row(&f.body)?
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect(),
                ),
                ERROR => {
                    let fs = backend::fields(&f.body)?;
                    error = Some(backend::field(&fs, b'M').unwrap_or("error").to_owned());
                }
                READY => {
                    return match error {
                        None if f.body.first() == Some(&b'I') => Ok(rows),
                        None => Err(PgError::Upstream {
                            resource: self.addr.to_string(),
                            message: "connection left inside a transaction".into(),
                        }),
                        Some(m) => Err(PgError::Upstream {
                            resource: self.addr.to_string(),
                            message: m,
                        }),
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether the server closed the connection or sent something while idle.
    async fn is_stale(&mut self) -> bool {
        tokio::time::timeout(Duration::ZERO, self.reader.fill())
            .await
            .is_ok()
    }
}

struct Idle {
    since: Instant,
    conn: Upstream,
}

/// Idle upstream connections by `pool_key`.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

impl Pool {
    /// The most recently parked live connection for `key`, if any.
    pub async fn take(&self, key: &str, max_idle: Duration) -> Option<Upstream> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let list = idle.get_mut(key)?;
                list.retain(|c| c.since.elapsed() < max_idle);
                list.pop()?.conn
            };
            let mut conn = conn;
            if !conn.is_stale().await {
                return Some(conn);
            }
        }
    }

    /// Resets the connection with `DISCARD ALL` and parks it (at most `size` per key).
    pub async fn put(&self, key: String, mut conn: Upstream, size: usize, max_idle: Duration) {
        if size == 0 {
            return;
        }
        if let Err(e) = conn.side_query("DISCARD ALL").await {
            tracing::debug!(error = %e, "upstream not reusable after DISCARD ALL; closing it");
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|c| c.since.elapsed() < max_idle);
        if list.len() >= size {
            list.remove(0);
        }
        list.push(Idle {
            since: Instant::now(),
            conn,
        });
    }

    /// Closes every idle connection (daemon shutdown).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Terminate, best effort; then wait briefly for the server to close its side, so our
/// socket is not reset while the server still writes (e.g. its TLS close_notify).
pub async fn close(mut conn: Upstream) {
    let _ = conn
        .writer
        .write_all(&frontend::terminate().to_bytes())
        .await;
    let _ = conn.writer.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(true) = conn.reader.fill().await {}
    })
    .await;
}
