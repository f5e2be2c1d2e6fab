//! Engine tests of `Masker`: policy parsing, strategies, column plans, JSON, realistic rows and a micro-benchmark.

use std::time::Instant;

use serde_json::json;

use super::*;

const KEY: &[u8] = b"test-key-0123456789abcdef";

fn doc(yaml: &str) -> MaskingDoc {
    serde_yaml::from_str(yaml).unwrap()
}

fn masker(yaml: &str) -> Masker {
    Masker::new(&doc(yaml), KEY.to_vec()).unwrap()
}

fn text(m: &Masker, t: &str) -> String {
    m.mask_text(t).map_or_else(|| t.to_owned(), |(s, _)| s)
}

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

#[test]
fn all_with_overrides() {
    let m = masker(
        "detectors:
  - kind: all
    strategy: redact
  - kind: email
    strategy: partial",
    );
    assert_eq!(
        text(&m, "a@example.com 10.1.2.3 078-05-1120"),
        "a***@example.com [REDACTED:ipv4] [REDACTED:us_ssn]"
    );
    // Kinds that are not enabled are left alone.
    let m = masker("detectors: [{kind: email, strategy: redact}]");
    assert_eq!(
        text(&m, "a@example.com 10.1.2.3"),
        "[REDACTED:email] 10.1.2.3"
    );
}

#[test]
fn detector_strategies() {
    let redact = masker("detectors: [{kind: all, strategy: redact}]");
    let partial = masker("detectors: [{kind: all, strategy: partial}]");
    let partial2 = masker("detectors: [{kind: all, strategy: partial, keep_last: 2}]");
    let hash = masker("detectors: [{kind: all, strategy: hash}]");
    let cases = [
        (
            "alice@example.com",
            "[REDACTED:email]",
            "a***@example.com",
            "a***@example.com",
        ),
        ("(555) 201-3344", "[REDACTED:phone]", "****3344", "****44"),
        (
            "4111 1111 1111 1111",
            "[REDACTED:credit_card]",
            "****1111",
            "****11",
        ),
        ("078-05-1120", "[REDACTED:us_ssn]", "****1120", "****20"),
        (
            "GB82 WEST 1234 5698 7654 32",
            "[REDACTED:iban]",
            "****5432",
            "****32",
        ),
        ("192.168.10.42", "[REDACTED:ipv4]", "****0.42", "****42"),
        ("2001:db8::7334", "[REDACTED:ipv6]", "****7334", "****34"),
        (
            "AKIAIOSFODNN7EXAMPLE",
            "[REDACTED:api_key]",
            "****MPLE",
            "****LE",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
            "[REDACTED:private_key]",
            "[REDACTED:private_key]",
            "[REDACTED:private_key]",
        ),
    ];
    for (input, r, p, p2) in cases {
        assert_eq!(text(&redact, input), r, "{input:?}");
        assert_eq!(text(&partial, input), p, "{input:?}");
        assert_eq!(text(&partial2, input), p2, "{input:?}");
        let h = text(&hash, input);
        let kind = r["[REDACTED:".len()..r.len() - 1].to_owned();
        assert!(h.starts_with(&format!("{kind}_")), "{h}");
        assert_eq!(h.len(), kind.len() + 17, "{h}");
    }
}

#[test]
fn hash_is_stable_keyed_and_normalized() {
    let yaml = "detectors: [{kind: all, strategy: hash}]";
    let a = masker(yaml);
    let b = masker(yaml);
    let other = Masker::new(&doc(yaml), b"another-key-0123456789".to_vec()).unwrap();
    let t = "mail Alice@Example.com now";
    assert_eq!(text(&a, t), text(&b, t));
    assert_ne!(text(&a, t), text(&other, t));
    assert!(text(&a, t).starts_with("mail email_"));
    // Same value, other formatting: same pseudonym.
    assert_eq!(text(&a, "alice@example.com"), text(&a, "ALICE@EXAMPLE.COM"));
    assert_eq!(text(&a, "555-201-3344"), text(&a, "555.201.3344"));
    assert_eq!(
        text(&a, "4111 1111 1111 1111"),
        text(&a, "4111111111111111")
    );
    assert_ne!(text(&a, "555-201-3344"), text(&a, "555-201-3345"));
    // HMAC-SHA256(KEY, "alice@example.com"), first 8 bytes (checked with Python hmac).
    assert_eq!(text(&a, "alice@example.com"), "email_c27873e513dd9cae");
    // An empty key gets a random one.
    let r1 = Masker::new(&doc(yaml), Vec::new()).unwrap();
    let r2 = Masker::new(&doc(yaml), Vec::new()).unwrap();
    assert_ne!(text(&r1, t), text(&r2, t));
}

