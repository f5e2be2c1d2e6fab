//! The client → upstream direction of a session: frontend messages checked statement by
//! statement (classification, policy, holds, write-before-forward) before they go upstream.

use super::decide::{self, Decisions};
use super::*;

/// Client → upstream. `Ok(true)`: the client sent Terminate; `Ok(false)`: it closed.
pub(super) async fn client_pump<R, W, CW>(
    c: &Common<'_>,
    reader: &mut FrameReader<R>,
    up: &mut W,
    client: &tokio::sync::Mutex<CW>,
) -> Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    CW: AsyncWrite + Unpin,
{
    let policy = c.ctx.policy.clone();
    let mut sql_prepared: HashMap<String, Statement> = HashMap::new();
    let mut statements: HashMap<String, (Vec<StmtCtx>, Option<u64>)> = HashMap::new();
    let mut portals: HashMap<String, (String, Vec<i16>)> = HashMap::new();
    let mut token_n = 0u64;
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut intents: Vec<String> = Vec::new();
    let mut decisions = Decisions::new(c.ctx.token.is_none());
    loop {
        let f = match reader.next().await? {
            Some(f) => f,
            None => {
                // Half-closed: the client sent its last request and shut down its sending
                // side. Like PostgreSQL, answer what it asked before ending the session.
                c.wait_idle().await;
                return Ok(false);
            }
        };
        let mut terminate = false;
        let mut frames = vec![f];
        while let Some(f) = reader.try_frame()? {
            frames.push(f);
        }
        // The bound token's expiry is checked for every batch of messages.
        let token = c.ctx.token.as_ref().map(|t| t.view(policy.issuers()));
        let enforcer = Enforcer {
            policy: &policy,
            subject: Subject {
                cgroup: c.ctx.identity.cgroup.as_deref(),
                uid: c.ctx.identity.uid,
                gid: c.ctx.identity.gid,
                exe: c.ctx.identity.exe.as_deref(),
                comm: &c.ctx.identity.comm,
                token: token.as_ref(),
            },
            resource: &c.ctx.resource,
            masking: c.masker.is_some(),
        };
        for f in &frames {
            c.ctx.bytes_up.fetch_add(5 + f.body.len() as u64, Relaxed);
            let msg = Frontend::parse(f)?;
            let mut deny_with = |checked: &Checked, out: &mut BytesMut, extended: Option<&str>| {
                token_n += 1;
                let token = format!("{DENY_TOKEN}{token_n}");
                c.st().denials.insert(token.clone(), checked.error_frame());
                match extended {
                    Some(name) => frontend::parse(name, &token).encode(out),
                    None => frontend::query(&token).encode(out),
                }
            };
            match msg {
                Frontend::Query(sql) => {
                    let d = decisions.decide(sql, c.st().scs, &enforcer, &sql_prepared);
                    let settled = c
                        .settle_held(&d, sql, &policy, client, &mut out, up)
                        .await?;
                    let (checked, stmts) = match &settled {
                        Some(s) => (s, d.restate(sql, s)),
                        None => (&d.checked, d.stmts(sql)),
                    };
                    if checked.allowed() {
                        remember_prepared(&checked.statements, &mut sql_prepared);
                        intents.push(c.intent("simple", sql, &checked.summary, &checked.decision));
                        let mut st = c.st();
                        st.pending.push_back(Pending::Exec(Box::new(Unit::new(
                            true,
                            stmts,
                            checked.decision.row_limit,
                        ))));
                        st.outstanding += 1;
                        drop(st);
                        f.encode(&mut out);
                    } else {
                        let denied = stmts
                            .get(checked.decision.statement.unwrap_or(0))
                            .cloned()
                            .unwrap_or_else(|| {
                                StmtCtx::new(sql.to_owned(), &checked.summary, &checked.decision)
                            });
                        c.audit_stmt("simple", &denied, None, None);
                        queue_denied(c);
                        deny_with(checked, &mut out, None);
                    }
                }
                Frontend::Parse { name, query } => {
                    let d = decisions.decide(query, c.st().scs, &enforcer, &sql_prepared);
                    let settled = c
                        .settle_held(&d, query, &policy, client, &mut out, up)
                        .await?;
                    let (checked, stmts) = match &settled {
                        Some(s) => (s, d.restate(query, s)),
                        None => (&d.checked, d.stmts(query)),
                    };
                    c.st().pending.push_back(Pending::Parse);
                    if checked.allowed() {
                        remember_prepared(&checked.statements, &mut sql_prepared);
                        statements.insert(name.to_owned(), (stmts, checked.decision.row_limit));
                        f.encode(&mut out);
                    } else {
                        statements.remove(name);
                        let denied = stmts.first().cloned().unwrap_or_else(|| {
                            StmtCtx::new(query.to_owned(), &checked.summary, &checked.decision)
                        });
                        c.audit_stmt("extended", &denied, None, None);
                        deny_with(checked, &mut out, Some(name));
                    }
                }
                Frontend::Bind {
                    portal,
                    statement,
                    result_formats,
                } => {
                    portals.insert(portal.to_owned(), (statement.to_owned(), result_formats));
                    c.st().pending.push_back(Pending::Bind {
                        portal: portal.to_owned(),
                    });
                    f.encode(&mut out);
                }
                Frontend::Describe { kind, name } => {
                    let p = if kind == b'S' {
                        Pending::DescribeStatement(name.to_owned())
                    } else {
                        Pending::DescribePortal(name.to_owned())
                    };
                    c.st().pending.push_back(p);
                    f.encode(&mut out);
                }
                Frontend::Execute { portal, .. } => {
                    let (statement, formats) = portals.get(portal).cloned().unwrap_or_default();
                    let (stmts, limit) = statements.get(&statement).cloned().unwrap_or_default();
                    match stmts.first() {
                        Some(first) => {
                            let text: Vec<&str> = stmts.iter().map(|s| s.text.as_str()).collect();
                            intents.push(c.intent(
                                "extended",
                                &text.join("; "),
                                &first.summary,
                                &first.decision,
                            ));
                        }
                        // A statement this session did not Parse (the upstream will say
                        // whether it exists): still on record before it is executed.
                        None => intents.push(c.intent(
                            "extended",
                            &format!("<execute of statement {statement:?}>"),
                            "unknown statement",
                            &SqlDecision {
                                verdict: Verdict::Allow,
                                rule: None,
                                reason: String::new(),
                                row_limit: None,
                                statement: None,
                            },
                        )),
                    }
                    let mut u = Unit::new(false, stmts, limit);
                    u.portal = portal.to_owned();
                    u.statement = statement;
                    u.formats = formats;
                    c.st().pending.push_back(Pending::Exec(Box::new(u)));
                    f.encode(&mut out);
                }
                Frontend::Close { kind, name } => {
                    if kind == b'S' {
                        statements.remove(name);
                    } else {
                        portals.remove(name);
                    }
                    c.st().pending.push_back(Pending::Close);
                    f.encode(&mut out);
                }
                Frontend::Sync => {
                    let mut st = c.st();
                    st.pending.push_back(Pending::Sync);
                    st.outstanding += 1;
                    drop(st);
                    f.encode(&mut out);
                }
                Frontend::FunctionCall { oid } => {
                    let checked = Checked {
                        statements: Vec::new(),
                        decision: SqlDecision {
                            verdict: Verdict::Deny,
                            rule: None,
                            reason: format!("fast-path function calls (function {oid}) bypass statement classification and are not allowed"),
                            row_limit: None,
                            statement: None,
                        },
                        summary: "FunctionCall".into(),
                    };
                    c.audit_stmt(
                        "simple",
                        &StmtCtx::new(
                            format!("<function call {oid}>"),
                            &checked.summary,
                            &checked.decision,
                        ),
                        None,
                        None,
                    );
                    queue_denied(c);
                    deny_with(&checked, &mut out, None);
                }
                Frontend::Flush | Frontend::CopyData | Frontend::CopyDone | Frontend::CopyFail => {
                    f.encode(&mut out)
                }
                Frontend::Terminate => {
                    terminate = true;
                    break;
                }
                Frontend::Password => {
                    return Err(PgError::malformed(
                        "client",
                        "password message outside authentication",
                    ))
                }
                Frontend::Unknown(t) => {
                    return Err(PgError::malformed(
                        "client",
                        format!("unknown message type {:?}", t as char),
                    ))
                }
            }
        }
        // (issue 6) Write before forward: the commands of this batch are on disk before
        // any byte of it goes upstream; if they cannot be, none of it is sent.
        if !intents.is_empty() {
            c.ctx
                .audit
                .commit_lines(std::mem::take(&mut intents))
                .await
                .map_err(|e| PgError::Audit(e.to_string()))?;
        }
        if !out.is_empty() {
            up.write_all(&out).await?;
            out.clear();
        }
        if terminate {
            return Ok(true);
        }
    }
}

