use base64::Engine as _;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"a test key that is long enough for HS256";

fn issuers() -> Issuers {
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    let jwks = format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{k}"}}]}}"#);
    Issuers(vec![Issuer {
        name: "idp".into(),
        iss: "https://idp.test".into(),
        audience: "interceptor".into(),
        keys: super::super::jwks::parse(&jwks).unwrap(),
        leeway: 5,
        groups_claim: "groups".into(),
    }])
}

fn token(claims: serde_json::Value, key: &[u8], kid: &str) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.into());
    encode(&h, &claims, &EncodingKey::from_secret(key).unwrap()).unwrap()
}

fn good() -> serde_json::Value {
    json!({"iss": "https://idp.test", "aud": "interceptor", "sub": "alice",
           "groups": ["dba", "ops"], "exp": unix_now() + 600})
}

#[test]
fn valid_token_gives_subject_and_groups() {
    let c = issuers().verify(&token(good(), SECRET, "k1")).unwrap();
    assert_eq!(c.subject, "alice");
    assert_eq!(c.groups, vec!["dba", "ops"]);
    assert_eq!(c.issuer, "idp");
}

#[test]
fn expired_token_rejected_with_time() {
    let mut c = good();
    c["exp"] = json!(unix_now() - 100);
    let e = issuers().verify(&token(c, SECRET, "k1")).unwrap_err();
    assert!(matches!(e, TokenError::Expired(t) if t > 0), "{e}");
    assert!(e.to_string().contains("expired"));
}

#[test]
fn wrong_issuer_rejected() {
    let mut c = good();
    c["iss"] = json!("https://evil.test");
    let e = issuers().verify(&token(c, SECRET, "k1")).unwrap_err();
    assert!(matches!(e, TokenError::UnknownIssuer { .. }), "{e}");
    assert!(e.to_string().contains("https://evil.test"));
}

#[test]
fn bad_signature_rejected() {
    let e = issuers()
        .verify(&token(good(), b"another key, not the issuer's one!!", "k1"))
        .unwrap_err();
    assert_eq!(e, TokenError::BadSignature("idp".into()));
}

#[test]
fn wrong_audience_and_unknown_kid_rejected() {
    let mut c = good();
    c["aud"] = json!("someone-else");
    let e = issuers().verify(&token(c, SECRET, "k1")).unwrap_err();
    assert_eq!(e, TokenError::Audience("interceptor".into()));
    let e = issuers().verify(&token(good(), SECRET, "k9")).unwrap_err();
    assert!(matches!(e, TokenError::NoKey { .. }), "{e}");
}

#[test]
fn garbage_rejected_clearly() {
    for t in ["", "abc", "a.b", "a.b.c.d", "a.!!!.c"] {
        assert!(
            matches!(issuers().verify(t), Err(TokenError::Malformed(_))),
            "{t}"
        );
    }
}

#[test]
fn missing_subject_rejected() {
    let mut c = good();
    c.as_object_mut().unwrap().remove("sub");
    let e = issuers().verify(&token(c, SECRET, "k1")).unwrap_err();
    assert!(
        matches!(e, TokenError::NoSubject | TokenError::Other(_)),
        "{e}"
    );
}
