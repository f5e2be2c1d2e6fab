//! Load errors, each with its message and line (and column where it matters).

use super::*;

#[test]
fn error_empty_file() {
    for src in ["", "\n\n", "# just a comment\n", "---\n"] {
        let err = assert_err(src, "the policy is empty", None);
        assert!(err.to_string().starts_with("test.yaml: "), "{err}");
    }
}

#[test]
fn error_version() {
    assert_err(
        "default: deny\nversion: 2\n",
        "version: unsupported policy version 2",
        Some(2),
    );
    assert_err("version: -1\n", "unsupported policy version -1", Some(1));
    assert_err("version: \"1\"\n", "expected the version number 1", Some(1));
    assert_err(
        "version: 1\ndns_refresh_secs: -5\n",
        "dns_refresh_secs must be at least 1, not -5",
        Some(2),
    );
    assert_eq!(
        policy("version: 1\ndns_refresh_secs: 5\n")
            .dns_refresh()
            .as_secs(),
        5
    );
    assert_err("default: deny\n", "missing field `version`", Some(1));
}

#[test]
fn error_unknown_fields() {
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to:\n      - cidr: 10.0.0.0/8\n        port: 443\n",
        "rules[0].to[0]: unknown field `port`, expected one of `cidr`, `host`, `any`, `ports`",
        Some(7),
    );
    assert_err(
        "version: 1\nidentities:\n  a:\n    pid: 3\n",
        "identities.a: unknown field `pid`, expected one of",
        Some(4),
    );
    assert_err(
        "version: 1\nrule: []\n",
        "unknown field `rule`, expected one of",
        Some(2),
    );
}

#[test]
fn error_bad_cidr_has_line_and_column() {
    let src = "version: 1\nrules:\n  - name: a\n    action: allow\n    to:\n\n      - cidr: \"10.0.0.0/33\"\n";
    let err = assert_err(
        src,
        r#"rules[0].to[0].cidr: "10.0.0.0/33" is not a valid CIDR (prefix length must be 0..=32 for IPv4)"#,
        Some(7),
    );
    assert_eq!(err.column(), Some(15));
    assert_eq!(
        err.to_string(),
        r#"test.yaml:7:15: rules[0].to[0].cidr: "10.0.0.0/33" is not a valid CIDR (prefix length must be 0..=32 for IPv4)"#
    );
}

#[test]
fn error_ports() {
    let rule = |ports: &str| {
        format!("version: 1\nrules:\n  - name: a\n    action: allow\n    to:\n      - any: true\n        ports: {ports}\n")
    };
    assert_err(&rule("0"), "port 0 is not allowed", Some(7));
    assert_err(&rule("65536"), "port 65536 is out of range", Some(7));
    assert_err(&rule("\"80,70000\""), "port 70000 is out of range", Some(7));
    assert_err(
        &rule("9000-8000"),
        "port range 9000-8000 is reversed",
        Some(7),
    );
    assert_err(
        &rule("[80, 0]"),
        "rules[0].to[0].ports[1]: port 0 is not allowed",
        Some(7),
    );
    assert_err(
        &rule("\n          - 80\n          - 99999"),
        "port 99999",
        Some(9),
    );
    assert_err(&rule("[]"), "empty port list", Some(7));
    assert_err(&rule("https"), "\"https\" is not a port number", Some(7));
}

#[test]
fn error_rule_structure() {
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n",
        "rules[0]: missing field `to`",
        Some(3),
    );
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to: []\n",
        "rules[0].to: a rule needs at least one destination",
        Some(5),
    );
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to:\n",
        "a rule needs at least one destination",
        Some(5),
    );
    assert_err(
        "version: 1\nrules:\n  - name: a\n    to: [{any: true}]\n",
        "rules[0]: missing field `action`",
        Some(3),
    );
    assert_err(
        "version: 1\nrules:\n  - action: deny\n    to: [{any: true}]\n",
        "missing field `name`",
        Some(3),
    );
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to:\n      - {cidr: 10.0.0.0/8, any: true}\n",
        "rules[0].to[0]: a destination takes exactly one of `cidr`, `host` or `any`, found cidr and any",
        Some(6),
    );
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to:\n      - ports: 80\n",
        "a destination needs one of",
        Some(6),
    );
}