fn cols<'a>(spec: &[(Option<&'a str>, &'a str, bool)]) -> Vec<ColumnRef<'a>> {
    spec.iter()
        .map(|&(table, name, text_like)| ColumnRef {
            table,
            name,
            text_like,
        })
        .collect()
}

fn masked(
    m: &Masker,
    plan: &ColumnPlan,
    i: usize,
    v: &str,
) -> Option<(String, &'static str, bool)> {
    m.mask_value(plan, i, v.as_bytes())
        .map(|x| (String::from_utf8(x.bytes).unwrap(), x.kind, x.requires_text))
}

#[test]
fn column_rules_and_plan() {
    let m = masker(
        r#"
columns:
  - match: users.email
    strategy: redact
  - match: "*phone*"
    strategy: partial
    keep_last: 4
  - match: "*.contact"
    strategy: partial
  - match: "*ssn*"
    strategy: hash
detectors:
  - kind: all
    strategy: redact
"#,
    );
    let c = cols(&[
        (Some("users"), "email", true),        // 0: users.email
        (Some("orders"), "email", true),       // 1: no rule -> detectors
        (Some("users"), "mobile_phone", true), // 2: *phone*
        (None, "tax_ssn", false),              // 3: *ssn*, binary
        (Some("users"), "id", false),          // 4: nothing
        (None, "email", true),                 // 5: unknown table -> users.email
        (Some("leads"), "contact", true),      // 6: *.contact
        (Some("users"), "note", false),        // 7: not text: no detectors
    ]);
    let plan = m.plan(&c);
    assert_eq!(plan.len(), 8);
    assert!(!plan.is_noop());
    assert!(plan.has_rule(0) && !plan.has_rule(1) && plan.has_rule(3) && !plan.has_rule(4));
    assert!(plan.requires_text(3) && !plan.requires_text(0) && !plan.requires_text(4));

    assert_eq!(
        masked(&m, &plan, 0, "alice@example.com"),
        Some(("[REDACTED]".into(), "column:users.email", false))
    );
    assert_eq!(
        masked(&m, &plan, 1, "bob@example.com"),
        Some(("[REDACTED:email]".into(), "email", false))
    );
    assert_eq!(masked(&m, &plan, 1, "no pii here"), None);
    assert_eq!(
        masked(&m, &plan, 2, "+1 555 201 3344"),
        Some(("****3344".into(), "column:*phone*", false))
    );
    let (h, kind, requires_text) = masked(&m, &plan, 3, "123456789").unwrap();
    assert!(
        h.starts_with("tax_ssn_") && h.len() == "tax_ssn_".len() + 16,
        "{h}"
    );
    assert_eq!((kind, requires_text), ("column:*ssn*", true));
    assert_eq!(masked(&m, &plan, 4, "alice@example.com"), None);
    assert_eq!(
        masked(&m, &plan, 5, "x").map(|x| x.1),
        Some("column:users.email")
    );
    // A column partial keeps an email's domain.
    assert_eq!(
        masked(&m, &plan, 6, "carol@example.net").unwrap().0,
        "c***@example.net"
    );
    assert_eq!(masked(&m, &plan, 6, "Carol Smith").unwrap().0, "****mith");
    // Not text-like, no rule: detectors do not run.
    assert_eq!(masked(&m, &plan, 7, "alice@example.com"), None);
    // Past the plan.
    assert_eq!(masked(&m, &plan, 8, "alice@example.com"), None);

    // Binary values under a column rule.
    let binary = [0u8, 0, 1, 0xff, 0x80];
    let r = m.mask_value(&plan, 3, &binary).unwrap();
    assert!(r.requires_text && std::str::from_utf8(&r.bytes).is_ok());
    let p = m.plan(&cols(&[(Some("users"), "home_phone", false)]));
    assert_eq!(m.mask_value(&p, 0, &binary).unwrap().bytes, b"****");
    assert_eq!(
        m.mask_value(&p, 0, b"5552013344").unwrap().bytes,
        b"****3344"
    );
}

