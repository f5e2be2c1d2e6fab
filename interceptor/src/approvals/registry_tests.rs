use std::time::Duration;

use super::*;
use crate::auth::Claims;
use crate::policy::Policy;

async fn audit() -> AuditLog {
    AuditLog::open(std::path::Path::new("/dev/null"))
        .await
        .unwrap()
}

fn policy() -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#).unwrap();
    let text = format!(
        "version: 1\n\
         resources:\n  db: {{postgres: {{address: 127.0.0.2, database: d, user: u, password_env: X}}}}\n\
         sql_rules:\n  - {{name: hold-deletes, action: hold, operations: [write]}}\n  - {{name: hold-ddl, action: hold, operations: [ddl]}}\n\
         auth:\n  issuers:\n    - {{name: idp, issuer: 'https://idp', audience: a, jwks_file: '{}'}}\n\
         approvals:\n  approvers:\n    - {{name: dbas, issuer: idp, groups: [dba], rules: ['hold-del*']}}\n    - {{name: ops, issuer: idp, groups: [ops], rules: [hold-ddl]}}\n",
        jwks.display()
    );
    Policy::from_str(&text, "test").unwrap()
}

fn req(rule: &str, agent: Option<&str>) -> HoldRequest {
    HoldRequest {
        protocol: "postgres",
        session: "s-1".into(),
        identity: serde_json::json!({"pid": 1, "uid": 1000}),
        agent_subject: agent.map(str::to_owned),
        resource: "db".into(),
        command: "DELETE FROM t".into(),
        classification: "DeleteStmt write".into(),
        rule: rule.into(),
        reason: "needs approval".into(),
        fingerprint: format!("{rule}|DELETE FROM t"),
    }
}

fn approver(sub: &str, groups: &[&str]) -> Approver {
    Approver {
        claims: Claims {
            issuer: "idp".into(),
            subject: sub.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            expires: u64::MAX,
        },
        inside_agent_cgroup: false,
    }
}

fn ticket(r: &Registry, rq: HoldRequest, t: Duration) -> Ticket {
    match r.open(rq, t) {
        Opened::Waiting(t) => t,
        Opened::Granted(_) => panic!("unexpected grant"),
    }
}

#[tokio::test]
async fn approve_wakes_the_waiter() {
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let t = ticket(
        &r,
        req("hold-deletes", Some("agent-7")),
        Duration::from_secs(30),
    );
    let id = t.id.clone();
    assert_eq!(r.list().len(), 1);
    let d = r
        .decide(
            p.approvals(),
            &id,
            &approver("bob", &["dba"]),
            true,
            Some("ok".into()),
            Scope::Once,
        )
        .unwrap();
    assert_eq!(d.request.state, "approved");
    assert_eq!(
        r.wait(t).await,
        Outcome::Approved {
            by: "bob (dbas)".into(),
            reason: Some("ok".into()),
            grant_use: None,
        }
    );
    assert_eq!(r.show(&id).unwrap().state, "approved");
}

#[tokio::test]
async fn deny_and_expiry() {
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let t = ticket(&r, req("hold-deletes", None), Duration::from_secs(30));
    let id = t.id.clone();
    r.decide(
        p.approvals(),
        &id,
        &approver("bob", &["dba"]),
        false,
        Some("no".into()),
        Scope::Once,
    )
    .unwrap();
    assert!(matches!(r.wait(t).await, Outcome::Denied { .. }));
    let t = ticket(&r, req("hold-deletes", None), Duration::from_millis(50));
    let id = t.id.clone();
    assert!(matches!(r.wait(t).await, Outcome::Expired { .. }));
    assert_eq!(r.show(&id).unwrap().state, "expired");
    // Deciding it afterwards finds nothing pending.
    let e = r
        .decide(
            p.approvals(),
            &id,
            &approver("bob", &["dba"]),
            true,
            None,
            Scope::Once,
        )
        .unwrap_err();
    assert!(matches!(e, DecideError::NotFound(_)));
}

#[tokio::test]
async fn rights_are_checked() {
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let t = ticket(
        &r,
        req("hold-deletes", Some("alice")),
        Duration::from_secs(30),
    );
    let id = t.id.clone();
    // Not in the group.
    let e = r
        .decide(
            p.approvals(),
            &id,
            &approver("eve", &["dev"]),
            true,
            None,
            Scope::Once,
        )
        .unwrap_err();
    assert!(
        matches!(e, DecideError::Forbidden(ref m) if m.contains("no approver grant")),
        "{e}"
    );
    // Self-approval.
    let e = r
        .decide(
            p.approvals(),
            &id,
            &approver("alice", &["dba"]),
            true,
            None,
            Scope::Once,
        )
        .unwrap_err();
    assert!(
        matches!(e, DecideError::Forbidden(ref m) if m.contains("own request")),
        "{e}"
    );
    // From inside the agent's cgroup.
    let mut inside = approver("bob", &["dba"]);
    inside.inside_agent_cgroup = true;
    let e = r
        .decide(p.approvals(), &id, &inside, true, None, Scope::Once)
        .unwrap_err();
    assert!(
        matches!(e, DecideError::Forbidden(ref m) if m.contains("inside")),
        "{e}"
    );
    // A rule the grant does not cover.
    let t2 = ticket(&r, req("hold-ddl", None), Duration::from_secs(30));
    let e = r
        .decide(
            p.approvals(),
            &t2.id,
            &approver("bob", &["dba"]),
            true,
            None,
            Scope::Once,
        )
        .unwrap_err();
    assert!(matches!(e, DecideError::Forbidden(_)), "{e}");
    // Still pending after the refusals.
    assert_eq!(r.show(&id).unwrap().state, "pending");
}