/// Queues the reply slot of a denied statement (the proxy writes its ErrorResponse).
fn queue_denied(c: &Common<'_>) {
    let mut u = Unit::new(true, Vec::new(), None);
    u.denied = true;
    let mut st = c.st();
    st.pending.push_back(Pending::Exec(Box::new(u)));
    st.outstanding += 1;
}

/// Classifies a query text. Texts that differ only in numeric literals share one cache
/// entry (`shape`): `true` when the result is of the shape (one statement, whose text is
/// then `sql` itself, not the shape's).
pub(super) fn classify(
    sql: &str,
    scs: bool,
) -> (Arc<std::result::Result<Classification, SqlError>>, bool) {
    let options = ParseOptions {
        standard_conforming_strings: scs,
    };
    let classifier = &global().classifier;
    if scs {
        if let Some(std::borrow::Cow::Owned(shape)) =
            crate::protocols::postgres::shape::literal_shape(sql)
        {
            let cls = classifier.classify_with(&shape, options);
            if matches!(cls.as_ref(), Ok(c) if c.statements.len() == 1) {
                return (cls, true);
            }
        }
    }
    (classifier.classify_with(sql, options), false)
}

/// The audit facts of each statement of a decided text.
pub(super) fn stmt_ctxs(sql: &str, checked: &Checked, shaped: bool) -> Vec<StmtCtx> {
    let decision = Arc::new(checked.decision.clone());
    let one = |text: String, summary: String| StmtCtx {
        text,
        summary: summary.into(),
        decision: decision.clone(),
    };
    let summary = |s: &Statement| {
        Classification {
            statements: vec![s.clone()],
        }
        .summary()
    };
    if shaped && checked.statements.len() == 1 {
        let s = &checked.statements[0];
        return vec![one(decide::shaped_text(sql), summary(s))];
    }
    if checked.statements.is_empty() {
        return vec![one(sql.to_owned(), checked.summary.clone())];
    }
    checked
        .statements
        .iter()
        .map(|s| one(s.text.clone(), summary(s)))
        .collect()
}

fn remember_prepared(stmts: &[Statement], prepared: &mut HashMap<String, Statement>) {
    for s in stmts {
        match (s.kind.as_str(), &s.prepared_name) {
            ("PrepareStmt", Some(n)) => {
                prepared.insert(n.clone(), s.clone());
            }
            ("DeallocateStmt", Some(n)) => {
                prepared.remove(n);
            }
            ("DeallocateStmt", None) => prepared.clear(),
            _ => {}
        }
    }
}
