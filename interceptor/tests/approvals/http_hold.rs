//! A held HTTP request approved through the API, another denied.

use super::http_setup::{status_of, HttpHold};
use super::*;

#[test]
fn held_http_request_is_approved_through_the_api_and_another_denied() {
    if !root_or_skip("held_http_request_is_approved_through_the_api_and_another_denied") {
        return;
    }
    let h = HttpHold::start("apr-http", 60, |_, _| Vec::new());

    let agent = h.agent("POST", "/v1/echo", Some("first"));
    let req = h.pending();
    assert_eq!(req["protocol"], "http");
    assert_eq!(req["rule"], "hold-echo");
    assert!(
        req["command"]
            .as_str()
            .unwrap()
            .starts_with("POST api.test/v1/echo"),
        "{req}"
    );
    assert!(
        h.up.requests().is_empty(),
        "nothing reached the upstream while held"
    );
    let id = req["id"].as_str().unwrap();
    let d = h.decide(id, "approve", "");
    assert_eq!(d["request"]["state"], "approved", "{d}");
    let (so, code) = status_of(agent);
    assert_eq!(code, "200", "{so}");
    assert_eq!(h.up.requests().len(), 1);

    let agent = h.agent("POST", "/v1/echo", Some("second"));
    let id = h.pending()["id"].as_str().unwrap().to_owned();
    h.decide(&id, "deny", r#"{"reason": "no more echoes"}"#);
    let (so, code) = status_of(agent);
    assert_eq!(code, "403", "{so}");
    assert!(
        so.contains("denied by carol") && so.contains("no more echoes"),
        "{so}"
    );
    assert_eq!(h.up.requests().len(), 1, "the denied request never left");
}
