//! The body of a request a `hold` rule parks: read whole before approvers are asked
//! (`hold.rs`), so they see what would be sent and a standing approval can compare it, then
//! forwarded byte for byte if approved.
//!
//! Reading is bounded three ways: the service's `max_held_body_bytes` (a larger body, or a
//! `Content-Length` announcing one, is refused with 413 before more is read), its
//! `header_timeout_secs` for the whole body (a body that trickles or stalls cannot hold a
//! task: 408), and [`HELD_MEMORY`] for all bodies held at once in the daemon (503). The
//! trailers of the body (HTTP/2, e.g. gRPC) are kept and forwarded after it, and the size
//! the agent announced stays the size announced upstream, so the upstream gets the body
//! framed as it would have been had it streamed through (`Content-Length` or chunked).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};

use super::budget::{Budget, Reservation};

/// Bytes all request bodies held for approval may take together (a held body is kept until
/// it is forwarded or refused).
pub const HELD_MEMORY: u64 = 256 << 20;

static HELD: Budget = Budget::new(HELD_MEMORY);

/// Why a held request's body could not be read for approvers (the request is refused).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeldBodyError {
    #[error("its body ({got}) is too large to be shown to an approver: at most {limit} bytes (`max_held_body_bytes` of the service); send a smaller body, or raise the limit")]
    TooLarge { got: String, limit: u64 },
    #[error(
        "its body did not arrive within header_timeout_secs ({0} s); send the whole body at once"
    )]
    TimedOut(u64),
    #[error("the interceptor already holds {0} bytes of request bodies waiting for approval; retry once some are decided")]
    Busy(u64),
    #[error("its body could not be read ({0}); nothing was sent upstream")]
    Read(String),
}

impl HeldBodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            HeldBodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HeldBodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            HeldBodyError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            HeldBodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The `error` of the JSON answer.
    pub fn summary(&self) -> &'static str {
        match self {
            HeldBodyError::TooLarge { .. } => "request body too large to be shown to an approver",
            HeldBodyError::TimedOut(_) => "request timeout",
            HeldBodyError::Busy(_) => "too many held request bodies",
            HeldBodyError::Read(_) => "request body unreadable",
        }
    }
}

/// A request body: as it arrives from the agent, or read whole for approvers.
pub enum ReqBody {
    Streaming(Incoming),
    Held(Held),
}

/// A body read whole: its bytes, then its trailers.
pub struct Held {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    /// The size the agent announced (`Content-Length`), if it did.
    exact: Option<u64>,
    /// The bytes read (kept when `data` has been sent).
    all: Bytes,
    _mem: Option<Reservation<'static>>,
}

impl Held {
    /// The bytes of the body.
    pub fn bytes(&self) -> &Bytes {
        &self.all
    }

    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    fn empty() -> Held {
        Held {
            data: None,
            trailers: None,
            exact: Some(0),
            all: Bytes::new(),
            _mem: None,
        }
    }
}

impl ReqBody {
    /// The body read whole, if it was.
    pub fn held(&self) -> Option<&Held> {
        match self {
            ReqBody::Held(h) => Some(h),
            ReqBody::Streaming(_) => None,
        }
    }

    /// Reads the whole body (at most `limit` bytes, within `within`) and keeps it.
    pub async fn read_whole(&mut self, limit: u64, within: Duration) -> Result<(), HeldBodyError> {
        let ReqBody::Streaming(body) = std::mem::replace(self, ReqBody::Held(Held::empty())) else {
            return Ok(());
        };
        *self = ReqBody::Held(read(body, limit, within, &HELD).await?);
        Ok(())
    }
}

async fn read<B>(
    mut body: B,
    limit: u64,
    within: Duration,
    budget: &'static Budget,
) -> Result<Held, HeldBodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let exact = body.size_hint().exact();
    let too_large = |got: String| HeldBodyError::TooLarge { got, limit };
    if let Some(n) = exact.filter(|&n| n > limit) {
        return Err(too_large(format!("{n} bytes")));
    }
    let mut mem = budget.reserve();
    let mut data = BytesMut::new();
    if let Some(n) = exact {
        mem.hold(n).map_err(|f| HeldBodyError::Busy(f.cap))?;
        data.reserve(usize::try_from(n).unwrap_or(0));
    }
    let mut trailers: Option<HeaderMap> = None;
    let collect = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HeldBodyError::Read(e.to_string()))?;
            match frame.into_data() {
                Ok(d) => {
                    let total = (data.len() + d.len()) as u64;
                    if total > limit {
                        return Err(too_large(format!("more than {limit} bytes")));
                    }
                    mem.hold(total).map_err(|f| HeldBodyError::Busy(f.cap))?;
                    data.extend_from_slice(&d);
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(t);
                    }
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(within, collect)
        .await
        .map_err(|_| HeldBodyError::TimedOut(within.as_secs()))??;
    let all = data.freeze();
    Ok(Held {
        data: Some(all.clone()).filter(|d| !d.is_empty()),
        trailers,
        exact,
        all,
        _mem: Some(mem),
    })
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Held(h) => Poll::Ready(match h.data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => h.trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Streaming(b) => b.is_end_stream(),
            ReqBody::Held(h) => h.data.is_none() && h.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Streaming(b) => b.size_hint(),
            // What the agent announced: a body it sent chunked goes on chunked.
            ReqBody::Held(h) => match h.exact {
                Some(_) => SizeHint::with_exact(h.data.as_ref().map_or(0, |d| d.len() as u64)),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
#[path = "held_body_tests.rs"]
mod tests;
