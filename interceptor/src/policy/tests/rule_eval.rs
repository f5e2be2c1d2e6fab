//! Evaluation of connection rules: first match, defaults, reasons, ports and address families.

use super::*;

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
