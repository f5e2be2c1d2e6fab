//! One agent session: startup on both sides, then two pumps sharing a small state:
//! client → upstream (classify, decide, forward or substitute a failing statement) and
//! upstream → client (replace our substitutes' errors, mask rows, enforce row limits,
//! audit each statement). Responses are matched to requests with an ordered queue of what
//! the server still owes, so pipelining and the extended protocol stay in step.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::audit::{CommandRecord, SessionEnd, SessionStart, StatementRecord, Who};
use super::backend::{self, Field};
use super::codec::{Frame, FrameReader, DEFAULT_MAX_FRAME};
use super::enforce::{Checked, Enforcer};
use super::error::{PgError, Result};
use super::frontend::{self, Frontend, Startup};
use super::mask::{self, ResultMask};
use super::upstream::{self, Upstream};
use super::{cancel, global};
use crate::audit::{now_rfc3339, AuditLog};
use crate::identity::Identity;
use crate::masking::Masker;
use crate::policy::{Policy, PostgresResource, SqlDecision, Subject, Verdict};
use crate::sql::{Classification, ParseOptions, SqlError, Statement};

/// What the proxy's session hands over.
pub struct Ctx {
    pub session: String,
    pub instance: String,
    pub identity: Identity,
    pub policy: Arc<Policy>,
    /// Resource name and definition (from `policy`).
    pub resource: String,
    pub res: PostgresResource,
    pub audit: AuditLog,
    pub connect_timeout: Duration,
    pub bytes_up: Arc<AtomicU64>,
    pub bytes_down: Arc<AtomicU64>,
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Where `hold` rules park statements.
    pub approvals: Arc<crate::approvals::Registry>,
    /// The agents' bound token, if any (checked for expiry per statement).
    pub token: Option<Arc<crate::auth::TokenBinding>>,
}

/// How the session ended, for the connection record.
#[derive(Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
}

const DENY_TOKEN: &str = "interceptor_denied_";

/// Statement facts carried from request to response, for audit.
#[derive(Debug, Clone)]
struct StmtCtx {
    text: String,
    summary: String,
    decision: SqlDecision,
}

#[derive(Debug)]
struct Unit {
    simple: bool,
    denied: bool,
    stmts: VecDeque<StmtCtx>,
    row_limit: Option<u64>,
    portal: String,
    statement: String,
    formats: Vec<i16>,
    fields: Option<Vec<Field>>,
    mask: Option<ResultMask>,
    rows: u64,
    withheld: u64,
    masked: u64,
    started: Instant,
}

impl Unit {
    fn new(simple: bool, stmts: Vec<StmtCtx>, row_limit: Option<u64>) -> Unit {
        Unit {
            simple,
            denied: false,
            stmts: stmts.into(),
            row_limit,
            portal: String::new(),
            statement: String::new(),
            formats: Vec::new(),
            fields: None,
            mask: None,
            rows: 0,
            withheld: 0,
            masked: 0,
            started: Instant::now(),
        }
    }
}

#[derive(Debug)]
enum Pending {
    Parse,
    Bind { portal: String },
    Close,
    DescribeStatement(String),
    DescribePortal(String),
    Sync,
    Exec(Box<Unit>),
}

/// State both pumps touch (short critical sections, never across an await).
#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    denials: HashMap<String, Frame>,
    /// Requests that end with ReadyForQuery (Query, Sync, FunctionCall) not yet answered.
    outstanding: i64,
    tx: u8,
    scs: bool,
    stmt_fields: HashMap<String, Vec<Field>>,
    portal_fields: HashMap<String, Vec<Field>>,
}

struct Common<'a> {
    ctx: &'a Ctx,
    who: Who,
    state: Mutex<State>,
    statements: AtomicU64,
    denied: AtomicU64,
    masker: Option<Arc<Masker>>,
    pool_key: String,
    /// Woken when the server owes nothing more (after the answers were written).
    idle: tokio::sync::Notify,
}

