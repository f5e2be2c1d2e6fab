//! Tests of the policy module as a whole: parsing, errors with locations, evaluation, examples, schema.

use std::net::{IpAddr, SocketAddr};
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

#[test]
fn parses_full_document() {
    let p = policy(FULL);
    assert_eq!(p.summary(), "2 identities, 2 rules, default allow");
    assert_eq!(p.origin(), "test.yaml");
    assert_eq!(p.dns_refresh(), std::time::Duration::from_secs(30));
    assert_eq!(p.rule_names(), ["allow-local-echo", "deny-rest"]);
    assert_eq!(p.host_names(), ["localhost"]);
    assert_eq!(p.default_verdict(), Verdict::Allow);
    let doc = p.doc();
    let agent = &doc.identities["agent"];
    assert_eq!(agent.uid, Some(IdList(vec![0, 1000])));
    assert_eq!(agent.cgroup.as_ref().unwrap().as_str(), "/interceptor/**");
    assert_eq!(doc.identities["anyone"], Identity::default());
    let rule = &doc.rules[0];
    assert_eq!(rule.name.as_str(), "allow-local-echo");
    assert_eq!(rule.identity, Some(IdentityRef(vec!["agent".into()])));
    assert_eq!(rule.action, Action::Allow);
    assert_eq!(rule.to.len(), 3);
    assert_eq!(rule.to[0].cidr.unwrap().to_string(), "127.0.0.2/32");
    assert_eq!(
        rule.to[0].ports.as_ref().unwrap().to_string(),
        "7000-7010,8080"
    );
    assert_eq!(rule.to[1].host.as_ref().unwrap().as_str(), "localhost");
    assert_eq!(rule.to[2].any, Some(true));
    assert_eq!(rule.reason.as_deref(), Some("echo is fine"));
    assert_eq!(
        doc.rules[1].identity.as_ref().unwrap().0,
        ["agent", "anyone"]
    );
}

#[test]
fn defaults() {
    let p = policy("version: 1\n");
    assert_eq!(p.summary(), "0 identities, 0 rules, default deny");
    assert_eq!(p.dns_refresh(), std::time::Duration::from_secs(60));
    let p = policy("version: 1\nidentities:\nrules:\n");
    assert_eq!(p.summary(), "0 identities, 0 rules, default deny");
    let p = policy(
        "version: 1\nidentities: {a: {}}\nrules: [{name: r, action: deny, to: [{any: true}]}]\n",
    );
    assert_eq!(p.summary(), "1 identity, 1 rule, default deny");
}

#[test]
fn doc_round_trips_through_yaml() {
    let p = policy(FULL);
    let yaml = serde_yaml::to_string(p.doc()).unwrap();
    let again = policy(&yaml);
    assert_eq!(again.doc(), p.doc(), "{yaml}");
}

#[test]
fn from_doc_compiles_without_source() {
    let doc = policy(FULL).doc().clone();
    let p = Policy::from_doc(doc.clone(), "api").unwrap();
    assert_eq!(p.summary(), "2 identities, 2 rules, default allow");
    let mut bad = doc;
    bad.rules[0].identity = Some(IdentityRef(vec!["ghost".into()]));
    let err = Policy::from_doc(bad, "api").unwrap_err();
    assert_eq!(err.line(), None);
    assert!(
        err.to_string()
            .starts_with("api: rules[0].identity: unknown identity \"ghost\""),
        "{err}"
    );
}

// ---- errors, each with its line ------------------------------------------

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

// ---- evaluation ------------------------------------------------------------

#[test]
fn first_match_wins() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: deny-one, action: deny, to: [{cidr: 10.0.0.1}]}\n\
         - {name: allow-net, action: allow, to: [{cidr: 10.0.0.0/8}]}\n\
         - {name: deny-net, action: deny, to: [{cidr: 10.0.0.0/8}]}\n",
    );
    let d = decide(&p, "10.0.0.1:80");
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("deny-one"))
    );
    let d = decide(&p, "10.0.0.2:80");
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Allow, Some("allow-net"))
    );
    assert_eq!(
        d.reason,
        "matched rule allow-net (allow 10.0.0.0/8 all ports)"
    );
}

#[test]
fn default_allow_and_deny() {
    let deny = policy("version: 1\n");
    assert_eq!(
        decide(&deny, "1.1.1.1:443"),
        Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: "no rule matched; default deny".into()
        }
    );
    let allow = policy("version: 1\ndefault: allow\nrules: [{name: no-smtp, action: deny, to: [{any: true, ports: 25}]}]\n");
    let d = decide(&allow, "1.1.1.1:443");
    assert_eq!(
        (d.verdict, d.rule, d.reason.as_str()),
        (Verdict::Allow, None, "no rule matched; default allow")
    );
    assert_eq!(
        decide(&allow, "1.1.1.1:25").rule.as_deref(),
        Some("no-smtp")
    );
}

