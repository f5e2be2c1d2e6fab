use std::convert::Infallible;

use futures_util::stream::{self, StreamExt};
use http::HeaderValue;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Body as _;

use super::*;

const SOON: Duration = Duration::from_secs(5);

fn frames(
    parts: &[&'static [u8]],
    trailers: Option<HeaderMap>,
) -> Vec<Result<Frame<Bytes>, Infallible>> {
    let mut v: Vec<_> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p))))
        .collect();
    v.extend(trailers.map(|t| Ok(Frame::trailers(t))));
    v
}

/// What the upstream would get: the frames of the held body.
async fn sent(h: Held) -> (Bytes, Option<HeaderMap>, SizeHint) {
    let body = ReqBody::Held(h);
    let hint = body.size_hint();
    let c = body.collect().await.unwrap();
    let t = c.trailers().cloned();
    (c.to_bytes(), t, hint)
}

#[tokio::test]
async fn a_body_is_read_whole_and_sent_as_it_came() {
    static B: Budget = Budget::new(1 << 20);
    let h = read(
        Full::new(Bytes::from_static(b"{\"amount\": 42}")),
        100,
        SOON,
        &B,
    )
    .await
    .unwrap();
    assert_eq!(h.bytes().as_ref(), b"{\"amount\": 42}");
    assert_eq!(B.used(), 14, "held while it waits");
    let (bytes, trailers, hint) = sent(h).await;
    assert_eq!(bytes.as_ref(), b"{\"amount\": 42}");
    assert!(trailers.is_none());
    assert_eq!(hint.exact(), Some(14), "a Content-Length stays one");
    assert_eq!(B.used(), 0, "given back once sent");

    // Chunked (no announced size), with trailers: both kept.
    let mut t = HeaderMap::new();
    t.insert("x-checksum", HeaderValue::from_static("abc"));
    let body = StreamBody::new(stream::iter(frames(&[b"one ", b"two"], Some(t.clone()))));
    let h = read(body, 100, SOON, &B).await.unwrap();
    assert_eq!(h.trailers(), Some(&t));
    let (bytes, trailers, hint) = sent(h).await;
    assert_eq!(bytes.as_ref(), b"one two");
    assert_eq!(trailers, Some(t));
    assert_eq!(hint.exact(), None, "a chunked body goes on chunked");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    static B: Budget = Budget::new(1 << 20);
    // Announced too large: refused before anything is read.
    let e = read(Full::new(Bytes::from(vec![b'x'; 101])), 100, SOON, &B)
        .await
        .err()
        .unwrap();
    assert_eq!(
        e,
        HeldBodyError::TooLarge {
            got: "101 bytes".into(),
            limit: 100
        }
    );
    assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(e.to_string().contains("max_held_body_bytes"), "{e}");
    // Found too large while reading.
    let body = StreamBody::new(stream::iter(frames(&[&[b'x'; 60], &[b'y'; 60]], None)));
    let e = read(body, 100, SOON, &B).await.err().unwrap();
    assert!(matches!(e, HeldBodyError::TooLarge { .. }), "{e}");
    assert_eq!(B.used(), 0);
    // Exactly the limit is fine.
    let h = read(Full::new(Bytes::from(vec![b'x'; 100])), 100, SOON, &B).await;
    assert_eq!(h.unwrap().bytes().len(), 100);
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    static B: Budget = Budget::new(1 << 20);
    let body = StreamBody::new(stream::iter(frames(&[b"partial"], None)).chain(stream::pending()));
    let e = read(body, 100, Duration::from_millis(50), &B)
        .await
        .err()
        .unwrap();
    assert_eq!(e, HeldBodyError::TimedOut(0));
    assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(B.used(), 0, "nothing stays held");
}

#[tokio::test]
async fn bodies_held_at_once_share_the_memory_budget() {
    static B: Budget = Budget::new(150);
    let a = read(Full::new(Bytes::from(vec![b'x'; 100])), 100, SOON, &B)
        .await
        .unwrap();
    let e = read(Full::new(Bytes::from(vec![b'x'; 60])), 100, SOON, &B)
        .await
        .err()
        .unwrap();
    assert_eq!(e, HeldBodyError::Busy(150));
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(a);
    assert!(read(Full::new(Bytes::from(vec![b'x'; 60])), 100, SOON, &B)
        .await
        .is_ok());
}
