//! The agent's first bytes on an HTTP/TLS connection, as the proxy reads them: its own
//! hand-written parsers `http::detect::classify` (HTTP request line vs TLS ClientHello vs
//! other) and `http::sni::parse` (the ClientHello's server name), then the request head
//! through `httparse` (what hyper uses).
//!
//! Properties besides "no panic": `sni::parse` asks for more bytes only beyond what it has
//! (or `detect` would spin on the same peek); a complete ClientHello cut short anywhere reads
//! as incomplete, never invalid (a hello arriving in pieces is waited for, not refused); a
//! server name is lower-case printable ASCII; `classify` and `sni::parse` agree.
#![no_main]

use interceptor::protocols::http::detect::{classify, Detected};
use interceptor::protocols::http::sni::{parse, Hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let hello = parse(data);
    match &hello {
        Hello::Incomplete(n) => {
            assert!(*n > data.len(), "Incomplete({n}) with {} bytes", data.len())
        }
        Hello::Complete { sni: Some(s) } => {
            assert!(!s.is_empty());
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_graphic() && !c.is_ascii_uppercase()),
                "{s:?}"
            );
        }
        Hello::Complete { sni: None } | Hello::Invalid(_) => {}
    }
    if let Hello::Complete { .. } = hello {
        let step = (data.len() / 16).max(1);
        for cut in (0..data.len()).step_by(step) {
            if let Hello::Invalid(why) = parse(&data[..cut]) {
                panic!("a complete ClientHello cut at {cut} reads as invalid: {why}");
            }
        }
    }
    match classify(data) {
        // Waiting for more: an incomplete ClientHello (or nothing at all yet).
        None => assert!(
            matches!(hello, Hello::Incomplete(_)) && matches!(data.first(), None | Some(0x16))
        ),
        Some(Detected::Tls { sni }) => assert_eq!(hello, Hello::Complete { sni }),
        Some(Detected::Http) => {
            assert!(data[0].is_ascii_uppercase() || data[0] == b'\r' || data[0] == b'\n')
        }
        Some(_) => {}
    }

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if let Ok(httparse::Status::Complete(n)) = req.parse(data) {
        assert!(n <= data.len());
        let _ = (req.method, req.path, req.version);
        for h in req.headers.iter() {
            let _ = (h.name.len(), h.value.len());
        }
    }
});
