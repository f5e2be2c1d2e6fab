//! Root tests of the transparent capture path on the real kernel: redirect, identity,
//! policy, getpeername, fail-closed, no loops, reload, cleanup.
//!
//! Upstreams listen on 127.0.0.2 and ::1 (never the proxy's own 127.0.0.1 listener address
//! and port); no traffic leaves loopback.

#[path = "../support/mod.rs"]
mod support;

mod daemon;
mod listener;
mod redirect;
mod run;

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;

fn allow_policy(rules: &[(&str, &str, u16)]) -> String {
    let mut y = String::from("version: 1\nrules:\n");
    for (name, cidr, port) in rules {
        y.push_str(&format!("  - name: {name}\n    action: allow\n    to:\n      - cidr: {cidr}\n        ports: \"{port}\"\n"));
    }
    y.push_str("default: deny\n");
    y
}

fn connection_records(env: &Env) -> Vec<Value> {
    env.audit()
        .into_iter()
        .filter(|r| r["type"] == "connection")
        .collect()
}