#[test]
fn reasons() {
    let p = policy(FULL);
    let d = decide(&p, "127.0.0.2:7005");
    assert_eq!(d.reason, "echo is fine");
    let p = policy(
        "version: 1\nrules:\n  - name: allow-local-echo\n    action: allow\n    to:\n      - cidr: 127.0.0.2/32\n        ports: 7000-7010\n      - host: localhost\n        ports: 443\n      - any: true\n",
    );
    assert_eq!(
        decide(&p, "127.0.0.2:7001").reason,
        "matched rule allow-local-echo (allow 127.0.0.2/32 ports 7000-7010)"
    );
    assert_eq!(
        decide(&p, "8.8.8.8:53").reason,
        "matched rule allow-local-echo (allow any address all ports)"
    );
    let d = Decision::own_listener();
    assert_eq!(
        (d.verdict, d.rule, d.reason.as_str()),
        (Verdict::Deny, None, OWN_LISTENER_REASON)
    );
}

#[test]
fn decision_serializes() {
    let d = Decision {
        verdict: Verdict::Allow,
        rule: Some("r".into()),
        reason: "x".into(),
    };
    assert_eq!(
        serde_json::to_string(&d).unwrap(),
        r#"{"verdict":"allow","rule":"r","reason":"x"}"#
    );
    assert_eq!(serde_json::to_string(&Verdict::Deny).unwrap(), r#""deny""#);
}

#[test]
fn ports_restrict_entries() {
    let p = policy(FULL);
    assert!(decide(&p, "127.0.0.2:7000").is_allow());
    assert!(decide(&p, "127.0.0.2:7010").is_allow());
    assert!(decide(&p, "127.0.0.2:8080").is_allow());
    assert!(decide(&p, "10.9.9.9:9999").is_allow()); // any: true, ports 9999
    let d = decide(&p, "127.0.0.2:7011");
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("deny-rest"))
    );
}

#[test]
fn identity_selectors() {
    let p = policy(
        "version: 1\n\
         identities:\n\
         \x20 py: {exe: \"/usr/bin/python3*\"}\n\
         \x20 curl: {comm: \"curl\"}\n\
         \x20 run: {cgroup: \"/interceptor/run-*\"}\n\
         \x20 users: {uid: [1000, 1001]}\n\
         \x20 staff: {gid: 50}\n\
         \x20 both: {uid: 0, comm: \"sh\"}\n\
         rules:\n\
         - {name: py, identity: py, action: allow, to: [{any: true, ports: 1}]}\n\
         - {name: curl, identity: curl, action: allow, to: [{any: true, ports: 2}]}\n\
         - {name: run, identity: run, action: allow, to: [{any: true, ports: 3}]}\n\
         - {name: users, identity: users, action: allow, to: [{any: true, ports: 4}]}\n\
         - {name: staff, identity: staff, action: allow, to: [{any: true, ports: 5}]}\n\
         - {name: both, identity: both, action: allow, to: [{any: true, ports: 6}]}\n\
         - {name: either, identity: [curl, staff], action: allow, to: [{any: true, ports: 7}]}\n",
    );
    let allowed =
        |s: Subject, port: u16| evaluate(&p, &req(s, &format!("10.0.0.1:{port}"))).is_allow();
    let base = subject(); // python3, uid 1000, gid 1000, /interceptor/run-42
    assert!(allowed(base, 1));
    assert!(!allowed(
        Subject {
            exe: Some("/usr/local/bin/python3"),
            ..base
        },
        1
    ));
    assert!(
        !allowed(Subject { exe: None, ..base }, 1),
        "unknown exe never matches an exe glob"
    );
    assert!(!allowed(base, 2));
    assert!(allowed(
        Subject {
            comm: "curl",
            ..base
        },
        2
    ));
    assert!(allowed(base, 3));
    assert!(!allowed(
        Subject {
            cgroup: Some("/interceptor/run-42/child"),
            ..base
        },
        3
    ));
    assert!(!allowed(
        Subject {
            cgroup: Some("/user.slice"),
            ..base
        },
        3
    ));
    assert!(
        !allowed(
            Subject {
                cgroup: None,
                ..base
            },
            3
        ),
        "unknown cgroup never matches"
    );
    assert!(allowed(base, 4));
    assert!(allowed(Subject { uid: 1001, ..base }, 4));
    assert!(!allowed(Subject { uid: 0, ..base }, 4));
    assert!(!allowed(base, 5));
    assert!(allowed(Subject { gid: 50, ..base }, 5));
    assert!(
        !allowed(Subject { uid: 0, ..base }, 6),
        "all fields must match"
    );
    assert!(!allowed(Subject { comm: "sh", ..base }, 6));
    assert!(allowed(
        Subject {
            uid: 0,
            comm: "sh",
            ..base
        },
        6
    ));
    assert!(!allowed(base, 7));
    assert!(allowed(
        Subject {
            comm: "curl",
            ..base
        },
        7
    ));
    assert!(allowed(Subject { gid: 50, ..base }, 7));
}

