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
        Ok(self.side_answer().await?.0)
    }

    /// Describes one statement (not from the agent) without running it: Parse and Describe
    /// of the unnamed statement, then Sync. Returns its RowDescription's fields (none for a
    /// statement without rows). The connection must be idle.
    pub async fn side_describe(&mut self, sql: &str) -> Result<Vec<backend::Field>> {
        let mut out = bytes::BytesMut::new();
        frontend::parse("", sql).encode(&mut out);
        super::codec::Frame::new(b'D', bytes::Bytes::from_static(b"S\0")).encode(&mut out);
        super::codec::Frame::new(b'S', bytes::Bytes::new()).encode(&mut out);
        self.writer.write_all(&out).await?;
        Ok(self.side_answer().await?.1)
    }

    /// Reads a side request's answer up to ReadyForQuery: its rows as text and its last
    /// RowDescription.
    async fn side_answer(&mut self) -> Result<(Vec<Vec<Option<String>>>, Vec<backend::Field>)> {
        let mut rows = Vec::new();
        let mut fields = Vec::new();
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
                backend::ROW_DESCRIPTION => fields = backend::row_description(&f.body)?,
                ERROR => {
                    let fs = backend::fields(&f.body)?;
                    error = Some(backend::field(&fs, b'M').unwrap_or("error").to_owned());
                }
                READY => {
                    return match error {
                        None if f.body.first() == Some(&b'I') => Ok((rows, fields)),
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

    /// Whether the server closed the connection or sent something while idle: one poll of
    /// a read, no timer. (A zero `timeout` waited for the timer wheel's next 1 ms tick
    /// whenever the read was pending, i.e. on every healthy pooled connection: that was
    /// most of a new agent connection's latency.) Unconstrained, so that tokio's
    /// cooperative budget cannot turn a ready read into a pending one.
    async fn is_stale(&mut self) -> bool {
        let mut fill = std::pin::pin!(self.reader.fill());
        tokio::task::unconstrained(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(fill.as_mut(), cx).is_ready())
        }))
        .await
    }
}

struct Idle {
    since: Instant,
    conn: Upstream,
}

/// The connections of one `pool_key`: parked ones, and how many are on their way back.
#[derive(Default)]
struct Slot {
    idle: Vec<Idle>,
    /// Released by their sessions and being reset (`DISCARD ALL`) right now.
    returning: usize,
}

/// Longest a session waits for a connection being reset before it logs in anew. A reset is
/// one round trip; a new login costs a backend fork and a SCRAM exchange.
const RETURN_WAIT: Duration = Duration::from_millis(100);

/// Idle upstream connections by `pool_key`.
#[derive(Default)]
pub struct Pool {
    slots: Mutex<HashMap<String, Slot>>,
    /// Signalled whenever a returning connection is parked or given up.
    returned: tokio::sync::Notify,
}

/// A connection announced as coming back to the pool (`Pool::returning`), handed to
/// `Pool::put`. Until then `take` waits for it instead of logging in anew: an agent that
/// opens a connection per call reconnects while its last one is still being reset.
pub struct Returning<'a> {
    pool: &'a Pool,
    key: String,
}

