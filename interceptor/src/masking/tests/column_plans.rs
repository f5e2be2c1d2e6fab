//! Column rules, `ColumnPlan`s and `mask_value`.

use super::*;

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