impl Common<'_> {
    /// Returns once the server owes no answer (every Query/Sync got its ReadyForQuery) and
    /// those answers were written to the client.
    async fn wait_idle(&self) {
        loop {
            let woken = self.idle.notified();
            if self.st().outstanding == 0 {
                return;
            }
            woken.await;
        }
    }

    /// A held statement waits here for its approval; anything else passes through.
    /// What the session already queued for upstream is sent first, so earlier statements
    /// are not held back with it.
    async fn settle<W, CW>(
        &self,
        checked: Checked,
        sql: &str,
        policy: &Policy,
        client: &tokio::sync::Mutex<CW>,
        out: &mut BytesMut,
        up: &mut W,
    ) -> Result<Checked>
    where
        W: AsyncWrite + Unpin,
        CW: AsyncWrite + Unpin,
    {
        if checked.decision.verdict != Verdict::Hold {
            return Ok(checked);
        }
        if !out.is_empty() {
            up.write_all(out).await?;
            out.clear();
        }
        let who = super::hold::Who {
            session: &self.ctx.session,
            identity: serde_json::to_value(&self.who).unwrap_or_default(),
            agent_subject: self.ctx.token.as_ref().map(|t| t.claims().subject),
            resource: &self.ctx.resource,
        };
        let (checked, id) = super::hold::resolve(
            &self.ctx.approvals,
            policy,
            self.masker.as_deref(),
            who,
            sql,
            checked,
            client,
        )
        .await;
        if let (Some(id), true) = (id, checked.allowed()) {
            self.ctx.approvals.executed(&id, sql);
        }
        Ok(checked)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn audit_stmt(
        &self,
        protocol: &'static str,
        s: &StmtCtx,
        u: Option<&Unit>,
        sqlstate: Option<String>,
    ) {
        self.statements.fetch_add(1, Relaxed);
        if s.decision.verdict == Verdict::Deny {
            self.denied.fetch_add(1, Relaxed);
        }
        self.ctx.audit.record_any(&StatementRecord {
            time: now_rfc3339(),
            kind: "statement",
            session: self.ctx.session.clone(),
            instance: self.ctx.instance.clone(),
            identity: self.who.clone(),
            resource: self.ctx.resource.clone(),
            protocol,
            statement: s.text.clone(),
            classification: s.summary.clone(),
            decision: s.decision.verdict,
            rule: s.decision.rule.clone(),
            reason: s.decision.reason.clone(),
            rows: u.map_or(0, |u| u.rows - u.withheld),
            rows_withheld: u.map_or(0, |u| u.withheld),
            fields_masked: u.map_or(0, |u| u.masked),
            duration_ms: u.map_or(0.0, |u| u.started.elapsed().as_secs_f64() * 1000.0),
            sqlstate,
        });
    }
}

impl Common<'_> {
    /// (issue 6) The pre-forward record of an allowed command.
    fn intent(
        &self,
        protocol: &'static str,
        text: &str,
        summary: &str,
        d: &SqlDecision,
    ) -> CommandRecord {
        CommandRecord {
            time: now_rfc3339(),
            kind: "command",
            session: self.ctx.session.clone(),
            instance: self.ctx.instance.clone(),
            resource: self.ctx.resource.clone(),
            protocol,
            statement: text.to_owned(),
            classification: summary.to_owned(),
            decision: d.verdict,
            rule: d.rule.clone(),
        }
    }
}

fn fatal(code: &str, message: &str) -> BytesMut {
    backend::error("FATAL", code, message, None, None).to_bytes()
}