#[test]
fn error_duplicate_fields() {
    assert_err(
        "version: 1\ndefault: allow\n\ndefault: deny\n",
        "duplicate field `default`",
        Some(4),
    );
    let err = assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to: [{any: true}]\n    action: deny\n",
        "rules[0]: duplicate field `action`",
        Some(6),
    );
    assert_eq!(err.column(), Some(5));
}

#[test]
fn error_duplicate_names() {
    assert_err(
        "version: 1\nrules:\n  - name: x\n    action: allow\n    to: [{any: true}]\n  - name: y\n    action: allow\n    to: [{any: true}]\n  - name: x\n    action: deny\n    to: [{any: true}]\n",
        "rules[2]: duplicate rule name \"x\" (already used by rules[0])",
        Some(9),
    );
    assert_err(
        "version: 1\nidentities:\n  a: {uid: 1}\n  b: {uid: 2}\n  a: {uid: 3}\n",
        "identities: duplicate identity name \"a\"",
        Some(5),
    );
}

#[test]
fn error_unknown_identity() {
    let src = "\
version: 1
identities:
  agent: {}
rules:
  - name: first
    identity: agent
    action: allow
    to: [{any: true}]
  - name: second
    action: allow
    identity: agnet
    to: [{any: true}]
";
    let err = assert_err(
        src,
        "rules[1].identity: unknown identity \"agnet\" in rule \"second\" (defined identities: agent)",
        Some(11),
    );
    assert_eq!(err.column(), Some(15));
    // identities after rules are fine; an unknown one in a list is found
    let src = "\
version: 1
rules:
  - name: r
    identity: [a, b]
    action: allow
    to: [{any: true}]
identities:
  a: {}
";
    let err = assert_err(src, "unknown identity \"b\"", Some(4));
    assert_eq!(err.column(), Some(19));
}

#[test]
fn error_hold_and_actions() {
    assert_err(
        "version: 1\nrules:\n  - name: a\n    action: hold\n    to: [{any: true}]\n",
        "rules[0].action: action `hold` applies to statements and requests",
        Some(4),
    );
    assert_err(
        "version: 1\ndefault: hold\n",
        "default: action `hold` applies to statements and requests",
        Some(2),
    );
    assert_err(
        "version: 1\ndefault: Deny\n",
        "unknown action \"Deny\", expected `allow` or `deny`",
        Some(2),
    );
}

#[test]
fn error_globs_and_identities() {
    assert_err(
        "version: 1\nidentities:\n  a:\n    exe: \"/usr/bin/{python\"\n",
        "identities.a.exe: invalid glob \"/usr/bin/{python\"",
        Some(4),
    );
    assert_err(
        "version: 1\nidentities:\n  a:\n    comm: \"[x\"\n",
        "identities.a.comm: invalid glob",
        Some(4),
    );
    assert_err(
        "version: 1\nidentities:\n  a:\n    cgroup: \"\"\n",
        "must start with '/'",
        Some(4),
    );
    assert_err(
        "version: 1\nidentities:\n  a:\n    uid: 4294967296\n",
        "id 4294967296 is out of range",
        Some(4),
    );
    assert_err(
        "version: 1\nidentities:\n  a:\n    uid: []\n",
        "empty id list",
        Some(4),
    );
    assert_err(
        "version: 1\nrules:\n  - name: a\n    identity: []\n    action: allow\n    to: [{any: true}]\n",
        "empty identity list",
        Some(4),
    );
    assert_err(
        "version: 1\nidentities:\n  a b: {}\n",
        "identity name \"a b\" contains ' '",
        Some(3),
    );
}

#[test]
fn error_yaml_syntax() {
    let err = assert_err(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    to: [{any: true}]\n   bad: 1\n",
        "did not find expected '-' indicator",
        Some(6),
    );
    assert_eq!(err.column(), Some(4));
    assert_err(
        "version: 1\nrules: [{name: a\n",
        "did not find expected",
        Some(3),
    );
    assert_err("version: 1\n\tdefault: deny\n", "", Some(2));
    assert_err("[1, 2]\n", "expected a policy mapping", Some(1));
}
