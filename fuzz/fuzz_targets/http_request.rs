//! HTTP/1 request heads as hyper parses them (`httparse`). This branch has no HTTP code of
//! its own yet. When the HTTP proxy (branch `http`, served by hyper) is merged, also feed
//! the same bytes to its hand-written first-bytes parsers, which are the project's own
//! attack surface: `interceptor::protocols::http::detect::classify(data)` (HTTP request line
//! vs TLS ClientHello) and `interceptor::protocols::http::sni::parse(data)` (ClientHello SNI).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
