//! The upstream side of one agent connection: HTTP/1.1 client connections kept in a small
//! idle list (one in use per request in flight, returned when its response body is done),
//! or one multiplexed HTTP/2 connection when the agent spoke HTTP/2 and the server agreed
//! to it in ALPN. Plain or TLS verifying the server. At most `MAX_H1_PER_AGENT` HTTP/1.1
//! connections per agent connection: further HTTP/2 streams wait for one.
//!
//! The upstream connections are polled by the agent connection's own task (`Driver`), not
//! spawned: a request then crosses no task (and no thread) between the agent side and the
//! upstream side, which saves two wake-ups per request.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::respond::Body;

/// Errors reaching the upstream server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {dst}: {source}")]
    Connect {
        dst: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to {dst} as {name:?}: {source} (is the server certificate valid for this name and signed by a trusted CA? see `ca_file`)")]
    Tls {
        dst: SocketAddr,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
    #[error("HTTP handshake with {dst}: {source}")]
    Handshake {
        dst: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {dst}: {source}")]
    Request {
        dst: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub dst: SocketAddr,
    /// TLS client configs (ALPN http/1.1 only, and h2 + http/1.1) and the name to verify;
    /// `None` for plain HTTP.
    pub tls: Option<Tls>,
    pub connect_timeout: Duration,
}

#[derive(Clone)]
pub struct Tls {
    pub h1: Arc<rustls::ClientConfig>,
    pub h2: Arc<rustls::ClientConfig>,
    pub name: String,
}

/// HTTP/1.1 upstream connections one agent connection may have at once (HTTP/2 streams
/// beyond it wait for one to be free): one agent connection cannot hold a hundred.
pub const MAX_H1_PER_AGENT: usize = 8;

/// The upstream connections of one agent connection.
pub struct Upstream {
    target: Target,
    /// One per upstream connection, held by its connection future until the connection
    /// is gone (`MAX_H1_PER_AGENT`).
    permits: Arc<Semaphore>,
    /// Signalled when a connection goes back to the idle list.
    returned: Notify,
    /// HTTP/1.1 connections not serving a request.
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
    /// The HTTP/2 connection, once the server chose h2.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// Hands new connections to the `Driver`.
    drive: mpsc::UnboundedSender<Driven>,
}

/// A connection future to poll until it ends.
type Driven = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Polls the upstream connections of one agent connection; run it next to the agent side.
pub struct Driver {
    rx: mpsc::UnboundedReceiver<Driven>,
    conns: FuturesUnordered<Driven>,
}

impl Driver {
    /// Polls the connections; returns once the `Upstream` is gone and they all ended.
    /// Cancel-safe: dropping the future keeps the connections for the next call.
    pub async fn run(&mut self) {
        loop {
            tokio::select! {
                f = self.rx.recv() => match f {
                    Some(f) => self.conns.push(f),
                    None => break,
                },
                Some(()) = self.conns.next(), if !self.conns.is_empty() => {}
            }
        }
        while self.conns.next().await.is_some() {}
    }
}

/// An HTTP/1.1 connection lent to one request; it goes back to the idle list when dropped
/// (i.e. when the response body was passed on completely, or abandoned).
pub struct Lease {
    up: Arc<Upstream>,
    sender: Option<http1::SendRequest<Body>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take() {
            if !s.is_closed() {
                self.up
                    .idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(s);
                self.up.returned.notify_waiters();
            }
        }
    }
}

impl Upstream {
    pub fn new(target: Target) -> (Arc<Self>, Driver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let up = Arc::new(Upstream {
            target,
            permits: Arc::new(Semaphore::new(MAX_H1_PER_AGENT)),
            returned: Notify::new(),
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            drive: tx,
        });
        let driver = Driver {
            rx,
            conns: FuturesUnordered::new(),
        };
        (up, driver)
    }

    /// Polls `conn` in the agent connection's task (spawned if that one is gone).
    fn drive(&self, conn: Driven) {
        if let Err(mpsc::error::SendError(conn)) = self.drive.send(conn) {
            tokio::spawn(conn);
        }
    }

    /// Sends `req` (HTTP/1.1 form: origin-form URI and Host; rewritten when the connection
    /// is HTTP/2) and returns the response head and, for HTTP/1.1, the lease to hold until
    /// the body is done.
    ///
    /// `agent_h2`: the agent spoke HTTP/2 (its requests may run in parallel: a busy
    /// HTTP/1.1 connection means opening another, and over TLS h2 is offered upstream).
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
        agent_h2: bool,
    ) -> Result<(http::Response<Incoming>, Option<Lease>), UpstreamError> {
        let dst = self.target.dst;
        if let Some(s) = self.h2() {
            return send_h2(s, req, self.target.tls.is_some(), dst).await;
        }
        // An idle connection, else a new one while fewer than MAX_H1_PER_AGENT exist, else
        // wait for either.
        let mut s = loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(s) = self.idle_ready().await {
                break s;
            }
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => p.ok(),
                _ = returned => continue,
            };
            if let Some(s) = self.h2() {
                return send_h2(s, req, self.target.tls.is_some(), dst).await;
            }
            match connect(&self.target, agent_h2, permit, |c| self.drive(c)).await? {
                Conn::H1(s) => break s,
                Conn::H2(s) => {
                    *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
                    return send_h2(s, req, self.target.tls.is_some(), dst).await;
                }
            }
        };
        let r = s
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Request { dst, source })?;
        Ok((
            r,
            Some(Lease {
                up: self.clone(),
                sender: Some(s),
            }),
        ))
    }

    /// An idle HTTP/1.1 connection ready for a request.
    async fn idle_ready(&self) -> Option<http1::SendRequest<Body>> {
        loop {
            let mut s = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if !s.is_closed() && s.ready().await.is_ok() {
                return Some(s);
            }
        }
    }

    /// The upstream HTTP/2 connection, when there is one still open.
    fn h2(&self) -> Option<http2::SendRequest<Body>> {
        self.h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|s| !s.is_closed())
    }

    /// Forgets an HTTP/1.1 connection whose request switched protocols (it is no longer HTTP).
    pub fn upgraded(lease: Option<Lease>) {
        if let Some(mut l) = lease {
            l.sender = None;
        }
    }
}

