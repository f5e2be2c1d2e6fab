//! A session's memo of decisions. A statement text, or its literal shape (texts that
//! differ only in numeric literals), is classified and decided once per session; later
//! executions reuse the decision and its audit facts. An agent repeats the same few
//! queries with different ids, so this takes classification, the policy's evaluation and
//! the summaries off the per-statement path.
//!
//! Sound because within a session the policy, the identity and the resource are fixed, and
//! the decision depends only on them and on the classification. Nothing is memoised that
//! can change between two executions of one text: held statements (every hold asks
//! again), `EXECUTE` of SQL-level prepared statements (it depends on the session's
//! `PREPARE`s), and sessions bound to an agent token (its claims and expiry can change).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::super::enforce::{Checked, Enforcer};
use super::super::shape::literal_shape;
use super::classify::{classify, stmt_ctxs};
use super::StmtCtx;
use crate::policy::Verdict;
use crate::sql::Statement;

/// Entries per session; the memo starts over when it is full (agents whose every text is
/// new gain nothing, and hold at most this many).
const CAPACITY: usize = 128;

/// Longest text memoised.
const MEMO_MAX_TEXT: usize = 16 * 1024;

/// One decided text.
pub(super) struct Decided {
    pub checked: Checked,
    stmts: Vec<StmtCtx>,
    /// Decided from the literal shape: one statement, whose audit text is the real one.
    shaped: bool,
}

impl Decided {
    /// The statements' audit facts for this execution of `sql`.
    pub fn stmts(&self, sql: &str) -> Vec<StmtCtx> {
        let mut v = self.stmts.clone();
        if self.shaped {
            if let Some(s) = v.first_mut() {
                s.text = shaped_text(sql);
            }
        }
        v
    }

    /// The audit facts after a hold was settled into `checked`.
    pub fn restate(&self, sql: &str, checked: &Checked) -> Vec<StmtCtx> {
        stmt_ctxs(sql, checked, self.shaped)
    }
}

/// The audit text of a statement decided from its shape.
pub(super) fn shaped_text(sql: &str) -> String {
    sql.trim().trim_end_matches(';').trim_end().to_owned()
}

/// What must be looked up before a statement can be decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Missing {
    /// Functions (bare names).
    pub functions: Vec<String>,
    /// Relations (bare names).
    pub relations: Vec<String>,
}

pub(super) struct Decisions {
    /// By shape or text, one map per `standard_conforming_strings` setting (index 1: on).
    maps: [HashMap<String, Arc<Decided>>; 2],
    enabled: bool,
    /// Longest text classified (`max_query_bytes`).
    max_query: usize,
}

impl Decisions {
    /// `enabled`: false for sessions whose decisions may change over time (agent tokens).
    pub fn new(enabled: bool, max_query: usize) -> Decisions {
        Decisions {
            maps: Default::default(),
            enabled,
            max_query,
        }
    }

    /// The decision for `sql`, from the memo or freshly made (and then memoised when it
    /// cannot change within the session). `Err(names)`: these functions must be looked up
    /// first (only with `look_up`; without, they count as unknown).
    pub fn decide(
        &mut self,
        sql: &str,
        scs: bool,
        enforcer: &Enforcer<'_>,
        prepared: &HashMap<String, Statement>,
        look_up: bool,
    ) -> Result<Arc<Decided>, Missing> {
        let shape = match (self.enabled, scs) {
            (true, true) => literal_shape(sql),
            _ => None,
        };
        if self.enabled {
            let hit = match &shape {
                Some(Cow::Owned(s)) => self.get(scs, s),
                _ => None,
            };
            if let Some(d) = hit.or_else(|| self.get(scs, sql)) {
                return Ok(d);
            }
        }
        let (cls, shaped) = classify(sql, scs, self.max_query);
        let checked = enforcer.check(&cls, prepared, look_up);
        if !checked.look_up.is_empty() || !checked.look_up_relations.is_empty() {
            return Err(Missing {
                functions: checked.look_up,
                relations: checked.look_up_relations,
            });
        }
        let stmts = stmt_ctxs(sql, &checked, shaped);
        let d = Arc::new(Decided {
            checked,
            stmts,
            shaped,
        });
        // Functions defined in the database can change (and their lookup expires).
        let stable = d.checked.decision.verdict != Verdict::Hold
            && !d.checked.user_routines
            && !d.checked.statements.iter().any(|s| s.kind == "ExecuteStmt");
        // Long texts are not kept: 128 of them could hold gigabytes.
        if self.enabled && stable && sql.len() <= MEMO_MAX_TEXT {
            let key = match (shaped, shape) {
                (true, Some(Cow::Owned(s))) => s,
                _ => sql.to_owned(),
            };
            let map = &mut self.maps[usize::from(scs)];
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(key, d.clone());
        }
        Ok(d)
    }

