//! What a standing approval (`for_secs`) of an HTTP request covers: the same method, host,
//! path and query, and the same body byte for byte (a body is read before approvers are
//! asked).

use super::http_setup::{status_of, HttpHold};
use super::*;

#[test]
fn a_standing_http_grant_covers_the_same_query_and_only_the_same_body() {
    if !root_or_skip("a_standing_http_grant_covers_the_same_query_and_only_the_same_body") {
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

    // A request with a body: covered again only with the very same body.
    let agent = h.agent("POST", "/v1/echo?dry_run=1", Some(r#"{"amount":1}"#));
    let req = h.pending();
    assert_eq!(
        req["command"],
        "POST api.test/v1/echo?dry_run=1 (body: 12 bytes, application/x-www-form-urlencoded)\n{\"amount\":1}",
        "{req}"
    );
    let d = h.decide(req["id"].as_str().unwrap(), "approve", approve_for);
    assert!(d["note"].is_null(), "{d}");
    assert_eq!(status_of(agent).1, "200");
    let (so, code) = status_of(h.agent("POST", "/v1/echo?dry_run=1", Some(r#"{"amount":1}"#)));
    assert_eq!(code, "200", "the identical body is covered at once: {so}");
    let agent = h.agent("POST", "/v1/echo?dry_run=1", Some(r#"{"amount":99999999}"#));
    let req = h.pending();
    assert!(
        req["command"]
            .as_str()
            .unwrap()
            .ends_with("\n{\"amount\":99999999}"),
        "another body is held again: {req}"
    );
    h.decide(req["id"].as_str().unwrap(), "deny", "");
    assert_eq!(status_of(agent).1, "403");
    let up = h.up.requests();
    assert_eq!(up.len(), 4, "the refused requests never left: {up:?}");
    // One GET and one POST were covered by the grants (audited a moment later).
    wait_for(
        "two uses of standing grants on record",
        Duration::from_secs(10),
        || {
            let n = h
                .env
                .audit()
                .into_iter()
                .filter(|r| r["type"] == "approval" && r["event"] == "approved_by_grant");
            (n.count() == 2).then_some(())
        },
    );
}
