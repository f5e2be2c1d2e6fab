//! PostgreSQL frontend decoding, as the proxy reads a client: the untagged startup packet
//! (`FrameReader::next_startup` + `Startup::parse`), then tagged frames
//! (`FrameReader::next` + `Frontend::parse`) and the literal-shape lexer on every query text.
#![no_main]

use std::future::Future;
use std::task::{Context, Poll, Waker};

use interceptor::protocols::postgres::codec::{FrameReader, DEFAULT_MAX_FRAME};
use interceptor::protocols::postgres::frontend::{self, Frontend, Startup};
use interceptor::protocols::postgres::shape::literal_shape;
use libfuzzer_sys::fuzz_target;

/// Runs a future over an in-memory reader, which never waits.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory reader returned Pending"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input as the first packet of a connection.
    let mut r = FrameReader::new(data, DEFAULT_MAX_FRAME, "client");
    if let Ok(Some(body)) = now(r.next_startup()) {
        if let Ok(Startup::Startup { params, .. }) = Startup::parse(&body) {
            let _ = Startup::param(&params, "user");
        }
    }
    let _ = Startup::parse(data);

    // The whole input as the message stream after startup.
    let mut r = FrameReader::new(data, DEFAULT_MAX_FRAME, "client");
    while let Ok(Some(frame)) = now(r.next()) {
        match Frontend::parse(&frame) {
            Ok(Frontend::Query(sql)) => {
                let _ = literal_shape(sql);
                // What the proxy would send instead parses back to the same text.
                let again = frontend::query(sql);
                assert_eq!(Frontend::parse(&again).unwrap(), Frontend::Query(sql));
            }
            Ok(Frontend::Parse { name, query }) => {
                let _ = literal_shape(query);
                let again = frontend::parse(name, query);
                assert_eq!(
                    Frontend::parse(&again).unwrap(),
                    Frontend::Parse { name, query }
                );
            }
            _ => {}
        }
    }
});