/// Serves one agent connection to a PostgreSQL resource until it ends.
pub async fn serve(client: TcpStream, ctx: Ctx) -> Outcome {
    let started = Instant::now();
    // Responses are written as they are rewritten, often in several writes: without
    // TCP_NODELAY, Nagle's algorithm and the client's delayed ACK stall them for up to 40 ms.
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY on the agent's connection failed");
    }
    let (cr, mut cw) = client.into_split();
    let max = ctx.res.max_message_bytes.map_or(DEFAULT_MAX_FRAME, |n| {
        n.get().min(usize::MAX as u64) as usize
    });
    let mut creader = FrameReader::new(cr, max, "client");
    let who = Who {
        pid: ctx.identity.pid,
        uid: ctx.identity.uid,
        comm: ctx.identity.comm.clone(),
        exe: ctx.identity.exe.clone(),
        cgroup: ctx.identity.cgroup.clone(),
    };

    // 1. Client startup: refuse encryption, accept any credentials (with a deadline).
    let params = match super::startup::client_startup(&mut creader, &mut cw, &ctx).await {
        super::startup::Begin::Params(p) => p,
        super::startup::Begin::Done(outcome) => return outcome,
    };

    // 2. Upstream: pooled or new.
    let pool_key = upstream::pool_key(&ctx.resource, &ctx.res);
    let idle = Duration::from_secs(ctx.res.pool_idle_secs.map_or(60, |n| n.get()));
    let mut start = SessionStart {
        time: now_rfc3339(),
        kind: "session_start",
        session: ctx.session.clone(),
        instance: ctx.instance.clone(),
        identity: who.clone(),
        resource: ctx.resource.clone(),
        client_user: Startup::param(&params, "user").map(str::to_owned),
        client_database: Startup::param(&params, "database").map(str::to_owned),
        database: ctx.res.database.clone(),
        user: ctx.res.user.clone(),
        reused: false,
        tls: false,
        error: None,
    };
    let masker = match &ctx.res.masking {
        None => None,
        Some(doc) => match global().masker(&ctx.resource, doc) {
            Ok(m) => Some(m),
            Err(e) => {
                let msg = format!(
                    "interceptor: masking of resource {} is misconfigured: {e}",
                    ctx.resource
                );
                let _ = cw.write_all(&fatal("XX000", &msg)).await;
                start.error = Some(msg.clone());
                ctx.audit.record_any(&start);
                return Outcome { error: Some(msg) };
            }
        },
    };
    let mut up = match global().pool.take(&pool_key, idle).await {
        Some(u) => {
            start.reused = true;
            u
        }
        None => match upstream::connect(&ctx.resource, &ctx.res, ctx.connect_timeout).await {
            Ok(u) => u,
            Err(e) => {
                let code = match e {
                    PgError::UpstreamAuth { .. } | PgError::Secret { .. } => "28P01",
                    _ => "08006",
                };
                let msg = format!("interceptor: cannot open resource {}: {e}", ctx.resource);
                let _ = cw.write_all(&fatal(code, &msg)).await;
                start.error = Some(e.to_string());
                ctx.audit.record_any(&start);
                return Outcome {
                    error: Some(e.to_string()),
                };
            }
        },
    };
    start.tls = up.tls;
    ctx.audit.record_any(&start);
    let target = cancel::Target {
        addr: up.addr,
        pid: up.session.pid,
        key: up.session.key,
    };
    let (cpid, ckey) = global().cancels.mint(target);
    let mut hello = BytesMut::new();
    backend::auth_ok().encode(&mut hello);
    let mut scs = true;
    for (k, v) in &up.session.params {
        if k == "standard_conforming_strings" {
            scs = v == "on";
        }
        backend::parameter_status(k, v).encode(&mut hello);
    }
    backend::backend_key(cpid, ckey).encode(&mut hello);
    backend::ready(b'I').encode(&mut hello);

    let common = Common {
        ctx: &ctx,
        who,
        state: Mutex::new(State {
            tx: b'I',
            scs,
            ..State::default()
        }),
        statements: AtomicU64::new(0),
        denied: AtomicU64::new(0),
        masker,
        pool_key: pool_key.clone(),
        idle: tokio::sync::Notify::new(),
    };
    let mut error = None;
    let mut clean_end = false;
    if let Err(e) = cw.write_all(&hello).await {
        error = Some(e.to_string());
    } else {
        // 3. The pumps.
        let mut stop = ctx.stop.clone();
        let Upstream { reader, writer, .. } = &mut up;
        let r = {
            let shared_cw = tokio::sync::Mutex::new(&mut cw);
            tokio::select! {
                r = client_pump(&common, &mut creader, writer, &shared_cw) => r,
                r = server_pump(&common, reader, &shared_cw) => r.map(|()| false),
                _ = async { let _ = stop.wait_for(|s| *s).await; } => Err(PgError::Closed("daemon shutdown")),
            }
        };
        match r {
            Ok(terminated) => clean_end = terminated,
            Err(e) => {
                let (code, msg) = match &e {
                    PgError::TooLarge { .. } => ("54000", format!("interceptor: {e}")),
                    PgError::Audit(_) => ("58030", format!("interceptor: {e}")),
                    PgError::Malformed { .. } | PgError::Unsupported(_) => {
                        ("08P01", format!("interceptor: {e}"))
                    }
                    PgError::Closed("daemon shutdown") => (
                        "57P01",
                        "interceptor: the interceptor is shutting down".to_owned(),
                    ),
                    _ => ("08006", format!("interceptor: {e}")),
                };
                if !matches!(e, PgError::Closed("client") | PgError::Io(_)) {
                    let _ = cw.write_all(&fatal(code, &msg)).await;
                }
                error = Some(e.to_string());
            }
        }
    }
    global().cancels.remove(cpid, ckey);
    let _ = cw.shutdown().await;

    // 4. Park the upstream when it is idle, else close it.
    let idle_now = {
        let st = common.st();
        st.outstanding == 0 && st.tx == b'I' && st.pending.is_empty()
    };
    let size = ctx.res.pool_size.unwrap_or(8) as usize;
    let pooled = clean_end && idle_now && size > 0;
    if pooled {
        global().pool.put(pool_key, up, size, idle).await;
    } else {
        upstream::close(up).await;
    }
    ctx.audit.record_any(&SessionEnd {
        time: now_rfc3339(),
        kind: "session_end",
        session: ctx.session.clone(),
        instance: ctx.instance.clone(),
        resource: ctx.resource.clone(),
        statements: common.statements.load(Relaxed),
        denied: common.denied.load(Relaxed),
        pooled,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: error.clone(),
    });
    Outcome { error }
}

