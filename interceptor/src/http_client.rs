//! The daemon's own outbound HTTP requests (approval webhooks, JWKS fetches): hyper's
//! HTTP/1.1 client over a socket marked like every proxy-originated socket (the kernel hooks
//! never redirect it), TLS with rustls verifying the server against the system and Mozilla
//! roots plus an optional CA file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url:?} is not a usable URL: {why} (expected http://host[:port]/path or https://…)")]
    Url { url: String, why: String },
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS with {host}: {why}")]
    Tls { host: String, why: String },
    #[error("HTTP exchange with {host}: {why}")]
    Http { host: String, why: String },
    #[error("the answer's body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// Host name or IP address (without IPv6 brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, ClientError> {
        let bad = |why: &str| ClientError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Url {
            tls,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }
}

/// One request and its answer.
pub struct Call<'a> {
    pub method: Method,
    pub url: &'a Url,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
    /// Extra trusted roots (PEM) for https, besides the system and Mozilla roots.
    pub ca_file: Option<&'a Path>,
    /// For the whole exchange: connect, TLS, request and the full answer.
    pub timeout: Duration,
    /// Largest answer body accepted.
    pub max_body: usize,
}

/// The status and the whole body of an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Sends `call` on a new connection (`Connection: close`).
pub async fn send(call: Call<'_>) -> Result<Answer, ClientError> {
    let timeout = call.timeout;
    tokio::time::timeout(timeout, exchange(call))
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// Runs a client future to completion from synchronous code, inside a tokio runtime or not
/// (policy loading fetches JWKS from both): on a scoped thread with its own small runtime.
pub fn blocking<T: Send>(fut: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread tokio runtime")
                .block_on(fut)
        })
        .join()
        .expect("the HTTP client thread panicked")
    })
}

async fn exchange(call: Call<'_>) -> Result<Answer, ClientError> {
    let url = call.url;
    let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| ClientError::Resolve {
            host: url.host.clone(),
            why: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ClientError::Resolve {
            host: url.host.clone(),
            why: "no address".into(),
        })?;
    let tcp = crate::proxy::session::connect_upstream(addr, call.timeout)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let mut req = Request::builder()
        .method(call.method.clone())
        .uri(url.path.as_str())
        .header(hyper::header::HOST, url.authority.as_str())
        .header(hyper::header::USER_AGENT, "interceptor")
        .header(hyper::header::CONNECTION, "close");
    for (k, v) in call.headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(call.body))
        .map_err(|e| ClientError::Http {
            host: url.host.clone(),
            why: e.to_string(),
        })?;
    if !url.tls {
        return over(tcp, req, url, call.max_body).await;
    }
    let tls_err = |why: String| ClientError::Tls {
        host: url.host.clone(),
        why,
    };
    let cfg = crate::protocols::http::tls::client_config(&url.host, call.ca_file)
        .map_err(|e| tls_err(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| tls_err(format!("bad server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    over(stream, req, url, call.max_body).await
}

async fn over<S>(
    stream: S,
    req: Request<Full<Bytes>>,
    url: &Url,
    max_body: usize,
) -> Result<Answer, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |why: String| ClientError::Http {
        host: url.host.clone(),
        why,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ClientError::TooLarge(max_body)
                } else {
                    http_err(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
pub(crate) mod tests;
