//! The kernel-facing tests. Each prints `PASS name`, `FAIL name: reason` or
//! `SKIP name: reason`; the run ends with exactly one `vm-suite: N passed, M failed, K skipped`.

mod guards;
mod lifecycle;
mod redirect;
mod runner;

use serde_json::Value;

use self::guards::{no_kernel_record, not_looped_back, own_listener};
use self::lifecycle::{cleanup_after_run, fail_closed};
use self::redirect::{
    child_process, denied_destination, redirect_mapped, redirect_v4, redirect_v6, tcp_fast_open,
};
pub use self::runner::{run, Options};
use crate::check;
use crate::harness::{Env, Fail, TestResult};
use crate::probe::ProbeResult;

type TestFn = fn(&Env) -> TestResult;

/// Every test, in the order they run.
const TESTS: &[(&str, TestFn)] = &[
    ("redirect_v4_allowed_identity_getpeername", redirect_v4),
    ("denied_destination_reset_not_reached", denied_destination),
    ("redirect_v6", redirect_v6),
    ("redirect_v4_mapped_matches_v4_rule", redirect_mapped),
    ("child_process_covered", child_process),
    ("tcp_fast_open_redirected", tcp_fast_open),
    ("listener_without_kernel_record_reset", no_kernel_record),
    ("connect_to_proxy_listener_denied", own_listener),
    ("proxy_upstream_not_looped_back", not_looped_back),
    ("fail_closed_after_sigkill_and_cleanup", fail_closed),
    ("cleanup_after_normal_run", cleanup_after_run),
    (
        "udp_unlisted_port_denied",
        crate::bypass::udp_unlisted_port_denied,
    ),
    (
        "dns_proxied_reply_source_restored",
        crate::bypass::dns_proxied_reply_source_restored,
    ),
    ("raw_socket_denied", crate::bypass::raw_socket_denied),
    ("packet_socket_denied", crate::bypass::packet_socket_denied),
];
fn allow_policy(rules: &[(&str, &str, u16)]) -> String {
    let mut y = String::from("version: 1\nrules:\n");
    for (name, cidr, port) in rules {
        y.push_str(&format!(
            "  - name: {name}\n    action: allow\n    to:\n      - cidr: {cidr}\n        ports: \"{port}\"\n"
        ));
    }
    y.push_str("default: deny\n");
    y
}

fn only_record(env: &Env) -> Result<Value, Fail> {
    let recs = env.connections()?;
    check!(
        recs.len() == 1,
        "expected exactly one audit record, got {}: {recs:?}",
        recs.len()
    );
    Ok(recs.into_iter().next().expect("one"))
}

fn expect_ok(r: &ProbeResult, reply: &str, peer: &str) -> TestResult {
    check!(r.ok, "probe failed: {}", r.line());
    check!(
        r.reply.as_deref() == Some(reply),
        "reply {:?}, expected {reply:?}",
        r.reply
    );
    check!(
        r.peer.as_deref() == Some(peer),
        "getpeername shows {:?}, expected the original {peer}",
        r.peer
    );
    Ok(())
}