#[tokio::test]
async fn standing_grant_covers_the_same_shape() {
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let t = ticket(&r, req("hold-deletes", None), Duration::from_secs(30));
    let first = t.id.clone();
    r.decide(
        p.approvals(),
        &t.id,
        &approver("bob", &["dba"]),
        true,
        None,
        Scope::For(Duration::from_secs(60)),
    )
    .unwrap();
    r.wait(t).await;
    let Opened::Granted(o) = r.open(req("hold-deletes", None), Duration::from_secs(30)) else {
        panic!("not covered by the grant");
    };
    // Recorded (audit, webhook, list) under an id of its own, naming the approval.
    let id = o.grant_use().expect("an id").to_owned();
    assert!(id.starts_with("apr-") && id != first, "{id}");
    let v = r.show(&id).unwrap();
    assert_eq!(v.state, "approved");
    assert!(
        v.decision_reason.as_deref().unwrap().contains(&first),
        "{v:?}"
    );
    assert_eq!(o.verdict(None).0, crate::policy::Verdict::Allow);
    // Another shape is not covered.
    let mut other = req("hold-deletes", None);
    other.fingerprint = "something else".into();
    assert!(matches!(
        r.open(other, Duration::from_secs(30)),
        Opened::Waiting(_)
    ));
}

#[tokio::test]
async fn a_request_without_fingerprint_is_approved_once_only() {
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let mut body = req("hold-deletes", None);
    body.fingerprint = String::new();
    let t = ticket(&r, body.clone(), Duration::from_secs(30));
    let d = r
        .decide(
            p.approvals(),
            &t.id,
            &approver("bob", &["dba"]),
            true,
            None,
            Scope::For(Duration::from_secs(600)),
        )
        .unwrap();
    assert!(
        d.note.as_deref().unwrap_or("").contains("once only"),
        "{:?}",
        d.note
    );
    assert!(matches!(r.wait(t).await, Outcome::Approved { .. }));
    // The same request again, and any other without a fingerprint, waits for approval.
    assert!(matches!(
        r.open(body, Duration::from_secs(30)),
        Opened::Waiting(_)
    ));
    let mut other = req("hold-deletes", None);
    other.fingerprint = String::new();
    other.command = "DELETE FROM t WHERE true".into();
    assert!(matches!(
        r.open(other, Duration::from_secs(30)),
        Opened::Waiting(_)
    ));
}

#[tokio::test]
async fn abandon_fails_waiters() {
    let r = Registry::new("i".into(), audit().await);
    let t = ticket(&r, req("hold-deletes", None), Duration::from_secs(30));
    r.abandon_all();
    assert_eq!(r.wait(t).await, Outcome::Abandoned);
}

#[tokio::test]
async fn an_agent_giving_up_withdraws_its_request() {
    let r = Registry::new("i".into(), audit().await);
    let p = policy();
    let t = ticket(&r, req("hold-deletes", None), Duration::from_secs(30));
    let id = t.id.clone();
    let o = r.wait_or(t, async { "the agent closed its connection".to_owned() });
    let o = o.await;
    assert!(matches!(&o, Outcome::Withdrawn { why } if why.contains("closed")));
    let (verdict, why) = o.verdict(Some(&id));
    assert_eq!(verdict, crate::policy::Verdict::Deny);
    assert!(
        why.contains("withdrawn") && why.contains("nothing was sent"),
        "{why}"
    );
    let v = r.show(&id).unwrap();
    assert_eq!(v.state, "withdrawn");
    // Nobody can approve it any more.
    let e = r.decide(
        p.approvals(),
        &id,
        &approver("bob", &["dba"]),
        true,
        None,
        Scope::Once,
    );
    assert!(matches!(e, Err(DecideError::NotFound(_))));

    // A wait dropped before its end (the agent's stream was reset) withdraws too.
    let t = ticket(&r, req("hold-deletes", None), Duration::from_secs(30));
    let id = t.id.clone();
    let w = tokio::time::timeout(Duration::from_millis(1), r.wait(t)).await;
    assert!(w.is_err(), "still waiting when dropped");
    assert_eq!(r.show(&id).unwrap().state, "withdrawn");
    assert!(!r.list().iter().any(|v| v.state == "pending"));
}

