//! HTTP/1 request heads as hyper parses them (`httparse`). The project has no HTTP parser of
//! its own yet; when the HTTP proxy lands, point this target at its request parser.
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
