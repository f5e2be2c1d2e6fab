//! The upstream side: one HTTP/1.1 client connection per agent connection (opened on the
//! first request, reopened when the server closes it), plain or TLS verifying the server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
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
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub dst: SocketAddr,
    /// TLS client config and the name to verify; `None` for plain HTTP.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
    pub connect_timeout: Duration,
}

/// The connection of one agent connection.
pub struct Upstream {
    target: Target,
    sender: Option<SendRequest<Body>>,
}

impl Upstream {
    pub fn new(target: Target) -> Self {
        Upstream {
            target,
            sender: None,
        }
    }

    /// A sender ready for the next request, (re)connecting when needed.
    pub async fn ready(&mut self) -> Result<&mut SendRequest<Body>, UpstreamError> {
        if let Some(s) = &mut self.sender {
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("just checked"));
            }
        }
        self.sender = None;
        let s = connect(&self.target).await?;
        Ok(self.sender.insert(s))
    }
}

async fn connect(t: &Target) -> Result<SendRequest<Body>, UpstreamError> {
    let dst = t.dst;
    let tcp = crate::proxy::session::connect_upstream(dst, t.connect_timeout)
        .await
        .map_err(|source| UpstreamError::Connect { dst, source })?;
    let io: Box<dyn Io> = match &t.tls {
        None => Box::new(tcp),
        Some((cfg, name)) => {
            let sn = match name.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(name.clone())
                    .map_err(|_| UpstreamError::Name(name.clone()))?,
            };
            let tls = tokio::time::timeout(
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
            Box::new(tls)
        }
    };
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Handshake { dst, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP connection ended");
        }
    });
    Ok(sender)
}
