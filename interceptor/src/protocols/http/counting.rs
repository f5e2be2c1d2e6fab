//! Byte counting on the agent stream and on bodies, and the per-request audit record
//! written when a response is done (`Finish`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::audit::HttpRecord;
use super::respond::Body;
use super::Ctx;

/// An agent stream that counts the bytes read from it.
pub(super) struct Counting<S> {
    pub(super) inner: S,
    pub(super) read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.read
                .fetch_add((buf.filled().len() - before) as u64, Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes the request's audit record when dropped (after its response body was sent).
pub(super) struct Finish {
    pub(super) rec: Option<HttpRecord>,
    /// The upstream HTTP/1.1 connection serving the request, returned to the idle list
    /// with this guard (after the record is written).
    pub(super) lease: Option<super::upstream::Lease>,
    /// (bytes read from the agent, where to store it when the response is done)
    pub(super) done: (Arc<AtomicU64>, Arc<AtomicU64>),
    pub(super) started: Instant,
    pub(super) up: Arc<AtomicU64>,
    pub(super) down: Arc<AtomicU64>,
    pub(super) ctx: Arc<Ctx>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.done.1.store(self.done.0.load(Relaxed), Relaxed);
        if let Some(mut rec) = self.rec.take() {
            rec.bytes_up = self.up.load(Relaxed);
            rec.bytes_down = self.down.load(Relaxed);
            rec.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            self.ctx.audit.record_any(&rec);
        }
    }
}

/// A body that counts its data into `mine` and the connection total, and holds `guard`
/// until it is dropped.
pub(super) fn counted<B>(
    body: B,
    mine: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    guard: Option<Finish>,
) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    body.map_err(Into::into)
        .map_frame(move |f| {
            let _hold = &guard;
            if let Some(d) = f.data_ref() {
                mine.fetch_add(d.len() as u64, Relaxed);
                total.fetch_add(d.len() as u64, Relaxed);
            }
            f
        })
        .boxed()
}
