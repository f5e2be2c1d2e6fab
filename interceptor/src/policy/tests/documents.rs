//! Loading valid documents: the parsed model, defaults, YAML round trips and `Policy::from_doc`.

use super::*;

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