/// Sends `req` on the multiplexed HTTP/2 upstream connection.
async fn send_h2(
    mut s: http2::SendRequest<Body>,
    req: Request<Body>,
    tls: bool,
    dst: SocketAddr,
) -> Result<(http::Response<Incoming>, Option<Lease>), UpstreamError> {
    s.ready()
        .await
        .map_err(|source| UpstreamError::Request { dst, source })?;
    let r = s
        .send_request(to_h2(req, tls))
        .await
        .map_err(|source| UpstreamError::Request { dst, source })?;
    Ok((r, None))
}

/// An HTTP/1.1 request (origin-form URI + Host) rewritten for HTTP/2: absolute URI, no Host.
pub fn to_h2(mut req: Request<Body>, tls: bool) -> Request<Body> {
    let host = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned));
    if let Some(host) = host {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let scheme = if tls { "https" } else { "http" };
        if let Ok(u) = format!("{scheme}://{host}{pq}").parse() {
            *req.uri_mut() = u;
        }
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

async fn connect(
    t: &Target,
    offer_h2: bool,
    permit: Option<OwnedSemaphorePermit>,
    drive: impl Fn(Driven),
) -> Result<Conn, UpstreamError> {
    let dst = t.dst;
    let tcp = crate::proxy::session::connect_upstream(dst, t.connect_timeout)
        .await
        .map_err(|source| UpstreamError::Connect { dst, source })?;
    let mut h2 = false;
    let io: Box<dyn Io> = match &t.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = &tls.name;
            let sn = match name.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(name.clone())
                    .map_err(|_| UpstreamError::Name(name.clone()))?,
            };
            let cfg = if offer_h2 { &tls.h2 } else { &tls.h1 };
            let s = tokio::time::timeout(
                t.connect_timeout,
                tokio_rustls::TlsConnector::from(cfg.clone()).connect(sn, tcp),
            )
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            })
            .map_err(|source| UpstreamError::Tls {
                dst,
                name: name.clone(),
                source,
            })?;
            h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            Box::new(s)
        }
    };
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| UpstreamError::Handshake { dst, source })?;
        drive(Box::pin(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        }));
        return Ok(Conn::H2(sender));
    }
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Handshake { dst, source })?;
    drive(Box::pin(async move {
        let _permit = permit;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP connection ended");
        }
    }));
    Ok(Conn::H1(sender))
}