    fn get(&self, scs: bool, key: &str) -> Option<Arc<Decided>> {
        self.maps[usize::from(scs)].get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, Subject};

    const POLICY: &str = "version: 1
identities:
  agent: {}
resources:
  appdb:
    postgres: { address: 127.0.0.2, database: app, user: app, password_env: APPDB_PASSWORD }
sql_rules:
  - { name: reads, action: allow, operations: [read] }
  - { name: hold-writes, action: hold, operations: [write] }
  - { name: prepare, action: allow, operations: [read, utility, session] }
";

    /// The policy above, with the approvers a `hold` rule needs.
    fn policy() -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#,
        )
        .unwrap();
        let text = format!(
            "{POLICY}auth:\n  issuers:\n    - {{name: idp, issuer: 'https://idp', audience: a, jwks_file: '{}'}}\n\
             approvals:\n  approvers:\n    - {{name: dbas, issuer: idp, groups: [dba]}}\n",
            jwks.display()
        );
        Policy::from_str(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn check(d: &mut Decisions, sql: &str, prepared: &HashMap<String, Statement>) -> Arc<Decided> {
        thread_local!(static POL: Policy = policy());
        POL.with(|p| decide_with(p, d, sql, prepared))
    }

    fn decide_with(
        p: &Policy,
        d: &mut Decisions,
        sql: &str,
        prepared: &HashMap<String, Statement>,
    ) -> Arc<Decided> {
        let enforcer = Enforcer {
            policy: p,
            subject: Subject {
                cgroup: Some("/interceptor/run-1"),
                uid: 1000,
                gid: 1000,
                exe: Some("/usr/bin/psql"),
                comm: "psql",
                token: None,
            },
            resource: "appdb",
            masker: None,
            routines: None,
            relations: None,
        };
        d.decide(sql, true, &enforcer, prepared, false)
            .expect("nothing to look up without routines")
    }

    #[test]
    fn texts_of_one_shape_share_a_decision_with_their_own_audit_text() {
        let mut d = Decisions::new(true, super::super::classify::DEFAULT_MAX_QUERY);
        let none = HashMap::new();
        let a = check(
            &mut d,
            "SELECT abalance FROM accounts WHERE aid = 17;",
            &none,
        );
        let b = check(
            &mut d,
            "SELECT abalance FROM accounts WHERE aid = 4242;",
            &none,
        );
        assert!(Arc::ptr_eq(&a, &b), "the second text is a memo hit");
        assert!(b.checked.allowed());
        let s = b.stmts("SELECT abalance FROM accounts WHERE aid = 4242;");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text, "SELECT abalance FROM accounts WHERE aid = 4242");
        assert_eq!(
            a.stmts("SELECT abalance FROM accounts WHERE aid = 17;")[0].text,
            "SELECT abalance FROM accounts WHERE aid = 17"
        );
        // Another statement under another shape is decided on its own.
        let c = check(&mut d, "SELECT name FROM users WHERE id = 1", &none);
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn multi_statement_texts_are_memoised_by_text_with_each_statement() {
        let mut d = Decisions::new(true, super::super::classify::DEFAULT_MAX_QUERY);
        let none = HashMap::new();
        let sql = "SELECT 1 FROM t WHERE a = 1; SELECT 2 FROM u";
        let a = check(&mut d, sql, &none);
        let b = check(&mut d, sql, &none);
        assert!(Arc::ptr_eq(&a, &b));
        let texts: Vec<String> = b.stmts(sql).into_iter().map(|s| s.text).collect();
        assert_eq!(texts, ["SELECT 1 FROM t WHERE a = 1", "SELECT 2 FROM u"]);
        // Same shape, other numbers: not this entry (its texts would be wrong).
        let c = check(
            &mut d,
            "SELECT 1 FROM t WHERE a = 2; SELECT 2 FROM u",
            &none,
        );
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn holds_executes_and_token_sessions_are_decided_every_time() {
        let none = HashMap::new();
        let mut d = Decisions::new(true, super::super::classify::DEFAULT_MAX_QUERY);
        let a = check(&mut d, "DELETE FROM accounts WHERE aid = 1", &none);
        assert_eq!(a.checked.decision.verdict, Verdict::Hold);
        let b = check(&mut d, "DELETE FROM accounts WHERE aid = 1", &none);
        assert!(!Arc::ptr_eq(&a, &b), "a hold asks again every time");

        // EXECUTE depends on the session's PREPAREs: unknown now, allowed once prepared.
        let e = check(&mut d, "EXECUTE q", &none);
        assert!(!e.checked.allowed());
        let p = check(&mut d, "PREPARE q AS SELECT 1 FROM t", &none);
        let mut prepared = HashMap::new();
        for s in &p.checked.statements {
            prepared.insert("q".to_owned(), s.clone());
        }
        let e2 = check(&mut d, "EXECUTE q", &prepared);
        assert!(e2.checked.allowed(), "{:?}", e2.checked.decision);

        let mut t = Decisions::new(false, super::super::classify::DEFAULT_MAX_QUERY);
        let a = check(&mut t, "SELECT 1 FROM t", &none);
        let b = check(&mut t, "SELECT 1 FROM t", &none);
        assert!(!Arc::ptr_eq(&a, &b), "token sessions are not memoised");
    }

    #[test]
    fn calls_of_volatile_functions_are_looked_up_then_writes_and_never_memoised() {
        use super::super::super::routines::{Routines, Row};
        let pol = policy();
        let res: crate::policy::PostgresResource = serde_yaml::from_str(
            "{address: 127.0.0.2, database: app, user: app, read_only_functions: [new_token]}",
        )
        .unwrap();
        let routines = Routines::default();
        let enforcer = Enforcer {
            policy: &pol,
            subject: Subject {
                cgroup: None,
                uid: 1000,
                gid: 1000,
                exe: None,
                comm: "psql",
                token: None,
            },
            resource: "appdb",
            masker: None,
            routines: Some((&routines, &res)),
            relations: None,
        };
        let none = HashMap::new();
        let mut d = Decisions::new(true, super::super::classify::DEFAULT_MAX_QUERY);
        let sql = "SELECT purge(), lower(name), new_token() FROM t";
        let names = d.decide(sql, true, &enforcer, &none, true).err();
        assert_eq!(
            names,
            Some(Missing {
                functions: vec!["lower".to_owned(), "new_token".into(), "purge".into()],
                relations: Vec::new(),
            })
        );
        let row = |schema: &str, volatile| Row {
            schema: schema.into(),
            volatile,
            extension: true,
        };
        routines.remember("purge", vec![row("public", true)]);
        routines.remember("lower", vec![row("pg_catalog", false)]);
        routines.remember("new_token", vec![row("public", true)]);
        let a = d.decide(sql, true, &enforcer, &none, true).unwrap();
        let s = &a.checked.statements[0];
        assert!(
            s.operations.contains(&crate::sql::Operation::Write),
            "{s:?}"
        );
        assert_eq!(a.checked.decision.verdict, Verdict::Hold, "writes are held");
        assert!(a
            .checked
            .message()
            .contains("public.purge() is a volatile function"));
        let b = d.decide(sql, true, &enforcer, &none, true).unwrap();
        assert!(!Arc::ptr_eq(&a, &b), "not memoised: the catalog can change");

        // Built-ins and trusted functions stay reads; system-only calls are memoised.
        for sql in [
            "SELECT lower(name), new_token() FROM t",
            "SELECT lower(name) FROM t",
        ] {
            let c = d.decide(sql, true, &enforcer, &none, true).unwrap();
            assert!(c.checked.allowed(), "{sql}: {:?}", c.checked.decision);
        }
        let e = d.decide("SELECT lower(name) FROM t", true, &enforcer, &none, true);
        let f = d.decide("SELECT lower(name) FROM t", true, &enforcer, &none, true);
        assert!(Arc::ptr_eq(&e.unwrap(), &f.unwrap()));

        // Without a lookup, a name the cache lacks is unknown: a write.
        let g = d
            .decide("SELECT other() FROM t", true, &enforcer, &none, false)
            .unwrap();
        assert_eq!(g.checked.decision.verdict, Verdict::Hold);
    }

    #[test]
    fn the_memo_is_bounded() {
        let mut d = Decisions::new(true, super::super::classify::DEFAULT_MAX_QUERY);
        let none = HashMap::new();
        for i in 0..(CAPACITY * 3) {
            check(&mut d, &format!("SELECT c{i} FROM t"), &none);
            assert!(d.maps[1].len() <= CAPACITY);
        }
    }

    #[test]
    fn texts_over_the_limit_are_denied_unparsed() {
        let mut d = Decisions::new(true, 64);
        let none = HashMap::new();
        let short = check(&mut d, "SELECT 1 FROM t", &none);
        assert!(short.checked.allowed(), "{:?}", short.checked.decision);
        let long = format!("SELECT 1 FROM t WHERE x IN ({})", vec!["1"; 40].join(","));
        let denied = check(&mut d, &long, &none);
        assert!(!denied.checked.allowed());
        assert!(
            denied.checked.decision.reason.contains("max_query_bytes"),
            "{:?}",
            denied.checked.decision
        );
    }
}