#[test]
fn ipv4_mapped_destinations_match_v4_cidrs() {
    let p = policy("version: 1\nrules:\n  - {name: v4, action: allow, to: [{cidr: 10.0.0.0/8, ports: 443}]}\n  - {name: v6, action: allow, to: [{cidr: \"fd00::/8\"}]}\n");
    let d = decide(&p, "[::ffff:10.1.2.3]:443");
    assert_eq!(d.rule.as_deref(), Some("v4"));
    assert!(!decide(&p, "[::ffff:11.1.2.3]:443").is_allow());
    assert!(!decide(&p, "[::ffff:10.1.2.3]:80").is_allow());
    // v6 CIDRs
    assert_eq!(decide(&p, "[fd12:3456::1]:80").rule.as_deref(), Some("v6"));
    assert!(!decide(&p, "[fe80::1]:80").is_allow());
    assert!(!decide(&p, "[::1]:443").is_allow());
    // a v4-mapped CIDR in the policy is a v4 CIDR
    let p = policy(
        "version: 1\nrules: [{name: m, action: allow, to: [{cidr: \"::ffff:10.0.0.0/104\"}]}]\n",
    );
    assert!(decide(&p, "10.20.30.40:1").is_allow());
    assert!(decide(&p, "[::ffff:10.20.30.40]:1").is_allow());
}

#[test]
fn unresolved_names_match_nothing() {
    let src = "version: 1\nrules:\n  - {name: api, action: allow, to: [{host: api.example.invalid, ports: 443}, {host: API.example.invalid.}]}\n  - {name: other, action: allow, to: [{host: other.invalid}]}\n";
    let mut p = policy(src);
    assert_eq!(p.host_names(), ["api.example.invalid", "other.invalid"]);
    assert_eq!(p.host_addrs("api.example.invalid"), Some(&[][..]));
    assert!(!decide(&p, "192.0.2.10:443").is_allow());

    // Fake resolver: never touches the network.
    let res = p.resolve_names_with(|name| match name {
        "api.example.invalid" => Ok(vec![
            "192.0.2.10".parse().unwrap(),
            "::ffff:192.0.2.11".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        ]),
        _ => Err("no such host".into()),
    });
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        res,
        [
            NameResolution {
                name: "api.example.invalid".into(),
                result: Ok(vec![ip("192.0.2.10"), ip("192.0.2.11")]),
            },
            NameResolution {
                name: "other.invalid".into(),
                result: Err("no such host".into()),
            },
        ]
    );
    assert_eq!(decide(&p, "192.0.2.10:443").rule.as_deref(), Some("api"));
    assert_eq!(
        decide(&p, "[::ffff:192.0.2.11]:443").rule.as_deref(),
        Some("api")
    );
    assert_eq!(
        decide(&p, "192.0.2.11:80").rule.as_deref(),
        Some("api"),
        "second entry has no ports"
    );
    assert!(!decide(&p, "192.0.2.12:443").is_allow());

    // A refresh replaces the addresses; a failure clears them (fail closed).
    p.resolve_names_with(|_| Ok(vec![ip("192.0.2.99")]));
    assert!(!decide(&p, "192.0.2.10:443").is_allow());
    assert!(decide(&p, "192.0.2.99:443").is_allow());
    let res = p.resolve_names_with(|_| Ok(vec![]));
    assert_eq!(res[0].result, Err("resolved to no addresses".into()));
    assert!(!decide(&p, "192.0.2.99:443").is_allow());
}

#[test]
fn localhost_resolves_to_loopback() {
    // The only name the tests resolve for real (from /etc/hosts).
    let mut p = policy(
        "version: 1\nrules: [{name: lo, action: allow, to: [{host: localhost, ports: 443}]}]\n",
    );
    let res = p.resolve_names();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].name, "localhost");
    let addrs = res[0].result.clone().expect("localhost resolves");
    assert!(!addrs.is_empty());
    let loopback = [
        "127.0.0.1".parse::<IpAddr>().unwrap(),
        "::1".parse().unwrap(),
    ];
    assert!(addrs.iter().any(|a| loopback.contains(a)), "{addrs:?}");
    assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
    for a in &addrs {
        let d = evaluate(&p, &req(subject(), &SocketAddr::new(*a, 443).to_string()));
        assert_eq!(d.rule.as_deref(), Some("lo"), "{a}");
        let d = evaluate(&p, &req(subject(), &SocketAddr::new(*a, 80).to_string()));
        assert!(!d.is_allow());
    }
}

