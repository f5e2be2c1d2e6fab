//! Tests of the policy module as a whole: parsing, errors with locations, evaluation, examples, schema.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;

fn parse(src: &str) -> Result<Policy, PolicyError> {
    Policy::from_str(src, "test.yaml")
}

fn policy(src: &str) -> Policy {
    parse(src).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the error message contains `want` and is at `line` (1-based).
#[track_caller]
fn assert_err(src: &str, want: &str, line: Option<usize>) -> PolicyError {
    let err = match parse(src) {
        Ok(_) => panic!("expected an error containing {want:?}"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(text.contains(want), "error {text:?} lacks {want:?}");
    assert_eq!(err.line(), line, "wrong line in {text:?}");
    if let (Some(l), Some(c)) = (err.line(), err.column()) {
        let suffix = format!(" at line {l} column {c}");
        assert!(
            !text.contains(&suffix),
            "location not moved to front: {text:?}"
        );
    }
    err
}

fn subject<'a>() -> Subject<'a> {
    Subject {
        cgroup: Some("/interceptor/run-42"),
        uid: 1000,
        gid: 1000,
        exe: Some("/usr/bin/python3.12"),
        comm: "python3",
        token: None,
    }
}

fn req<'a>(subject: Subject<'a>, dst: &str) -> ConnRequest<'a> {
    ConnRequest {
        subject,
        dst: dst.parse::<SocketAddr>().unwrap(),
    }
}

fn decide(p: &Policy, dst: &str) -> Decision {
    evaluate(p, &req(subject(), dst))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const FULL: &str = r#"
version: 1
dns_refresh_secs: 30
identities:
  agent:
    cgroup: "/interceptor/**"
    uid: [0, 1000]
    exe: "/usr/bin/python3*"
    comm: "python3"
  anyone: {}
rules:
  - name: allow-local-echo
    identity: agent
    action: allow
    to:
      - cidr: 127.0.0.2/32
        ports: "7000-7010,8080"
      - host: localhost
        ports: [443]
      - any: true
        ports: 9999
    reason: "echo is fine"
  - name: deny-rest
    identity: [agent, anyone]
    action: deny
    to: [{any: true}]
default: allow
"#;

// `schema_file_is_current` stays here: policies/README.md and its failure message
// name it as `policy::tests::schema_file_is_current`.

#[test]
fn schema_file_is_current() {
    let path = repo().join("policies/policy.schema.json");
    let schema = json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(&path, &schema).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == schema,
        "{} is out of date; regenerate it with\n  UPDATE_SCHEMA=1 cargo test -p interceptor --lib policy::tests::schema_file_is_current",
        path.display()
    );
}

#[test]
fn schema_describes_the_format() {
    let v: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    assert_eq!(v["additionalProperties"], false);
    assert_eq!(v["required"], serde_json::json!(["version"]));
    for def in ["Rule", "Identity", "Destination"] {
        assert_eq!(
            v["definitions"][def]["additionalProperties"], false,
            "{def}"
        );
    }
    assert_eq!(
        v["definitions"]["Action"]["enum"],
        serde_json::json!(["allow", "deny"])
    );
    assert_eq!(v["definitions"]["Rule"]["properties"]["to"]["minItems"], 1);
}

mod documents;
mod identity_match;
mod load_errors;
mod name_resolution;
mod policy_files;
mod rule_eval;
