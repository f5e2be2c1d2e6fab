//! What a standing approval (`for_secs`) of an HTTP request covers: the same method, host,
//! path and query without a body; never a request with a body.

use super::http_setup::{status_of, HttpHold};
use super::*;

#[test]
fn a_standing_http_grant_covers_the_same_query_and_never_a_body() {
    if !root_or_skip("a_standing_http_grant_covers_the_same_query_and_never_a_body") {
        return;
    }
    let h = HttpHold::start("apr-http-grant", 60, |_, _| Vec::new());
    let approve_for = r#"{"reason": "reports today", "for_secs": 600}"#;

    let agent = h.agent("GET", "/v1/report?day=1", None);
    let req = h.pending();
    assert_eq!(req["command"], "GET api.test/v1/report?day=1", "{req}");
    let d = h.decide(req["id"].as_str().unwrap(), "approve", approve_for);
    assert!(d["note"].is_null(), "{d}");
    assert_eq!(status_of(agent).1, "200");
    // The same request again: covered at once.
    assert_eq!(status_of(h.agent("GET", "/v1/report?day=1", None)).1, "200");
    // Another query is not.
    let agent = h.agent("GET", "/v1/report?day=2&all=1", None);
    let req = h.pending();
    assert_eq!(req["command"], "GET api.test/v1/report?day=2&all=1");
    h.decide(req["id"].as_str().unwrap(), "deny", "");
    assert_eq!(status_of(agent).1, "403");

    // A request with a body is approved once only, whatever `for_secs` says.
    let agent = h.agent("POST", "/v1/echo?dry_run=1", Some(r#"{"amount":1}"#));
    let req = h.pending();
    assert_eq!(
        req["command"], "POST api.test/v1/echo?dry_run=1 (body: 12 bytes, not shown)",
        "{req}"
    );
    let d = h.decide(req["id"].as_str().unwrap(), "approve", approve_for);
    assert!(
        d["note"].as_str().unwrap_or("").contains("once only"),
        "{d}"
    );
    assert_eq!(status_of(agent).1, "200");
    let agent = h.agent("POST", "/v1/echo?dry_run=1", Some(r#"{"amount":99999999}"#));
    let req = h.pending();
    h.decide(req["id"].as_str().unwrap(), "deny", "");
    assert_eq!(status_of(agent).1, "403");
    assert_eq!(h.up.requests().len(), 3, "the refused requests never left");
}