// ---- files -----------------------------------------------------------------

#[test]
fn examples_load() {
    let dir = repo().join("policies/examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (p, res) = Policy::load_resolved(&path).unwrap_or_else(|e| panic!("{e}"));
            for r in &res {
                assert_eq!(r.name, "localhost", "examples must only use localhost");
                assert!(r.result.is_ok(), "{r:?}");
            }
            seen.push((path.file_name().unwrap().to_string_lossy().into_owned(), p));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "approvals.yaml",
            "demo-http.yaml",
            "demo-postgres.yaml",
            "demo.yaml",
            "deny-all.yaml",
            "egress.yaml",
            "http.yaml",
            "postgres.yaml"
        ]
    );
    let by_name = |n: &str| &seen.iter().find(|s| s.0 == n).expect("listed above").1;
    // The PostgreSQL demo's L4 rule opens its (template) port only.
    let demo_pg = by_name("demo-postgres.yaml");
    assert!(decide(demo_pg, "127.0.0.2:5432").is_allow());
    assert!(!decide(demo_pg, "127.0.0.2:5433").is_allow());

    let demo = by_name("demo.yaml");
    assert_eq!(
        decide(demo, "127.0.0.2:7001").rule.as_deref(),
        Some("allow-echo")
    );
    assert!(decide(demo, "127.0.0.2:7001").is_allow());
    let d = decide(demo, "127.0.0.2:7002");
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("deny-other-ports"))
    );
    let d = decide(demo, "127.0.0.3:7001");
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));

    let deny_all = by_name("deny-all.yaml");
    assert_eq!(deny_all.summary(), "0 identities, 0 rules, default deny");
    assert!(!decide(deny_all, "127.0.0.1:80").is_allow());

    let egress = by_name("egress.yaml");
    assert!(decide(egress, "127.0.10.5:5432").is_allow());
    assert!(!decide(egress, "127.0.10.5:5433").is_allow());
    let other = Subject {
        exe: Some("/usr/bin/curl"),
        ..subject()
    };
    assert!(!evaluate(egress, &req(other, "127.0.10.5:5432")).is_allow());
    for a in egress.host_addrs("localhost").unwrap() {
        assert!(decide(egress, &SocketAddr::new(*a, 443).to_string()).is_allow());
    }
    assert_eq!(
        decide(egress, "127.0.0.1:80").rule.as_deref(),
        Some("deny-rest")
    );
}

#[test]
fn load_reports_missing_file() {
    let err = Policy::load(Path::new("/nonexistent/policy.yaml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.yaml: cannot read policy: "),
        "{err}"
    );
}

/// Every `policies/tests/bad/*.yaml` must fail with the text of its
/// `# expect: ...` comment (and at its `# line: N`, when given); every
/// `policies/tests/good/*.yaml` must load.
#[test]
fn fixtures() {
    let dir = repo().join("policies/tests");
    let mut count = 0;
    for entry in std::fs::read_dir(dir.join("bad")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let comment = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::trim))
        };
        let want =
            comment("expect").unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
        let line = comment("line").map(|l| l.parse::<usize>().unwrap());
        let origin = path.display().to_string();
        let err = match Policy::from_str(&text, &origin) {
            Ok(_) => panic!("{origin}: loaded but should fail with {want:?}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.starts_with(&origin), "{msg}");
        assert!(msg.contains(want), "{origin}: error {msg:?} lacks {want:?}");
        if let Some(line) = line {
            assert_eq!(err.line(), Some(line), "{msg}");
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} bad fixtures");
    for entry in std::fs::read_dir(dir.join("good")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // from_str: names are not resolved, so fixtures may use any name.
        Policy::from_str(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    }
}

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

/// The complete example in policies/README.md is valid.
#[test]
fn readme_example_loads() {
    let readme = std::fs::read_to_string(repo().join("policies/README.md")).unwrap();
    let start = readme
        .find("```yaml\nversion: 1")
        .expect("README has a full example")
        + 8;
    let len = readme[start..].find("```").unwrap();
    let p = Policy::from_str(&readme[start..start + len], "README.md")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.summary(), "1 identity, 2 rules, default deny");
    assert_eq!(
        decide(&p, "127.0.0.2:7003").rule.as_deref(),
        Some("allow-local-echo")
    );
}