#[tokio::test]
async fn a_decision_made_wins_over_a_hang_up_noticed_with_it() {
    let r = Registry::new("i".into(), audit().await);
    let p = policy();
    let t = ticket(&r, req("hold-deletes", None), Duration::from_secs(30));
    let id = t.id.clone();
    r.decide(
        p.approvals(),
        &id,
        &approver("bob", &["dba"]),
        false,
        None,
        Scope::Once,
    )
    .unwrap();
    let o = r.wait_or(t, async { "gone".to_owned() }).await;
    assert!(matches!(o, Outcome::Denied { .. }), "{o:?}");
    assert_eq!(r.show(&id).unwrap().state, "denied");
}

fn from(session: &str, uid: usize) -> HoldRequest {
    let mut r = req("hold-deletes", None);
    r.session = session.into();
    r.identity = serde_json::json!({"pid": 1, "uid": uid});
    r
}

fn refused(o: Opened) -> String {
    match o {
        Opened::Granted(Outcome::Refused { why }) => {
            assert!(
                why.starts_with("too many requests waiting for approval"),
                "{why}"
            );
            why
        }
        _ => panic!("not refused"),
    }
}

#[tokio::test]
async fn too_many_waiting_requests_are_refused_at_once() {
    use crate::approvals::limits::{MAX_PENDING, MAX_PENDING_PER_SESSION, MAX_PENDING_PER_UID};
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let t30 = Duration::from_secs(30);
    let first = ticket(&r, from("s-0", 1000), t30);
    for _ in 1..MAX_PENDING_PER_SESSION {
        ticket(&r, from("s-0", 1000), t30);
    }
    let why = refused(r.open(from("s-0", 1000), t30));
    assert!(why.contains("from this session"), "{why}");
    let (verdict, reason) = Outcome::Refused { why: why.clone() }.verdict(None);
    assert_eq!((verdict, reason), (crate::policy::Verdict::Deny, why));
    // Other sessions of the same uid, up to the uid's limit.
    for i in MAX_PENDING_PER_SESSION..MAX_PENDING_PER_UID {
        ticket(&r, from(&format!("s-{i}"), 1000), t30);
    }
    assert!(refused(r.open(from("s-new", 1000), t30)).contains("from this uid"));
    // Other uids, up to the daemon's limit.
    for i in MAX_PENDING_PER_UID..MAX_PENDING {
        ticket(&r, from(&format!("s-{i}"), 100_000 + i), t30);
    }
    assert!(refused(r.open(from("s-new", 1), t30)).contains("in all"));
    assert_eq!(r.list().len(), MAX_PENDING, "refusals are not kept");
    // A decision frees a place.
    r.decide(
        p.approvals(),
        &first.id,
        &approver("bob", &["dba"]),
        false,
        None,
        Scope::Once,
    )
    .unwrap();
    assert!(matches!(r.open(from("s-0", 1000), t30), Opened::Waiting(_)));
}

#[tokio::test]
async fn long_commands_are_kept_capped_with_their_length_and_digest() {
    use crate::approvals::limits::MAX_COMMAND;
    let p = policy();
    let r = Registry::new("i".into(), audit().await);
    let mut long = req("hold-deletes", None);
    long.command = format!("UPDATE t SET v = '{}'", "é".repeat(10_000));
    long.fingerprint = "x".repeat(1 << 20);
    let t = ticket(&r, long.clone(), Duration::from_secs(30));
    let v = r.show(&t.id).unwrap();
    assert!(v.command.len() < MAX_COMMAND + 150, "{}", v.command.len());
    assert!(
        v.command
            .contains("… [cut: 3635 more bytes not shown; 20019 bytes in all, sha256 "),
        "{}",
        &v.command[MAX_COMMAND - 10..]
    );
    // The same long shape is still recognised by a standing grant.
    r.decide(
        p.approvals(),
        &t.id,
        &approver("bob", &["dba"]),
        true,
        None,
        Scope::For(Duration::from_secs(60)),
    )
    .unwrap();
    assert!(matches!(
        r.open(long, Duration::from_secs(30)),
        Opened::Granted(Outcome::Approved { .. })
    ));
}

#[test]
fn an_approved_command_needs_the_token_it_was_held_with() {
    use crate::approvals::token_recheck;
    use crate::policy::AgentToken;
    let token = |subject: &str, expired| AgentToken {
        subject: subject.into(),
        groups: vec![],
        expired,
    };
    assert_eq!(token_recheck(None, None), None);
    assert_eq!(token_recheck(Some("a-7"), Some(&token("a-7", false))), None);
    let why = token_recheck(Some("a-7"), Some(&token("a-7", true))).unwrap();
    assert!(
        why.contains("token expired") && why.contains("nothing was sent"),
        "{why}"
    );
    let why = token_recheck(Some("a-7"), Some(&token("mallory", false))).unwrap();
    assert!(why.contains("a-7 then, mallory now"), "{why}");
}