#[test]
fn plan_noop() {
    let m = masker("columns: [{match: users.email, strategy: redact}]");
    let plan = m.plan(&cols(&[
        (Some("orders"), "total", true),
        (Some("orders"), "email", true),
    ]));
    assert!(plan.is_noop());
    assert_eq!(masked(&m, &plan, 1, "alice@example.com"), None);
    let m = masker("detectors: [{kind: email, strategy: redact}]");
    assert!(m.plan(&cols(&[(None, "n", false)])).is_noop());
    assert!(!m.plan(&cols(&[(None, "n", true)])).is_noop());
}

#[test]
fn multiple_matches_and_utf8() {
    let m = masker("detectors: [{kind: all, strategy: redact}, {kind: phone, strategy: partial}]");
    assert_eq!(
        text(&m, "contact alice@example.com or 555-123-4567"),
        "contact [REDACTED:email] or ****4567"
    );
    let r = m.mask_value(
        &m.plan(&cols(&[(None, "notes", true)])),
        0,
        "a@example.com b@example.com 555-123-4567".as_bytes(),
    );
    let r = r.unwrap();
    assert_eq!((r.kind, r.count), ("email", 3));
    assert_eq!(
        text(
            &m,
            "¡Hola! 📞 (555) 123-4567 — ✉️ josé@ejemplo.es…¿vale? 日本 10.0.0.1 ünd"
        ),
        "¡Hola! 📞 ****4567 — ✉️ [REDACTED:email]…¿vale? 日本 [REDACTED:ipv4] ünd"
    );
    assert_eq!(
        text(&m, "カード番号4111111111111111です"),
        "カード番号[REDACTED:credit_card]です"
    );
    // Invalid UTF-8 around a match is passed through byte for byte.
    let plan = m.plan(&cols(&[(None, "raw", true)]));
    let v = b"\xff\xfe a@example.com \xc3";
    assert_eq!(
        m.mask_value(&plan, 0, v).unwrap().bytes,
        b"\xff\xfe [REDACTED:email] \xc3"
    );
    assert_eq!(m.mask_text("nothing to see"), None);
    assert_eq!(
        m.mask_text("a@b.io a@b.io"),
        Some(("[REDACTED:email] [REDACTED:email]".into(), 2))
    );
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

/// The realistic customer table: id, name, email, phone, card_number,
/// ssn, address, notes, created_at, amount.
const COLUMNS: [(&str, bool); 10] = [
    ("id", false),
    ("name", true),
    ("email", true),
    ("phone", true),
    ("card_number", true),
    ("ssn", true),
    ("address", true),
    ("notes", true),
    ("created_at", false),
    ("amount", false),
];

const ROWS: [[&str; 10]; 20] = [
    [
        "1001",
        "Alice Johnson",
        "alice.johnson@example.com",
        "(555) 201-3344",
        "4111 1111 1111 1111",
        "219099999",
        "742 Evergreen Terrace, Springfield, IL 62704",
        "Prefers email contact.",
        "2024-01-15 09:12:44+00",
        "129.99",
    ],
    [
        "1002",
        "Bob Martínez",
        "bob.martinez@mail.example.org",
        "+1 555 310 2290",
        "5500 0000 0000 0004",
        "078051120",
        "1600 Pennsylvania Ave NW, Washington, DC 20500",
        "Called from 555-310-2290 about order #100234567.",
        "2024-01-16 14:03:10+00",
        "45.00",
    ],
    [
        "1003",
        "Chloé Dubois",
        "chloe.dubois@example.fr",
        "+33 1 23 45 67 89",
        "3782 822463 10005",
        "",
        "12 Rue de Rivoli, 75001 Paris",
        "Refund to IBAN FR14 2004 1010 0505 0001 3M02 606",
        "2024-02-01 08:00:00+00",
        "310.50",
    ],
    [
        "1004",
        "Daniel Okafor",
        "d.okafor@example.ng",
        "555.420.1187",
        "6011 1111 1111 1117",
        "",
        "15 Marina Rd, Lagos",
        "VIP since 2019; order ids 123456789, 987654321.",
        "2024-02-03 17:45:21+00",
        "1200.00",
    ],
    [
        "1005",
        "Eva Müller",
        "eva.mueller@example.de",
        "+49 30 901820",
        "4012 8888 8888 1881",
        "",
        "Unter den Linden 77, 10117 Berlin",
        "Pays from DE89 3704 0044 0532 0130 00",
        "2024-02-10 11:11:11+00",
        "89.90",
    ],
    [
        "1006",
        "Fatima Zahra",
        "fatima@example.ma",
        "555-782-0041",
        "5105 1051 0510 5100",
        "",
        "Bd Zerktouni 120, Casablanca",
        "Card on file ends 4242",
        "2024-02-11 09:30:00+00",
        "15.75",
    ],
    [
        "1007",
        "George Smith",
        "george.smith@example.com",
        "(555) 610-7788",
        "4111-1111-1111-1111",
        "",
        "221B Baker St, London NW1 6XE",
        "SSN 123-45-6789 verified by phone",
        "2024-03-01 12:00:00+00",
        "0.00",
    ],
    [
        "1008",
        "Hiro Tanaka 田中",
        "hiro@example.jp",
        "+81-3-1234-5678",
        "3530 1113 3330 0000",
        "",
        "東京都千代田区1-1",
        "日本語メモ：連絡先 hiro.t@example.jp まで",
        "2024-03-02 06:15:00+00",
        "5400.00",
    ],
    [
        "1009",
        "Isabel Costa",
        "isabel.costa@example.pt",
        "+351 912 345 678",
        "",
        "",
        "Rua Augusta 100, Lisboa",
        "Login from 203.0.113.45 at 03:14",
        "2024-03-03 21:14:00+00",
        "77.00",
    ],
    [
        "1010",
        "Jack O'Brien",
        "jack.obrien@example.ie",
        "+353 1 234 5678",
        "4111111111111111",
        "",
        "5 Grafton St, Dublin 2",
        "Sent API key sk_live_4eC39HqLyjWDarjtT1zdp7dc by mistake",
        "2024-03-04 10:10:10+00",
        "19.99",
    ],
    [
        "1011",
        "Kim Lee",
        "kim.lee@example.kr",
        "555-201-9988",
        "",
        "",
        "Gangnam-daero 1, Seoul",
        "Blocked IPv6 2001:db8::7334 after abuse",
        "2024-03-05 08:08:08+00",
        "250.00",
    ],
    [
        "1012",
        "Liam Brown",
        "liam.brown@example.co.uk",
        "(555) 303-4040",
        "",
        "",
        "10 Downing St, London SW1A 2AA",
        "Upgraded to v2.10.3.1 build 20240115",
        "2024-03-06 13:37:00+00",
        "9.99",
    ],
    [
        "1013",
        "María García",
        "maria.garcia@example.es",
        "555.123.9876",
        "",
        "",
        "Calle Mayor 5, Madrid",
        "Alt phone (555) 990-1234, alt email maria.g@example.es",
        "2024-03-07 19:00:00+00",
        "60.00",
    ],
    [
        "1014",
        "Noah Wilson",
        "noah.wilson@example.com",
        "555-444-1212",
        "",
        "",
        "400 Broad St, Seattle, WA 98109",
        "Paid invoice 2024-0042 of $1,250.00",
        "2024-03-08 10:00:00+00",
        "1250.00",
    ],
    [
        "1015",
        "Olivia Davis",
        "olivia.davis@example.com",
        "555-867-5309",
        "",
        "",
        "1 Infinite Loop, Cupertino, CA 95014",
        "Card 4111 1111 1111 1112 was declined",
        "2024-03-09 16:20:00+00",
        "0.00",
    ],
    [
        "1016",
        "Pedro Alves",
        "pedro.alves@example.com.br",
        "+55 11 98765-4321",
        "",
        "",
        "Av. Paulista 1000, São Paulo",
        "Ticket #4532 closed; callback +55 11 98765-4321",
        "2024-03-10 09:45:00+00",
        "33.30",
    ],
    [
        "1017",
        "Quinn Taylor",
        "quinn@example.io",
        "555-010-2020",
        "",
        "",
        "9 Elm St, Boston, MA 02108",
        "Session token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDE3In0.c2lnbmF0dXJl leaked",
        "2024-03-11 11:00:00+00",
        "12.00",
    ],
    [
        "1018",
        "Rosa Kim",
        "rosa.kim@example.com",
        "555-222-3333",
        "",
        "",
        "77 Sunset Blvd, Los Angeles, CA 90028",
        "UPS 1Z999AA10123456784, ETA 2024-03-15",
        "2024-03-12 15:00:00+00",
        "48.00",
    ],
    [
        "1019",
        "Sam Patel",
        "sam.patel@example.in",
        "+91 98765 43210",
        "",
        "",
        "MG Road 12, Bengaluru 560001",
        "",
        "2024-03-13 07:30:00+00",
        "5.00",
    ],
    [
        "1020",
        "Tara Singh",
        "tara.singh@example.ca",
        "(555) 777-8888",
        "",
        "",
        "88 King St W, Toronto, ON M5H 1A1",
        "Meeting at 10:30 in room 4.2.1; server 10.0.0.12",
        "2024-03-14 18:00:00+00",
        "999.00",
    ],
];

const EXPECTED: [[&str; 10]; 20] = [
    [
        "1001",
        "Alice Johnson",
        "a***@example.com",
        "****44",
        "****1111",
        "[REDACTED]",
        "742 Evergreen Terrace, Springfield, IL 62704",
        "Prefers email contact.",
        "2024-01-15 09:12:44+00",
        "129.99",
    ],
    [
        "1002",
        "Bob Martínez",
        "b***@mail.example.org",
        "****90",
        "****0004",
        "[REDACTED]",
        "1600 Pennsylvania Ave NW, Washington, DC 20500",
        "Called from ****90 about order #100234567.",
        "2024-01-16 14:03:10+00",
        "45.00",
    ],
    [
        "1003",
        "Chloé Dubois",
        "c***@example.fr",
        "****89",
        "****0005",
        "[REDACTED]",
        "12 Rue de Rivoli, 75001 Paris",
        "Refund to IBAN [REDACTED:iban]",
        "2024-02-01 08:00:00+00",
        "310.50",
    ],
    [
        "1004",
        "Daniel Okafor",
        "d***@example.ng",
        "****87",
        "****1117",
        "[REDACTED]",
        "15 Marina Rd, Lagos",
        "VIP since 2019; order ids 123456789, 987654321.",
        "2024-02-03 17:45:21+00",
        "1200.00",
    ],
    [
        "1005",
        "Eva Müller",
        "e***@example.de",
        "****20",
        "****1881",
        "[REDACTED]",
        "Unter den Linden 77, 10117 Berlin",
        "Pays from [REDACTED:iban]",
        "2024-02-10 11:11:11+00",
        "89.90",
    ],
    [
        "1006",
        "Fatima Zahra",
        "f***@example.ma",
        "****41",
        "****5100",
        "[REDACTED]",
        "Bd Zerktouni 120, Casablanca",
        "Card on file ends 4242",
        "2024-02-11 09:30:00+00",
        "15.75",
    ],
    [
        "1007",
        "George Smith",
        "g***@example.com",
        "****88",
        "****1111",
        "[REDACTED]",
        "221B Baker St, London NW1 6XE",
        "SSN [REDACTED:us_ssn] verified by phone",
        "2024-03-01 12:00:00+00",
        "0.00",
    ],
    [
        "1008",
        "Hiro Tanaka 田中",
        "h***@example.jp",
        "****78",
        "****0000",
        "[REDACTED]",
        "東京都千代田区1-1",
        "日本語メモ：連絡先 h***@example.jp まで",
        "2024-03-02 06:15:00+00",
        "5400.00",
    ],
    [
        "1009",
        "Isabel Costa",
        "i***@example.pt",
        "****78",
        "****",
        "[REDACTED]",
        "Rua Augusta 100, Lisboa",
        "Login from [REDACTED:ipv4] at 03:14",
        "2024-03-03 21:14:00+00",
        "77.00",
    ],
    [
        "1010",
        "Jack O'Brien",
        "j***@example.ie",
        "****78",
        "****1111",
        "[REDACTED]",
        "5 Grafton St, Dublin 2",
        "Sent API key [REDACTED:api_key] by mistake",
        "2024-03-04 10:10:10+00",
        "19.99",
    ],
    [
        "1011",
        "Kim Lee",
        "k***@example.kr",
        "****88",
        "****",
        "[REDACTED]",
        "Gangnam-daero 1, Seoul",
        "Blocked IPv6 [REDACTED:ipv6] after abuse",
        "2024-03-05 08:08:08+00",
        "250.00",
    ],
    [
        "1012",
        "Liam Brown",
        "l***@example.co.uk",
        "****40",
        "****",
        "[REDACTED]",
        "10 Downing St, London SW1A 2AA",
        "Upgraded to v2.10.3.1 build 20240115",
        "2024-03-06 13:37:00+00",
        "9.99",
    ],
    [
        "1013",
        "María García",
        "m***@example.es",
        "****76",
        "****",
        "[REDACTED]",
        "Calle Mayor 5, Madrid",
        "Alt phone ****34, alt email m***@example.es",
        "2024-03-07 19:00:00+00",
        "60.00",
    ],
    [
        "1014",
        "Noah Wilson",
        "n***@example.com",
        "****12",
        "****",
        "[REDACTED]",
        "400 Broad St, Seattle, WA 98109",
        "Paid invoice 2024-0042 of $1,250.00",
        "2024-03-08 10:00:00+00",
        "1250.00",
    ],
    [
        "1015",
        "Olivia Davis",
        "o***@example.com",
        "****09",
        "****",
        "[REDACTED]",
        "1 Infinite Loop, Cupertino, CA 95014",
        "Card 4111 1111 1111 1112 was declined",
        "2024-03-09 16:20:00+00",
        "0.00",
    ],
    [
        "1016",
        "Pedro Alves",
        "p***@example.com.br",
        "****21",
        "****",
        "[REDACTED]",
        "Av. Paulista 1000, São Paulo",
        "Ticket #4532 closed; callback ****21",
        "2024-03-10 09:45:00+00",
        "33.30",
    ],
    [
        "1017",
        "Quinn Taylor",
        "q***@example.io",
        "****20",
        "****",
        "[REDACTED]",
        "9 Elm St, Boston, MA 02108",
        "Session token [REDACTED:jwt] leaked",
        "2024-03-11 11:00:00+00",
        "12.00",
    ],
    [
        "1018",
        "Rosa Kim",
        "r***@example.com",
        "****33",
        "****",
        "[REDACTED]",
        "77 Sunset Blvd, Los Angeles, CA 90028",
        "UPS 1Z999AA10123456784, ETA 2024-03-15",
        "2024-03-12 15:00:00+00",
        "48.00",
    ],
    [
        "1019",
        "Sam Patel",
        "s***@example.in",
        "****10",
        "****",
        "[REDACTED]",
        "MG Road 12, Bengaluru 560001",
        "",
        "2024-03-13 07:30:00+00",
        "5.00",
    ],
    [
        "1020",
        "Tara Singh",
        "t***@example.ca",
        "****88",
        "****",
        "[REDACTED]",
        "88 King St W, Toronto, ON M5H 1A1",
        "Meeting at 10:30 in room 4.2.1; server [REDACTED:ipv4]",
        "2024-03-14 18:00:00+00",
        "999.00",
    ],
];

const REALISTIC_POLICY: &str = r#"
columns:
  - match: customers.card_number
    strategy: partial
  - match: "*ssn*"
    strategy: redact
detectors:
  - kind: all
    strategy: redact
  - kind: email
    strategy: partial
  - kind: phone
    strategy: partial
    keep_last: 2
"#;

#[test]
fn realistic_rows() {
    let m = masker(REALISTIC_POLICY);
    let c: Vec<ColumnRef<'_>> = COLUMNS
        .iter()
        .map(|&(name, text_like)| ColumnRef {
            table: Some("public.customers"),
            name,
            text_like,
        })
        .collect();
    let plan = m.plan(&c);
    for (r, (row, want)) in ROWS.iter().zip(&EXPECTED).enumerate() {
        let got: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| match m.mask_value(&plan, i, v.as_bytes()) {
                Some(x) => String::from_utf8(x.bytes).unwrap(),
                None => (*v).to_owned(),
            })
            .collect();
        assert_eq!(got, want, "row {r}");
    }
}