pub(super) async fn cancel_request(ctx: &Ctx, pid: i32, key: i32) -> Outcome {
    match global().cancels.get(pid, key) {
        None => {
            tracing::info!(session = %ctx.session, "cancel request with an unknown key ignored");
            Outcome {
                error: Some("cancel request with an unknown key".into()),
            }
        }
        Some(t) => match cancel::send(t, ctx.connect_timeout).await {
            Ok(()) => {
                tracing::debug!(session = %ctx.session, upstream = %t.addr, "cancel request forwarded");
                Outcome::default()
            }
            Err(e) => Outcome {
                error: Some(format!("forwarding the cancel request to {}: {e}", t.addr)),
            },
        },
    }
}

/// Client → upstream. `Ok(true)`: the client sent Terminate; `Ok(false)`: it closed.
async fn client_pump<R, W, CW>(
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
    let mut intents: Vec<CommandRecord> = Vec::new();
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
                    let (cls, shaped) = classify(sql, c.st().scs);
                    let checked = enforcer.check(&cls, &sql_prepared);
                    let checked = c
                        .settle(checked, sql, &policy, client, &mut out, up)
                        .await?;
                    let stmts = stmt_ctxs(sql, &checked, shaped);
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
                            .unwrap_or_else(|| StmtCtx {
                                text: sql.to_owned(),
                                summary: checked.summary.clone(),
                                decision: checked.decision.clone(),
                            });
                        c.audit_stmt("simple", &denied, None, None);
                        let mut u = Unit::new(true, Vec::new(), None);
                        u.denied = true;
                        {
                            let mut st = c.st();
                            st.pending.push_back(Pending::Exec(Box::new(u)));
                            st.outstanding += 1;
                        }
                        deny_with(&checked, &mut out, None);
                    }
                }
                Frontend::Parse { name, query } => {
                    let (cls, shaped) = classify(query, c.st().scs);
                    let checked = enforcer.check(&cls, &sql_prepared);
                    let checked = c
                        .settle(checked, query, &policy, client, &mut out, up)
                        .await?;
                    let stmts = stmt_ctxs(query, &checked, shaped);
                    c.st().pending.push_back(Pending::Parse);
                    if checked.allowed() {
                        remember_prepared(&checked.statements, &mut sql_prepared);
                        statements.insert(name.to_owned(), (stmts, checked.decision.row_limit));
                        f.encode(&mut out);
                    } else {
                        statements.remove(name);
                        let denied = stmts.first().cloned().unwrap_or_else(|| StmtCtx {
                            text: query.to_owned(),
                            summary: checked.summary.clone(),
                            decision: checked.decision.clone(),
                        });
                        c.audit_stmt("extended", &denied, None, None);
                        deny_with(&checked, &mut out, Some(name));
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
                        &StmtCtx {
                            text: format!("<function call {oid}>"),
                            summary: checked.summary.clone(),
                            decision: checked.decision.clone(),
                        },
                        None,
                        None,
                    );
                    let mut u = Unit::new(true, Vec::new(), None);
                    u.denied = true;
                    {
                        let mut st = c.st();
                        st.pending.push_back(Pending::Exec(Box::new(u)));
                        st.outstanding += 1;
                    }
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
                .commit_many(&intents)
                .await
                .map_err(|e| PgError::Audit(e.to_string()))?;
            intents.clear();
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

/// Classifies a query text. Texts that differ only in numeric literals share one cache
/// entry (`shape`): `true` when the result is of the shape (one statement, whose text is
/// then `sql` itself, not the shape's).
fn classify(sql: &str, scs: bool) -> (Arc<std::result::Result<Classification, SqlError>>, bool) {
    let options = ParseOptions {
        standard_conforming_strings: scs,
    };
    let classifier = &global().classifier;
    if scs {
        if let Some(std::borrow::Cow::Owned(shape)) = super::shape::literal_shape(sql) {
            let cls = classifier.classify_with(&shape, options);
            if matches!(cls.as_ref(), Ok(c) if c.statements.len() == 1) {
                return (cls, true);
            }
        }
    }
    (classifier.classify_with(sql, options), false)
}

fn stmt_ctxs(sql: &str, checked: &Checked, shaped: bool) -> Vec<StmtCtx> {
    if shaped && checked.statements.len() == 1 {
        let s = &checked.statements[0];
        return vec![StmtCtx {
            text: sql.trim().trim_end_matches(';').trim_end().to_owned(),
            summary: Classification {
                statements: vec![s.clone()],
            }
            .summary(),
            decision: checked.decision.clone(),
        }];
    }
    if checked.statements.is_empty() {
        return vec![StmtCtx {
            text: sql.to_owned(),
            summary: checked.summary.clone(),
            decision: checked.decision.clone(),
        }];
    }
    checked
        .statements
        .iter()
        .map(|s| StmtCtx {
            text: s.text.clone(),
            summary: Classification {
                statements: vec![s.clone()],
            }
            .summary(),
            decision: checked.decision.clone(),
        })
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

/// Upstream → client. Returns only on error or end of stream.
async fn server_pump<R, W>(
    c: &Common<'_>,
    reader: &mut FrameReader<R>,
    client: &tokio::sync::Mutex<W>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let Some(f) = reader.next().await? else {
            return Err(PgError::Closed("upstream"));
        };
        let mut frames = vec![f];
        while out.len() < 256 * 1024 {
            match reader.try_frame()? {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        for f in frames {
            on_backend(c, f, &mut out).await?;
        }
        if !out.is_empty() {
            c.ctx.bytes_down.fetch_add(out.len() as u64, Relaxed);
            client.lock().await.write_all(&out).await?;
            out.clear();
        }
        if c.st().outstanding == 0 {
            c.idle.notify_waiters();
        }
    }
}

async fn on_backend(c: &Common<'_>, f: Frame, out: &mut BytesMut) -> Result<()> {
    match f.tag {
        backend::ERROR => {
            let fields = backend::fields(&f.body)?;
            let sqlstate = backend::field(&fields, b'C').map(str::to_owned);
            let mut frame = f;
            let mut ours = false;
            let mut st = c.st();
            if let Some(m) = backend::field(&fields, b'M') {
                if let Some(i) = m.find(DENY_TOKEN) {
                    let tok: String = m[i..]
                        .chars()
                        .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                        .collect();
                    if let Some(e) = st.denials.remove(&tok) {
                        frame = e;
                        ours = true;
                    }
                }
            }
            match st.pending.front_mut() {
                Some(Pending::Exec(u)) if u.simple => {
                    if let Some(s) = u.stmts.pop_front() {
                        c.audit_stmt("simple", &s, Some(u), sqlstate);
                    }
                    u.stmts.clear();
                }
                Some(Pending::Sync) | None => {}
                Some(_) => {
                    // Extended protocol: the server skips everything up to Sync.
                    let mut first = true;
                    while let Some(p) = st.pending.front() {
                        if matches!(p, Pending::Sync) {
                            break;
                        }
                        if let Some(Pending::Exec(u)) = st.pending.pop_front() {
                            if first && !ours && !u.denied {
                                if let Some(s) = u.stmts.front() {
                                    c.audit_stmt("extended", s, Some(&u), sqlstate.clone());
                                }
                            }
                        }
                        first = false;
                    }
                }
            }
            frame.encode(out);
        }
        backend::READY => {
            let mut st = c.st();
            st.tx = f.body.first().copied().unwrap_or(b'I');
            st.outstanding -= 1;
            while let Some(p) = st.pending.pop_front() {
                match p {
                    Pending::Sync => break,
                    Pending::Exec(u) if u.simple => break,
                    _ => {}
                }
            }
            if st.outstanding <= 0 {
                st.outstanding = 0;
                st.denials.clear();
            }
            f.encode(out);
        }
        backend::ROW_DESCRIPTION => {
            let fields = backend::row_description(&f.body)?;
            let simple_needs_plan = {
                let mut st = c.st();
                match st.pending.front() {
                    Some(Pending::DescribeStatement(n)) => {
                        let n = n.clone();
                        st.pending.pop_front();
                        st.stmt_fields.insert(n, fields.clone());
                        false
                    }
                    Some(Pending::DescribePortal(n)) => {
                        let n = n.clone();
                        st.pending.pop_front();
                        st.portal_fields.insert(n, fields.clone());
                        false
                    }
                    Some(Pending::Exec(_)) => true,
                    _ => false,
                }
            };
            if simple_needs_plan {
                let plan = match &c.masker {
                    Some(m) => Some(plan_for(c, m, &fields, &[]).await),
                    None => None,
                };
                if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
                    u.fields = Some(fields);
                    u.mask = plan;
                }
            }
            f.encode(out);
        }
        backend::NO_DATA => {
            let mut st = c.st();
            if matches!(
                st.pending.front(),
                Some(Pending::DescribeStatement(_) | Pending::DescribePortal(_))
            ) {
                st.pending.pop_front();
            }
            f.encode(out);
        }
        b'1' | b'3' => {
            let mut st = c.st();
            if matches!(st.pending.front(), Some(Pending::Parse | Pending::Close)) {
                st.pending.pop_front();
            }
            f.encode(out);
        }
        b'2' => {
            let mut st = c.st();
            if let Some(Pending::Bind { portal }) = st.pending.front() {
                let portal = portal.clone();
                st.pending.pop_front();
                st.portal_fields.remove(&portal);
            }
            f.encode(out);
        }
        backend::DATA_ROW => data_row(c, f, out).await?,
        backend::COMMAND_COMPLETE | backend::EMPTY_QUERY | backend::PORTAL_SUSPENDED => {
            let mut st = c.st();
            let mut tag_frame = f;
            if let Some(Pending::Exec(u)) = st.pending.front_mut() {
                if u.withheld > 0 && tag_frame.tag == backend::COMMAND_COMPLETE {
                    let limit = u.row_limit.unwrap_or(0);
                    let note = format!(
                        "interceptor: row limit {limit} reached; {} more row(s) were not sent",
                        u.withheld
                    );
                    let mut notice = backend::error("WARNING", "01000", &note, None, None);
                    notice.tag = backend::NOTICE;
                    notice.encode(out);
                    let tag = backend::command_tag(&tag_frame.body)?;
                    let new = match tag.rsplit_once(' ') {
                        Some((verb, n)) if n.parse::<u64>().is_ok() => format!("{verb} {limit}"),
                        _ => tag.to_owned(),
                    };
                    tag_frame = super::frontend::query(&new);
                    tag_frame.tag = backend::COMMAND_COMPLETE;
                }
                let simple = u.simple;
                if let Some(s) = u.stmts.pop_front() {
                    c.audit_stmt(
                        if simple { "simple" } else { "extended" },
                        &s,
                        Some(u),
                        None,
                    );
                }
                if simple {
                    u.rows = 0;
                    u.withheld = 0;
                    u.masked = 0;
                    u.fields = None;
                    u.mask = None;
                    u.started = Instant::now();
                } else {
                    st.pending.pop_front();
                }
            }
            tag_frame.encode(out);
        }
        backend::PARAMETER_STATUS => {
            if let Ok((k, v)) = backend::parse_parameter_status(&f.body) {
                if k == "standard_conforming_strings" {
                    c.st().scs = v == "on";
                }
            }
            f.encode(out);
        }
        _ => f.encode(out),
    }
    Ok(())
}

/// A plan for these fields, naming their tables first (side query on a pooled connection).
async fn plan_for(c: &Common<'_>, m: &Masker, fields: &[Field], formats: &[i16]) -> ResultMask {
    let catalog = global().catalog(&c.pool_key);
    let oids: Vec<u32> = fields
        .iter()
        .map(|f| f.table_oid)
        .filter(|o| *o != 0 && catalog.get(*o).is_none())
        .collect();
    if !oids.is_empty() {
        if let Err(e) = fill_catalog(c, &catalog, &oids).await {
            tracing::warn!(session = %c.ctx.session, error = %e, "table names unknown; column rules by table may not apply");
        }
    }
    mask::plan(m, fields, formats, &catalog)
}

async fn fill_catalog(c: &Common<'_>, catalog: &mask::Catalog, oids: &[u32]) -> Result<()> {
    let idle = Duration::from_secs(c.ctx.res.pool_idle_secs.map_or(60, |n| n.get()));
    let mut conn = match global().pool.take(&c.pool_key, idle).await {
        Some(conn) => conn,
        None => upstream::connect(&c.ctx.resource, &c.ctx.res, c.ctx.connect_timeout).await?,
    };
    let r = catalog.fill(oids, &mut conn).await;
    let size = c.ctx.res.pool_size.unwrap_or(8) as usize;
    global()
        .pool
        .put(c.pool_key.clone(), conn, size.max(1), idle)
        .await;
    r
}

async fn data_row(c: &Common<'_>, f: Frame, out: &mut BytesMut) -> Result<()> {
    // Row limit and counting.
    let needs_plan = {
        let mut st = c.st();
        let State {
            pending,
            portal_fields,
            stmt_fields,
            ..
        } = &mut *st;
        match pending.front_mut() {
            Some(Pending::Exec(u)) => {
                u.rows += 1;
                if u.row_limit.is_some_and(|l| u.rows > l) {
                    u.withheld += 1;
                    return Ok(());
                }
                if c.masker.is_none() {
                    f.encode(out);
                    return Ok(());
                }
                if u.mask.is_some() {
                    None
                } else if let Some(fl) = portal_fields.get(&u.portal) {
                    Some((fl.clone(), Vec::new()))
                } else if let Some(fl) = stmt_fields.get(&u.statement) {
                    Some((fl.clone(), u.formats.clone()))
                } else {
                    Some((Vec::new(), Vec::new()))
                }
            }
            _ => {
                if c.masker.is_none() {
                    f.encode(out);
                    return Ok(());
                }
                Some((Vec::new(), Vec::new()))
            }
        }
    };
    let masker = c.masker.as_ref().expect("checked above");
    if let Some((fields, formats)) = needs_plan {
        if fields.is_empty() {
            // No description of this result: fail closed, every value becomes NULL.
            let values = backend::data_row(&f.body)?;
            let n = values.iter().filter(|v| v.is_some()).count() as u64;
            backend::encode_data_row(values.iter().map(|_| None), out);
            if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
                u.masked += n;
            }
            return Ok(());
        }
        let plan = plan_for(c, masker, &fields, &formats).await;
        if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
            u.mask = Some(plan);
        }
    }
    let mut st = c.st();
    if let Some(Pending::Exec(u)) = st.pending.front_mut() {
        if let Some(m) = &u.mask {
            u.masked += mask::rewrite_row(masker, m, &f.body, out)?;
        }
    }
    Ok(())
}