impl Drop for Returning<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.pool.lock().get_mut(&self.key) {
            slot.returning = slot.returning.saturating_sub(1);
        }
        self.pool.returned.notify_waiters();
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently parked live connection for `key`; if none is parked but one is
    /// being reset, waits for it (at most `RETURN_WAIT`).
    pub async fn take(&self, key: &str, max_idle: Duration) -> Option<Upstream> {
        self.take_waiting(key, max_idle, RETURN_WAIT).await
    }

    async fn take_waiting(
        &self,
        key: &str,
        max_idle: Duration,
        wait_for: Duration,
    ) -> Option<Upstream> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a connection parked meanwhile is not missed.
            returned.as_mut().enable();
            let (conn, wait) = {
                let mut slots = self.lock();
                let slot = slots.get_mut(key)?;
                slot.idle.retain(|c| c.since.elapsed() < max_idle);
                match slot.idle.pop() {
                    Some(c) => (Some(c.conn), false),
                    None => (None, slot.returning > 0),
                }
            };
            match conn {
                Some(mut conn) => {
                    if !conn.is_stale().await {
                        return Some(conn);
                    }
                }
                None if wait => {
                    tokio::time::timeout(wait_for, returned).await.ok()?;
                }
                None => return None,
            }
        }
    }

    /// Announces that a connection of `key` is coming back (see `Returning`).
    pub fn returning(&self, key: &str) -> Returning<'_> {
        self.lock().entry(key.to_owned()).or_default().returning += 1;
        Returning {
            pool: self,
            key: key.to_owned(),
        }
    }

    /// Resets the connection with `DISCARD ALL` and parks it (at most `size` per key).
    pub async fn put(
        &self,
        ret: Returning<'_>,
        mut conn: Upstream,
        size: usize,
        max_idle: Duration,
    ) {
        if size == 0 {
            return;
        }
        if let Err(e) = conn.side_query("DISCARD ALL").await {
            tracing::debug!(error = %e, "upstream not reusable after DISCARD ALL; closing it");
            return;
        }
        let mut slots = self.lock();
        let slot = slots.entry(ret.key.clone()).or_default();
        slot.idle.retain(|c| c.since.elapsed() < max_idle);
        if slot.idle.len() >= size {
            slot.idle.remove(0);
        }
        slot.idle.push(Idle {
            since: Instant::now(),
            conn,
        });
        drop(slots);
        // `ret` is dropped here: the count goes down and waiting sessions look again.
    }

    /// Closes every idle connection (daemon shutdown).
    pub fn clear(&self) {
        self.lock().clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream over an in-memory pipe whose "server" answers every query like
    /// `DISCARD ALL` (CommandComplete, ReadyForQuery idle).
    fn fake_upstream() -> Upstream {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut head = [0u8; 5];
            while theirs.read_exact(&mut head).await.is_ok() {
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let mut body = vec![0u8; len - 4];
                if theirs.read_exact(&mut body).await.is_err() {
                    return;
                }
                let mut out = vec![b'C'];
                out.extend_from_slice(&(4 + 12u32).to_be_bytes());
                out.extend_from_slice(b"DISCARD ALL\0");
                out.extend_from_slice(&backend::ready(b'I').to_bytes());
                if theirs.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        over(ours)
    }

    fn over(stream: tokio::io::DuplexStream) -> Upstream {
        let (r, w) = split(Box::new(stream) as BoxStream);
        Upstream {
            reader: FrameReader::new(r, DEFAULT_MAX_FRAME, "upstream"),
            writer: w,
            session: Session {
                params: Vec::new(),
                pid: 1,
                key: 2,
            },
            addr: "127.0.0.2:5432".parse().unwrap(),
            tls: false,
        }
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn take_waits_for_a_returning_connection_instead_of_missing() {
        let pool: &'static Pool = Box::leak(Box::default());
        assert!(pool.take("k", IDLE).await.is_none(), "empty pool: no wait");
        let ret = pool.returning("k");
        // A long bound, so that a slow machine cannot race production's 100 ms.
        let waiter = tokio::spawn(pool.take_waiting("k", IDLE, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "a connection is on its way back: take waits"
        );
        pool.put(ret, fake_upstream(), 8, IDLE).await;
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap().map(|u| u.session.pid), Some(1));
        assert_eq!(pool.lock()["k"].returning, 0);
    }

    #[tokio::test]
    async fn a_return_given_up_releases_the_waiter_and_the_wait_is_bounded() {
        let pool: &'static Pool = Box::leak(Box::default());
        let ret = pool.returning("k");
        // A long bound, so that a slow machine cannot race production's 100 ms.
        let waiter = tokio::spawn(pool.take_waiting("k", IDLE, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(ret); // e.g. DISCARD ALL failed: the connection is closed instead
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(got.unwrap().unwrap().is_none());

        // A return that never comes: take gives up after RETURN_WAIT.
        let _stuck = pool.returning("k");
        let t = Instant::now();
        assert!(pool.take("k", IDLE).await.is_none());
        assert!(t.elapsed() >= RETURN_WAIT);
    }

    #[tokio::test]
    async fn staleness_is_one_poll_of_the_read() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut up = over(ours);
        assert!(!up.is_stale().await, "nothing arrived: reusable");
        theirs.write_all(b"N").await.unwrap();
        assert!(up.is_stale().await, "the server spoke while idle");
        let (ours, theirs) = tokio::io::duplex(64);
        let mut up = over(ours);
        drop(theirs);
        assert!(up.is_stale().await, "the server closed");
    }
}
