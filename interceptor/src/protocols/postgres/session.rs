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
use super::{cancel, global, notices};
use crate::audit::{now_rfc3339, AuditLog};
use crate::identity::Identity;
use crate::masking::Masker;
use crate::policy::{Policy, PostgresResource, SqlDecision, Subject, Verdict};
use crate::sql::{Classification, ParseOptions, SqlError, Statement};

mod classify;
mod client;
mod decide;
mod named;
mod server;
mod state;

use client::client_pump;
use server::server_pump;
use state::{Invalidate, Pending, State, StmtCtx, Unit};

/// What the proxy's session hands over.
pub struct Ctx {
    pub session: String,
    pub instance: String,
    pub identity: Identity,
    /// The daemon's policy of now: each batch of the agent's messages is decided by the
    /// policy current when it arrives (a reload applies to open sessions).
    pub current_policy: crate::protocols::http::PolicySource,
    /// Resource name and definition (from the policy the session started under).
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
    /// The agent's socket, watched for a hang-up while a statement is held.
    pub agent_fd: Option<std::os::fd::RawFd>,
}

/// How the session ended, for the connection record.
#[derive(Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
}

const DENY_TOKEN: &str = "interceptor_denied_";

struct Common<'a> {
    ctx: &'a Ctx,
    who: Who,
    /// `who` as JSON, for the statement records.
    who_json: Box<serde_json::value::RawValue>,
    state: Mutex<State>,
    statements: AtomicU64,
    denied: AtomicU64,
    masker: Option<Arc<Masker>>,
    pool_key: String,
    /// Table names of the resource (shared by its sessions).
    catalog: Arc<mask::Catalog>,
    /// Functions of the database (shared by the resource's sessions).
    routines: Arc<super::routines::Routines>,
    /// Masking plans by result shape (fields, formats).
    plans: Mutex<server::Plans>,
    /// Woken when the server owes nothing more (after the answers were written).
    idle: tokio::sync::Notify,
    /// Woken by the agent's CancelRequest (withdraws a statement held for approval).
    on_cancel: Arc<tokio::sync::Notify>,
}

impl Common<'_> {
    fn pool_idle(&self) -> Duration {
        Duration::from_secs(self.ctx.res.pool_idle_secs.map_or(60, |n| n.get()))
    }

    /// An idle upstream connection for the interceptor's own catalog queries: a pooled one,
    /// or a new login.
    async fn side_connection(&self) -> Result<upstream::Upstream> {
        match global().pool.take(&self.pool_key, self.pool_idle()).await {
            Some(conn) => Ok(conn),
            None => {
                let (ctx, timeout) = (self.ctx, self.ctx.connect_timeout);
                upstream::connect(&ctx.resource, &ctx.res, timeout).await
            }
        }
    }

    /// Returns a [`Common::side_connection`] to the pool (reset first).
    async fn give_back(&self, conn: upstream::Upstream) {
        let size = self.ctx.res.pool_size.unwrap_or(8) as usize;
        let pool = &global().pool;
        pool.put(
            pool.returning(&self.pool_key),
            conn,
            size.max(1),
            self.pool_idle(),
        )
        .await;
    }

    /// After a COPY that writes was sent: whether the server switched to reading copy
    /// data (CopyInResponse), or else answered the COPY (an error, another COPY).
    async fn copy_started(&self) -> bool {
        loop {
            {
                let st = self.st();
                let waiting = st
                    .pending
                    .iter()
                    .any(|p| matches!(p, Pending::Exec(u) if u.copy_from));
                if st.copy_in || !waiting {
                    return st.copy_in;
                }
            }
            // Rare (COPY only) and short (one server round trip): polled.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

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
        let held_subject = who.agent_subject.clone();
        let gone = async {
            tokio::select! {
                _ = self.on_cancel.notified() => "the agent cancelled the statement (CancelRequest)".to_owned(),
                why = crate::approvals::gone::hung_up(self.ctx.agent_fd) => why,
            }
        };
        let (checked, id) = super::hold::resolve(
            &self.ctx.approvals,
            policy,
            self.masker.as_deref(),
            who,
            sql,
            checked,
            super::hold::Agent { client, gone },
        )
        .await;
        let mut checked = checked;
        // The agent's token may have expired (or been replaced) while it waited: an
        // approval does not renew it.
        let now = self.ctx.token.as_ref().map(|t| t.view(policy.issuers()));
        let changed = crate::approvals::token_recheck(held_subject.as_deref(), now.as_ref());
        if let (Some(why), true) = (changed, checked.allowed()) {
            checked.decision.verdict = Verdict::Deny;
            checked.decision.reason = why;
        }
        if let (Some(id), true) = (id, checked.allowed()) {
            self.ctx.approvals.executed(&id, sql);
        }
        Ok(checked)
    }

    /// `settle` for a decision that holds (`None` for any other: it stands as decided).
    async fn settle_held<W, CW>(
        &self,
        d: &decide::Decided,
        sql: &str,
        policy: &Policy,
        client: &tokio::sync::Mutex<CW>,
        out: &mut BytesMut,
        up: &mut W,
    ) -> Result<Option<Checked>>
    where
        W: AsyncWrite + Unpin,
        CW: AsyncWrite + Unpin,
    {
        if d.checked.decision.verdict != Verdict::Hold {
            return Ok(None);
        }
        let checked = d.checked.clone();
        Ok(Some(
            self.settle(checked, sql, policy, client, out, up).await?,
        ))
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
            session: &self.ctx.session,
            instance: &self.ctx.instance,
            identity: &self.who_json,
            resource: &self.ctx.resource,
            protocol,
            statement: &s.text,
            classification: &s.summary,
            decision: s.decision.verdict,
            rule: s.decision.rule.as_deref(),
            reason: &s.decision.reason,
            rows: u.map_or(0, |u| u.rows - u.withheld),
            rows_withheld: u.map_or(0, |u| u.withheld),
            fields_masked: u.map_or(0, |u| u.masked),
            duration_ms: u.map_or(0.0, |u| u.started.elapsed().as_secs_f64() * 1000.0),
            sqlstate,
        });
    }
}

