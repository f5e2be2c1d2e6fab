//! Free-text detectors: enabling kinds, strategies, keyed hashing, UTF-8 and random inputs.

use super::*;

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
