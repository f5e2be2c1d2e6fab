//! Masking JSON values with field rules.

use serde_json::json;

use super::*;

#[test]
fn mask_json_nested() {
    let m = masker("detectors: [{kind: all, strategy: redact}]");
    let rules = [
        FieldRule::new("$.users[*].email", Strategy::Redact).unwrap(),
        FieldRule::new("$.users[*].phone", Strategy::PARTIAL).unwrap(),
        FieldRule::new("$..ssn", Strategy::Hash).unwrap(),
        FieldRule::new("meta.owner", Strategy::Redact).unwrap(),
    ];
    let mut v = json!({
        "users": [
            {"id": 1, "email": "a@example.com", "phone": 15552013344i64, "bio": "ip 10.0.0.1",
             "kids": [{"ssn": "078-05-1120"}, {"ssn": null}]},
            {"id": 2, "email": null, "phone": "+1 555 201 9999", "tags": ["x", "call 555-201-3344"]}
        ],
        "meta": {"owner": {"name": "Z"}, "note": "owner z@example.org", "count": 2},
        "ssn": 219099999
    });
    let n = m.mask_json(&mut v, &rules);
    let ssn_hash = |s: &str| {
        let mut out = Vec::new();
        replace::push_hash(&mut out, &m.mac, "ssn", s.as_bytes());
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        v,
        json!({
            "users": [
                {"id": 1, "email": "[REDACTED]", "phone": "****3344", "bio": "ip [REDACTED:ipv4]",
                 "kids": [{"ssn": ssn_hash("078-05-1120")}, {"ssn": null}]},
                {"id": 2, "email": null, "phone": "****9999", "tags": ["x", "call [REDACTED:phone]"]}
            ],
            "meta": {"owner": "[REDACTED]", "note": "owner [REDACTED:email]", "count": 2},
            "ssn": ssn_hash("219099999")
        })
    );
    assert_eq!(n, 9);
    // No rules, no detectors: nothing changes.
    let empty = Masker::new(&MaskingDoc::default(), KEY.to_vec()).unwrap();
    let mut w = json!({"a": ["alice@example.com"]});
    assert_eq!(empty.mask_json(&mut w, &[]), 0);
    assert_eq!(w, json!({"a": ["alice@example.com"]}));
}

#[test]
fn field_rule_yaml() {
    let r: FieldRule =
        serde_yaml::from_str("{path: '$.users[*].card', strategy: partial, keep_last: 2}").unwrap();
    assert_eq!(r.path.as_str(), "$.users[*].card");
    assert_eq!(r.strategy, Strategy::Partial { keep_last: 2 });
    assert!(serde_yaml::from_str::<FieldRule>("{path: '$.a[', strategy: redact}").is_err());
}