impl Common<'_> {
    /// (issue 6) The pre-forward record of an allowed command, serialised.
    fn intent(&self, protocol: &'static str, text: &str, summary: &str, d: &SqlDecision) -> String {
        crate::audit::line(&CommandRecord {
            time: now_rfc3339(),
            kind: "command",
            session: &self.ctx.session,
            instance: &self.ctx.instance,
            resource: &self.ctx.resource,
            protocol,
            statement: text,
            classification: summary,
            decision: d.verdict,
            rule: d.rule.as_deref(),
        })
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
    let who = Who::of(&ctx.identity);

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
    // E.g. `ALTER ROLE … SET client_encoding = 'SJIS'` on the upstream role: statements in
    // such an encoding cannot be classified as the server reads them.
    let encoding = up
        .session
        .params
        .iter()
        .find(|(k, _)| k == "client_encoding");
    if let Some((_, v)) = encoding.filter(|(_, v)| !server::encoding_is_safe(v)) {
        let msg = format!("interceptor: the upstream session of resource {} uses client_encoding {v}, in which statements cannot be classified; set it to UTF8 for the role", ctx.resource);
        let _ = cw.write_all(&fatal("0A000", &msg)).await;
        start.error = Some(msg.clone());
        ctx.audit.record_any(&start);
        return Outcome { error: Some(msg) };
    }
    ctx.audit.record_any(&start);
    let target = cancel::Target {
        addr: up.addr,
        pid: up.session.pid,
        key: up.session.key,
    };
    let on_cancel = Arc::new(tokio::sync::Notify::new());
    let (cpid, ckey) = global().cancels.mint(target, on_cancel.clone());
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

    let who_json = who.to_raw();
    let common = Common {
        ctx: &ctx,
        who,
        who_json,
        state: Mutex::new(State {
            tx: b'I',
            scs,
            ..State::default()
        }),
        statements: AtomicU64::new(0),
        denied: AtomicU64::new(0),
        masker,
        catalog: global().catalog(&pool_key),
        routines: global().routines(&pool_key),
        plans: Mutex::default(),
        pool_key: pool_key.clone(),
        idle: tokio::sync::Notify::new(),
        on_cancel,
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

    // 4. Park the upstream when it is idle, else close it. Announced before the agent
    // sees its connection end: an agent reconnecting at once then waits for this one.
    let idle_now = {
        let st = common.st();
        st.outstanding == 0 && st.tx == b'I' && st.pending.is_empty()
    };
    let size = ctx.res.pool_size.unwrap_or(8) as usize;
    let pooled = clean_end && idle_now && size > 0;
    let returning = pooled.then(|| global().pool.returning(&pool_key));
    let _ = cw.shutdown().await;
    if let Some(ret) = returning {
        global().pool.put(ret, up, size, idle).await;
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
        Some((t, on_cancel)) => {
            // A statement held for approval is withdrawn; a running one is cancelled by
            // the server, as the agent asked.
            on_cancel.notify_waiters();
            cancel_upstream(ctx, t).await
        }
    }
}

async fn cancel_upstream(ctx: &Ctx, t: cancel::Target) -> Outcome {
    match cancel::send(t, ctx.connect_timeout).await {
        Ok(()) => {
            tracing::debug!(session = %ctx.session, upstream = %t.addr, "cancel request forwarded");
            Outcome::default()
        }
        Err(e) => Outcome {
            error: Some(format!("forwarding the cancel request to {}: {e}", t.addr)),
        },
    }
}
