//! Masking JSON values with field rules (documents written by `json!`, compared as values).

use serde_json::{json, Value};

use super::*;

/// `v` written out, masked as text, and read back; the number of values masked.
fn mask_doc(m: &Masker, v: &mut Value, rules: &[FieldRule]) -> usize {
    let text = v.to_string();
    match m.mask_json_text(text.as_bytes(), rules).unwrap() {
        None => 0,
        Some((out, n)) => {
            *v = serde_json::from_slice(&out).unwrap();
            n
        }
    }
}

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
    let n = mask_doc(&m, &mut v, &rules);
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
    assert_eq!(mask_doc(&empty, &mut w, &[]), 0);
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

#[test]
fn object_keys_are_scanned_and_never_merged() {
    let m = masker("detectors: [{kind: all, strategy: redact}]");
    let mut v = json!({
        "a@example.com": 1,
        "b@example.com": 2,
        "123-45-6789": {"note": "x", "c@example.org": "y"},
        "[REDACTED:us_ssn]": "was there before",
        "plain": "z"
    });
    let n = mask_doc(&m, &mut v, &[]);
    assert_eq!(
        v,
        json!({
            "[REDACTED:email]": 1,
            "[REDACTED:email]#2": 2,
            "[REDACTED:us_ssn]": "was there before",
            "[REDACTED:us_ssn]#2": {"note": "x", "[REDACTED:email]": "y"},
            "plain": "z"
        })
    );
    assert_eq!(n, 4, "every masked key counts");
    // Field rules see the keys as they came.
    let rules = [FieldRule::new("$['d@example.com']", Strategy::Redact).unwrap()];
    let mut w = json!({"d@example.com": "v"});
    assert_eq!(mask_doc(&m, &mut w, &rules), 2);
    assert_eq!(w, json!({"[REDACTED:email]": "[REDACTED]"}));
}

#[test]
fn field_paths_ignore_ascii_case_and_mask_numbers() {
    let m = Masker::new(&MaskingDoc::default(), KEY.to_vec()).unwrap();
    let rules = [
        FieldRule::new("$..ssn", Strategy::Redact).unwrap(),
        FieldRule::new("$.Users[*].Phone", Strategy::PARTIAL).unwrap(),
    ];
    let mut v = json!({
        "SSN": "078-05-1120",
        "person": {"Ssn": 219099999, "sSN": 1.5},
        "users": [{"PHONE": 15552013344i64}],
        "ssnx": "kept"
    });
    assert_eq!(mask_doc(&m, &mut v, &rules), 4);
    assert_eq!(
        v,
        json!({
            "SSN": "[REDACTED]",
            "person": {"Ssn": "[REDACTED]", "sSN": "[REDACTED]"},
            "users": [{"PHONE": "****3344"}],
            "ssnx": "kept"
        })
    );
}