/// `cargo test -p interceptor --release --lib masking::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_mask_values() {
    let m = masker(REALISTIC_POLICY);
    let all = m.plan(
        &COLUMNS
            .iter()
            .map(|&(name, text_like)| ColumnRef {
                table: Some("customers"),
                name,
                text_like,
            })
            .collect::<Vec<_>>(),
    );
    // 1,000 rows x 4 text columns (name, address, notes, email) through the
    // detectors; the rows repeat the 20 realistic ones.
    let four = m.plan(&cols(&[
        (Some("customers"), "name", true),
        (Some("customers"), "address", true),
        (Some("customers"), "notes", true),
        (Some("customers"), "email", true),
    ]));
    let four_rows: Vec<[&str; 4]> = (0..1000)
        .map(|i| {
            let r = &ROWS[i % ROWS.len()];
            [r[1], r[6], r[7], r[2]]
        })
        .collect();
    // The same without PII: the hot path.
    let clean_rows: Vec<[&str; 4]> = (0..1000)
        .map(|i| {
            let r = &ROWS[i % ROWS.len()];
            [
                r[1],
                r[6],
                "Prefers phone contact after 5pm; order #100234567 shipped",
                r[8],
            ]
        })
        .collect();

    let run4 = |rows: &[[&str; 4]]| {
        let mut changed = 0usize;
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                if let Some(x) = m.mask_value(&four, i, v.as_bytes()) {
                    changed += x.bytes.len();
                }
            }
        }
        changed
    };
    let run_all = || {
        let mut changed = 0usize;
        for i in 0..1000 {
            for (c, v) in ROWS[i % ROWS.len()].iter().enumerate() {
                if let Some(x) = m.mask_value(&all, c, v.as_bytes()) {
                    changed += x.bytes.len();
                }
            }
        }
        changed
    };
    // On-CPU time of this thread (scheduler accounting), so that other
    // processes competing for the two cores do not count.
    let cpu_ns = || -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let time = |name: &str, values: usize, f: &dyn Fn() -> usize| {
        let mut sink = 0;
        for _ in 0..20 {
            sink += f();
        }
        let rounds = 200;
        let (mut best, mut cpu_total) = (f64::MAX, 0u64);
        for _ in 0..rounds {
            let (t, c) = (Instant::now(), cpu_ns());
            sink += f();
            cpu_total += cpu_ns() - c;
            best = best.min(t.elapsed().as_nanos() as f64);
        }
        // Scheduler accounting is coarse: only the mean is meaningful.
        let cpu = cpu_total as f64 / f64::from(rounds);
        println!(
            "{name}: {values} values; best {:.0} us wall, mean {:.0} us on-CPU per result set; \
             {:.1} ns/value (best wall), {:.1} ns/value (mean on-CPU) (sink {})",
            best / 1000.0,
            cpu / 1000.0,
            best / values as f64,
            cpu / values as f64,
            sink % 10
        );
    };
    time(
        "1000 rows x 4 text columns, realistic (PII in ~45%)",
        4000,
        &|| run4(&four_rows),
    );
    time("1000 rows x 4 text columns, no PII", 4000, &|| {
        run4(&clean_rows)
    });
    time(
        "1000 rows x 10 columns, realistic customers",
        10_000,
        &run_all,
    );
}

