//! The client → upstream direction of a session: frontend messages checked statement by
//! statement (classification, policy, holds, write-before-forward) before they go upstream.

use super::classify::{audit_text, DEFAULT_MAX_QUERY};
use super::decide::Decisions;
use super::named::*;
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
    let mut policy = (c.ctx.current_policy)();
    let mut sql_prepared: HashMap<String, Statement> = HashMap::new();
    // What the server holds under each statement name (names as the server keys them:
    // `pg_name`), and what each portal was bound from (`None`: a statement the proxy did
    // not parse, e.g. one of SQL `PREPARE`).
    let mut statements: HashMap<String, Arc<Parsed>> = HashMap::new();
    let mut portals: HashMap<String, Bound> = HashMap::new();
    let mut token_n = 0u64;
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut intents: Vec<String> = Vec::new();
    let max_query = c.ctx.res.max_query_bytes.map_or(DEFAULT_MAX_QUERY, |n| {
        usize::try_from(n.get()).unwrap_or(usize::MAX)
    });
    let mut decisions = Decisions::new(c.ctx.token.is_none(), max_query);
    // An allowed privileged statement (it may change how the server reads the statements
    // after it: `standard_conforming_strings`) was sent and not yet answered.
    let mut barrier = false;
    // A privileged statement was parsed since the last Sync: the barrier follows the Sync.
    let mut priv_parsed = false;
    // A COPY that writes was sent: before the next message, learn whether the server is
    // now reading copy data (it then ignores Sync and Flush, which must not be counted).
    let mut copy_sent = false;
    // The server is reading copy data.
    let mut copying = false;
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
        // A reload applies from the next batch of messages: decisions start over, and
        // statements parsed under the old policy are decided again when executed.
        let now = (c.ctx.current_policy)();
        if !Arc::ptr_eq(&now, &policy) {
            policy = now;
            decisions = Decisions::new(c.ctx.token.is_none(), max_query);
        }
        {
            let mut st = c.st();
            for name in std::mem::take(&mut st.parse_failed) {
                statements.remove(&name);
            }
            // Portals end with their transaction.
            let idle = st.idle_answered;
            portals.retain(|_, b| b.epoch >= idle);
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
            masker: c.masker.as_deref(),
            routines: Some((&c.routines, &c.ctx.res)),
            relations: Some(&c.catalog),
        };
        for f in &frames {
            if barrier {
                // Classify what follows with the settings the server then has.
                barrier = false;
                flush(c, &mut intents, &mut out, up).await?;
                c.wait_idle().await;
            }
            if copy_sent && !copying {
                // Until the COPY's request is answered, each copy it starts (a Query may
                // hold several) switches the server to reading copy data.
                flush(c, &mut intents, &mut out, up).await?;
                copying = c.copy_started().await;
                copy_sent = copying;
            }
            c.ctx.bytes_up.fetch_add(5 + f.body.len() as u64, Relaxed);
            let msg = Frontend::parse(f)?;
            if copying {
                match msg {
                    Frontend::CopyData => {}
                    Frontend::CopyDone | Frontend::CopyFail => {
                        copying = false;
                        c.st().copy_in = false;
                    }
                    // Ignored by the server during the copy: not forwarded, not counted.
                    Frontend::Sync | Frontend::Flush => continue,
                    _ => {
                        return Err(PgError::malformed(
                            "client",
                            "a message other than CopyData, CopyDone or CopyFail during COPY FROM STDIN (the server would abort the copy); the session is ended",
                        ))
                    }
                }
                f.encode(&mut out);
                continue;
            }
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
                    let d = decide_text(c, &mut decisions, sql, &enforcer, &sql_prepared).await;
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
                        barrier |= privileged(&checked.statements);
                        forget_routines_after_ddl(c, &checked.statements);
                        let mut u = Unit::new(true, stmts, checked.decision.row_limit);
                        u.invalidates = Invalidate::of(&checked.statements);
                        u.copy_from = copies_in(&checked.statements);
                        copy_sent |= u.copy_from;
                        if u.invalidates.portals {
                            // Cursors declared in SQL are portals of the same namespace.
                            portals.clear();
                        }
                        // SQL PREPARE/DEALLOCATE/DISCARD share the statements' namespace.
                        if u.invalidates.all_statements {
                            statements.clear();
                        }
                        for n in &u.invalidates.statements {
                            statements.remove(&pg_name(n));
                        }
                        let mut st = c.st();
                        st.pending.push_back(Pending::Exec(Box::new(u)));
                        st.owe();
                        drop(st);
                        f.encode(&mut out);
                    } else {
                        let denied = stmts
                            .get(checked.decision.statement.unwrap_or(0))
                            .cloned()
                            .unwrap_or_else(|| {
                                StmtCtx::new(audit_text(sql), &checked.summary, &checked.decision)
                            });
                        c.audit_stmt("simple", &denied, None, None);
                        queue_denied(c);
                        deny_with(checked, &mut out, None);
                    }
                }
                Frontend::Parse { name, query } => {
                    let d = decide_text(c, &mut decisions, query, &enforcer, &sql_prepared).await;
                    // A statement a rule holds is asked about at each Execute, with its
                    // parameters: one approval must not let it run again and again.
                    let held = d.checked.decision.verdict == Verdict::Hold;
                    let (checked, stmts) = (&d.checked, d.stmts(query));
                    let key = pg_name(name);
                    // A named statement that exists is not replaced: the server refuses
                    // the Parse (42P05) and keeps the old one.
                    let new = name.is_empty() || !statements.contains_key(&key);
                    c.st().pending.push_back(Pending::Parse {
                        name: key.clone(),
                        new,
                    });
                    if checked.allowed() || held {
                        remember_prepared(&checked.statements, &mut sql_prepared);
                        priv_parsed |= privileged(&checked.statements);
                        forget_routines_after_ddl(c, &checked.statements);
                        if new {
                            let p = Parsed {
                                text: query.to_owned(),
                                stmts,
                                limit: checked.decision.row_limit,
                                policy: policy.clone(),
                                copy_from: copies_in(&checked.statements),
                                user_routines: checked.user_routines,
                                held,
                            };
                            statements.insert(key, Arc::new(p));
                        }
                        f.encode(&mut out);
                    } else {
                        if new {
                            statements.remove(&key);
                        }
                        let denied = stmts.first().cloned().unwrap_or_else(|| {
                            StmtCtx::new(audit_text(query), &checked.summary, &checked.decision)
                        });
                        c.audit_stmt("extended", &denied, None, None);
                        deny_with(checked, &mut out, Some(name));
                    }
                }
                Frontend::Bind {
                    portal,
                    statement,
                    result_formats,
                    params,
                } => {
                    // What the portal runs is fixed now: a later Parse of the same name
                    // does not change it.
                    let from = statements.get(&pg_name(statement)).cloned();
                    let bound = Bound {
                        statement: statement.to_owned(),
                        params: from.as_ref().filter(|p| p.held).map(|_| params.describe()),
                        from,
                        epoch: c.st().requests,
                    };
                    portals.insert(pg_name(portal), bound);
                    c.st().pending.push_back(Pending::Bind {
                        portal: pg_name(portal),
                        statement: pg_name(statement),
                        formats: result_formats,
                    });
                    f.encode(&mut out);
                }
                Frontend::Describe { kind, name } => {
                    let p = if kind == b'S' {
                        Pending::DescribeStatement(pg_name(name))
                    } else {
                        Pending::DescribePortal(pg_name(name))
                    };
                    c.st().pending.push_back(p);
                    f.encode(&mut out);
                }
                Frontend::Execute { portal, .. } => {
                    let portal = &pg_name(portal);
                    let mut held_params = None;
                    let run = match portals.get(portal) {
                        // A portal this session did not bind is a cursor declared in SQL:
                        // executing it is fetching from it.
                        None => Run::Decide(format!(
                            "FETCH ALL FROM \"{}\"",
                            portal.replace('"', "\"\"")
                        )),
                        // Decided again when the decision may have changed since the Parse,
                        // and every time for a held one.
                        Some(Bound {
                            from: Some(p),
                            params,
                            ..
                        }) if c.ctx.token.is_some()
                            || p.user_routines
                            || p.held
                            || !Arc::ptr_eq(&p.policy, &policy) =>
                        {
                            held_params = params.clone();
                            Run::Decide(p.text.clone())
                        }
                        Some(Bound { from: Some(p), .. }) => {
                            Run::Known(p.stmts.clone(), p.limit, p.copy_from)
                        }
                        // A statement of SQL `PREPARE`: decided as `EXECUTE` of it (its
                        // rule, holds, row limit, audit).
                        Some(Bound {
                            statement: name,
                            from: None,
                            ..
                        }) if sql_prepared.contains_key(name) => {
                            Run::Decide(format!("EXECUTE \"{}\"", name.replace('"', "\"\"")))
                        }
                        Some(Bound {
                            statement: name, ..
                        }) => Run::Refuse(format!(
                            "execution of statement {name:?}, which this session did not parse through the interceptor"
                        )),
                    };
                    let (stmts, limit, copy_from) = match run {
                        Run::Known(s, l, copy) => (s, l, copy),
                        Run::Decide(text) => {
                            let d = decide_text(c, &mut decisions, &text, &enforcer, &sql_prepared)
                                .await;
                            // Approvers see the values the statement runs with.
                            let shown = match &held_params {
                                Some(p) if !p.is_empty() => format!("{text}\n-- parameters: {p}"),
                                _ => text.clone(),
                            };
                            let settled = c
                                .settle_held(&d, &shown, &policy, client, &mut out, up)
                                .await?;
                            let (checked, s) = match &settled {
                                Some(s) => (s, d.restate(&text, s)),
                                None => (&d.checked, d.stmts(&text)),
                            };
                            if checked.allowed() {
                                let copy = copies_in(&checked.statements);
                                (s, checked.decision.row_limit, copy)
                            } else {
                                let denied = s.first().cloned().unwrap_or_else(|| {
                                    StmtCtx::new(text.clone(), &checked.summary, &checked.decision)
                                });
                                refuse_execute(c, &denied, &mut statements);
                                deny_with(checked, &mut out, Some(""));
                                continue;
                            }
                        }
                        Run::Refuse(reason) => {
                            let checked = Checked::new(
                                "Execute".into(),
                                Vec::new(),
                                SqlDecision::denied(reason),
                            );
                            let text = format!("<execute of portal {portal:?}>");
                            let denied = StmtCtx::new(text, &checked.summary, &checked.decision);
                            refuse_execute(c, &denied, &mut statements);
                            deny_with(&checked, &mut out, Some(""));
                            continue;
                        }
                    };
                    if let Some(first) = stmts.first() {
                        let text: Vec<&str> = stmts.iter().map(|s| s.text.as_str()).collect();
                        intents.push(c.intent(
                            "extended",
                            &text.join("; "),
                            &first.summary,
                            &first.decision,
                        ));
                    }
                    let mut u = Unit::new(false, stmts, limit);
                    u.portal = portal.clone();
                    u.copy_from = copy_from;
                    copy_sent |= copy_from;
                    c.st().pending.push_back(Pending::Exec(Box::new(u)));
                    f.encode(&mut out);
                }
                Frontend::Close { kind, name } => {
                    if kind == b'S' {
                        statements.remove(&pg_name(name));
                    } else {
                        portals.remove(&pg_name(name));
                    }
                    c.st().pending.push_back(Pending::Close {
                        kind,
                        name: pg_name(name),
                    });
                    f.encode(&mut out);
                }
                Frontend::Sync => {
                    barrier |= std::mem::take(&mut priv_parsed);
                    let mut st = c.st();
                    st.pending.push_back(Pending::Sync);
                    st.owe();
                    drop(st);
                    f.encode(&mut out);
                }
                Frontend::FunctionCall { oid } => {
                    let checked = Checked::new(
                        "FunctionCall".into(),
                        Vec::new(),
                        SqlDecision::denied(format!("fast-path function calls (function {oid}) bypass statement classification and are not allowed")),
                    );
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
        flush(c, &mut intents, &mut out, up).await?;
        if terminate {
            return Ok(true);
        }
    }
}

/// (issue 6) Write before forward: the commands so far are on disk before any byte of
/// them goes upstream; if they cannot be, none of it is sent.
async fn flush<W: AsyncWrite + Unpin>(
    c: &Common<'_>,
    intents: &mut Vec<String>,
    out: &mut BytesMut,
    up: &mut W,
) -> Result<()> {
    if !intents.is_empty() {
        c.ctx
            .audit
            .commit_lines(std::mem::take(intents))
            .await
            .map_err(|e| PgError::Audit(e.to_string()))?;
    }
    if !out.is_empty() {
        up.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

fn privileged(stmts: &[Statement]) -> bool {
    stmts
        .iter()
        .any(|s| s.operations.contains(&crate::sql::Operation::Privileged))
}

/// Queues the reply slot of a denied statement (the proxy writes its ErrorResponse).
fn queue_denied(c: &Common<'_>) {
    let mut u = Unit::new(true, Vec::new(), None);
    u.denied = true;
    let mut st = c.st();
    st.pending.push_back(Pending::Exec(Box::new(u)));
    st.owe();
}
