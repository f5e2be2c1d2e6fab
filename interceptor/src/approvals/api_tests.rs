use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{encode, EncodingKey, Header};

use super::*;
use crate::approvals::registry::MAX_FOR;
use crate::approvals::{HoldRequest, Opened};
use crate::audit::AuditLog;

const SECRET: &[u8] = b"a test key that is long enough for HS256";

struct Fixture {
    _dir: tempfile::TempDir,
    policy: Policy,
    registry: Arc<Registry>,
}

/// Rules `hold-deletes` (decided by group dba) and `hold-ddl` (group ops).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    std::fs::write(
        &jwks,
        format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{k}"}}]}}"#),
    )
    .unwrap();
    let text = format!(
        "version: 1\n\
         resources:\n  db: {{postgres: {{address: 127.0.0.2, database: d, user: u, password_env: X}}}}\n\
         sql_rules:\n  - {{name: hold-deletes, action: hold, operations: [write]}}\n  - {{name: hold-ddl, action: hold, operations: [ddl]}}\n\
         auth:\n  issuers:\n    - {{name: idp, issuer: 'https://idp', audience: a, jwks_file: '{}'}}\n\
         approvals:\n  approvers:\n    - {{name: dbas, issuer: idp, groups: [dba], rules: ['hold-del*']}}\n    - {{name: ops, issuer: idp, groups: [ops], rules: [hold-ddl]}}\n",
        jwks.display()
    );
    let policy = Policy::from_str(&text, "test").unwrap();
    let audit = AuditLog::open(std::path::Path::new("/dev/null"))
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        policy,
        registry: Registry::new("i".into(), audit),
    }
}

fn token(sub: &str, groups: &[&str]) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("k1".into());
    let exp = crate::auth::jwt::unix_now() + 600;
    let claims = serde_json::json!({"iss": "https://idp", "aud": "a", "sub": sub,
                                    "groups": groups, "exp": exp});
    encode(&h, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
}

impl Fixture {
    /// Opens a request held by `rule`; its id.
    fn hold(&self, rule: &str) -> String {
        let req = HoldRequest {
            protocol: "postgres",
            session: "s-1".into(),
            identity: serde_json::json!({"pid": 1, "uid": 1000}),
            agent_subject: None,
            resource: "db".into(),
            command: format!("statement of {rule}"),
            classification: "write".into(),
            rule: rule.into(),
            reason: "needs approval".into(),
            fingerprint: format!("{rule}|shape"),
        };
        match self.registry.open(req, Duration::from_secs(60)) {
            Opened::Waiting(t) => t.id.clone(),
            Opened::Granted(o) => panic!("unexpected {o:?}"),
        }
    }

    fn call(&self, token: &str, call: Call) -> Answer {
        handle(&self.policy, &self.registry, token, call, false)
    }
}

#[tokio::test]
async fn a_standing_approval_is_at_most_a_day() {
    let f = fixture().await;
    let id = f.hold("hold-deletes");
    let bob = token("bob", &["dba"]);
    let decide = |for_secs| Call::Decide {
        id: id.clone(),
        approve: true,
        reason: None,
        for_secs: Some(for_secs),
    };
    for huge in [u64::MAX, MAX_FOR.as_secs() + 1] {
        let a = f.call(&bob, decide(huge));
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body["error"].as_str().unwrap().contains("24 h"),
            "{}",
            a.body
        );
    }
    let a = f.call(&bob, Call::Show { id: id.clone() });
    assert_eq!(a.body["state"], "pending", "{}", a.body);
    let a = f.call(&bob, decide(MAX_FOR.as_secs()));
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn approvers_list_and_show_only_the_requests_they_may_decide() {
    let f = fixture().await;
    let del = f.hold("hold-deletes");
    let ddl = f.hold("hold-ddl");
    let ids = |a: Answer| -> Vec<String> {
        assert_eq!(a.status, 200, "{}", a.body);
        let v: Vec<serde_json::Value> = serde_json::from_value(a.body).unwrap();
        v.iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let bob = token("bob", &["dba"]);
    let olga = token("olga", &["ops"]);
    assert_eq!(ids(f.call(&bob, Call::List)), vec![del.clone()]);
    assert_eq!(ids(f.call(&olga, Call::List)), vec![ddl.clone()]);
    assert_eq!(f.call(&bob, Call::Show { id: del.clone() }).status, 200);
    let a = f.call(&bob, Call::Show { id: ddl.clone() });
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(f.call(&olga, Call::Show { id: ddl }).status, 200);
    // Not an approver at all.
    let eve = token("eve", &["dev"]);
    assert_eq!(f.call(&eve, Call::List).status, 403);
}