/// Random strings over an alphabet rich in the characters scanners look at:
/// no panics, valid UTF-8 in gives valid UTF-8 out, hits do not overlap.
#[test]
fn random_inputs_do_not_panic() {
    let pieces: &[&str] = &[
        "0",
        "1",
        "4",
        "5",
        "9",
        "12",
        "555",
        "4111",
        " ",
        "-",
        ".",
        ":",
        "::",
        "@",
        "+",
        "(",
        ")",
        "_",
        "a",
        "Z",
        "e",
        "x",
        "DE",
        "GB82",
        "eyJ",
        "AKIA",
        "sk-",
        "ghp_",
        "-----BEGIN ",
        "PRIVATE KEY-----",
        "-----END ",
        "ü",
        "日本",
        "📞",
        "\n",
        "com",
        "example",
        "/",
        "ff",
    ];
    let maskers = [
        masker("detectors: [{kind: all, strategy: redact}]"),
        masker("detectors: [{kind: all, strategy: partial, keep_last: 3}]"),
        masker("detectors: [{kind: all, strategy: hash}]"),
    ];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut hits = detect::Hits::default();
    for _ in 0..10_000 {
        let n = (next() % 40) as usize;
        let s: String = (0..n)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        detect::find_all(s.as_bytes(), detect::KindSet(0x3ff), &mut hits);
        for w in hits.windows(2) {
            assert!(w[0].end <= w[1].start, "{s:?}");
        }
        for h in hits.iter() {
            assert!(
                s.is_char_boundary(h.start) && s.is_char_boundary(h.end),
                "{s:?}"
            );
        }
        for m in &maskers {
            if let Some((out, count)) = m.mask_text(&s) {
                assert!(count > 0 && out != s, "{s:?}");
            }
        }
        // Arbitrary bytes too.
        let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        detect::find_all(&bytes, detect::KindSet(0x3ff), &mut hits);
    }
}
