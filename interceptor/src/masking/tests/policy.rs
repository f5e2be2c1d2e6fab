//! The YAML policy document, its JSON schema and `Masker` construction.

use super::*;

const SPEC_YAML: &str = r#"
key_env: INTERCEPTOR_MASK_KEY
columns:
  - match: "users.email"
    strategy: redact
  - match: "*phone*"
    strategy: partial
    keep_last: 4
detectors:
  - kind: email
    strategy: redact
  - kind: credit_card
    strategy: partial
    keep_last: 4
"#;

#[test]
fn yaml_shape() {
    let d = doc(SPEC_YAML);
    assert_eq!(
        d,
        MaskingDoc {
            key_env: Some("INTERCEPTOR_MASK_KEY".into()),
            key_file: None,
            columns: vec![
                ColumnRule {
                    pattern: "users.email".into(),
                    strategy: Strategy::Redact,
                },
                ColumnRule {
                    pattern: "*phone*".into(),
                    strategy: Strategy::Partial { keep_last: 4 },
                },
            ],
            detectors: vec![
                DetectorRule {
                    kind: DetectorKind::Email,
                    strategy: Strategy::Redact,
                },
                DetectorRule {
                    kind: DetectorKind::CreditCard,
                    strategy: Strategy::PARTIAL,
                },
            ],
        }
    );
    // Round trip.
    let back: MaskingDoc = serde_yaml::from_str(&serde_yaml::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);
    // partial without keep_last: 4.
    let d =
        doc("columns: [{match: a, strategy: partial}]\ndetectors: [{kind: all, strategy: hash}]");
    assert_eq!(d.columns[0].strategy, Strategy::Partial { keep_last: 4 });
    assert_eq!(d.detectors[0].kind, DetectorKind::All);
    assert_eq!(d.detectors[0].strategy, Strategy::Hash);
}

#[test]
fn yaml_errors() {
    for (yaml, want) in [
        (
            "columns: [{match: a, strategy: redact, keep_last: 2}]",
            "keep_last",
        ),
        (
            "columns: [{match: a, strategy: nullify}]",
            "unknown variant",
        ),
        (
            "columns: [{match: a, strategy: redact, extra: 1}]",
            "unknown field",
        ),
        ("columns: [{match: 'users.', strategy: redact}]", "empty"),
        ("columns: [{match: 'a[', strategy: redact}]", "a["),
        (
            "detectors: [{kind: passport, strategy: redact}]",
            "unknown variant",
        ),
        (
            "detectors: [{kind: email, strategy: partial, keep_last: 1000}]",
            "too large",
        ),
        ("colums: []", "unknown field"),
    ] {
        let err = serde_yaml::from_str::<MaskingDoc>(yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{yaml}: {err}");
    }
}

#[test]
fn json_schema_lists_the_fields() {
    let schema = serde_json::to_string(&schemars::schema_for!(MaskingDoc)).unwrap();
    for word in [
        "key_env",
        "key_file",
        "\"match\"",
        "keep_last",
        "credit_card",
        "private_key",
    ] {
        assert!(schema.contains(word), "{word} missing from {schema}");
    }
}

#[test]
fn masker_errors_and_emptiness() {
    let d = doc("detectors: [{kind: email, strategy: redact}, {kind: email, strategy: hash}]");
    assert!(matches!(
        Masker::new(&d, KEY.to_vec()),
        Err(MaskingError::DuplicateDetector("email"))
    ));
    assert!(Masker::new(&MaskingDoc::default(), Vec::new())
        .unwrap()
        .is_empty());
    assert!(!masker("columns: [{match: a, strategy: redact}]").is_empty());
    assert!(!masker("detectors: [{kind: ipv4, strategy: redact}]").is_empty());
    fn shared<T: Send + Sync>() {}
    shared::<Masker>();
    shared::<ColumnPlan>();
}
