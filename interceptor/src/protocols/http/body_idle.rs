//! A request body that must keep moving: when the agent sends nothing more of it for
//! `header_timeout_secs`, it ends in an error (`Stalled`), which aborts the upstream
//! request and frees its connection. Without this a body that never ends (an HTTP/2
//! stream without END_STREAM, a chunked upload that stops) would hold an upstream
//! connection for as long as the agent keeps its own connection open.
//!
//! Only time spent waiting on the agent counts: the clock starts when the body is polled
//! and has nothing, and stops at every frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::respond::{Body, BoxError};

/// The request body stalled.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {} s (header_timeout_secs); send it without pauses that long, or raise header_timeout_secs", .0.as_secs())]
pub struct Stalled(pub Duration);

/// `body`, failing with `Stalled` after `limit` without a frame.
pub fn limited(body: Body, limit: Duration) -> Body {
    Limited {
        inner: body,
        limit,
        sleep: None,
    }
    .boxed()
}

/// Whether `e` (or an error it wraps) is a stalled request body.
pub fn stalled(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<Stalled>() {
            return true;
        }
        cur = e.source();
    }
    false
}

struct Limited {
    inner: Body,
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                self.sleep = None;
                Poll::Ready(f)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(limit))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_body_fails_and_a_moving_one_does_not() {
        let limit = Duration::from_millis(100);
        let (tx, rx) = futures_channel();
        let mut b = limited(rx, limit);
        // Frames keep coming, each within the limit: all arrive.
        let feed = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(limit / 2).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            tx // kept open, then silent
        });
        for _ in 0..5 {
            let f = b.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), "x");
        }
        let _tx = feed.await.unwrap();
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(stalled(&*e), "{e}");
        assert!(e.to_string().contains("header_timeout_secs"), "{e}");
    }

    type Tx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

    /// A body fed through a channel.
    fn futures_channel() -> (Tx, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let s =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        (tx, http_body_util::StreamBody::new(s).boxed())
    }
}
