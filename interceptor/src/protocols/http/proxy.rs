//! The server side: hyper HTTP/1.1 (keep-alive, chunked, upgrades only when a rule allows
//! them) over the plain or intercepted agent connection, or HTTP/2 when the agent chose it
//! in ALPN on an intercepted TLS connection; per request: decide, inject, forward, mask,
//! audit.

use std::convert::Infallible;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::counting::{counted, Counting, Finish};
use super::held_body::ReqBody;
use super::idle::Streams;
use super::request_target::{host as host_of, origin_form, uri_host};
use super::respond::{denied, fail, keeping, Body, REQUEST_TIMEOUT_RAW};
use super::upstream::{Driver, Target, Tls, Upstream};
use super::{global, inject, Ctx, Outcome};
use crate::policy::{evaluate_http, HttpEffects, HttpRequest, Verdict};

/// One agent connection being served.
struct Conn {
    ctx: Arc<Ctx>,
    tls: &'static str,
    sni: Option<String>,
    /// The agent negotiated HTTP/2 (ALPN `h2`).
    h2: bool,
    upstream: Arc<Upstream>,
    /// Bytes read from the agent so far, and that count when the last response was done:
    /// more read since means a request is in progress (a head timeout then gets a 408;
    /// an idle keep-alive connection is closed silently).
    read: Arc<AtomicU64>,
    read_at_done: Arc<AtomicU64>,
}

impl Conn {
    fn new(
        ctx: Arc<Ctx>,
        tls: &'static str,
        sni: Option<String>,
        h2: bool,
        target: Target,
    ) -> (Conn, Driver) {
        let (upstream, driver) = Upstream::new(target);
        let conn = Conn {
            ctx,
            tls,
            sni,
            h2,
            upstream,
            read: Arc::default(),
            read_at_done: Arc::default(),
        };
        (conn, driver)
    }

    fn mid_request(&self) -> bool {
        self.read.load(Relaxed) > self.read_at_done.load(Relaxed)
    }
}

/// Plain HTTP from the agent, plain HTTP upstream.
pub async fn serve_plain(client: TcpStream, ctx: Arc<Ctx>) -> Outcome {
    // A second handle on the socket, to answer 408 after hyper gave up on a slow head.
    let dup = client.as_fd().try_clone_to_owned().ok();
    let target = Target {
        dst: ctx.dst,
        tls: None,
        connect_timeout: ctx.connect_timeout,
    };
    let (conn, driver) = Conn::new(ctx.clone(), "plain", None, false, target);
    let out = serve_conn(client, conn, driver).await;
    if out.timed_out {
        if let Some(fd) = dup {
            use std::io::Write;
            let _ = (&std::net::TcpStream::from(fd)).write(REQUEST_TIMEOUT_RAW);
        }
        super::refuse(
            &ctx,
            "plain",
            out.started,
            408,
            "the request head did not arrive within header_timeout_secs".into(),
        );
    }
    Outcome { error: out.error }
}

/// TLS from the agent, terminated with a certificate of the local CA for its SNI.
pub async fn serve_tls(client: TcpStream, ctx: Arc<Ctx>, sni: Option<String>) -> Outcome {
    let started = Instant::now();
    let name = match super::server_name::for_service(&ctx.service, &ctx.svc, sni.as_deref()) {
        Ok(n) => n,
        Err(reason) => {
            crate::proxy::session::reset(&client);
            let mut rec = ctx.record("http_request", "intercept");
            rec.host = sni
                .as_deref()
                .map(|s| super::server_name::cut(s).to_owned());
            rec.reason = reason;
            rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            ctx.audit.record_any(&rec);
            return Outcome { error: None };
        }
    };
    let setup = global().ca().and_then(|ca| {
        let server = ca.server_config_for(&name).map_err(|e| e.to_string())?;
        let client = global().client_configs(&ctx.service, &ctx.svc)?;
        Ok((server, client))
    });
    // The SNI as decided and verified upstream: canonical.
    let (sni, name) = (sni.map(|_| name.to_string()), name.to_string());
    let (server_cfg, client_cfg) = match setup {
        Ok(c) => c,
        Err(e) => {
            crate::proxy::session::reset(&client);
            return super::refuse(
                &ctx,
                "intercept",
                started,
                0,
                format!("TLS interception unavailable: {e}"),
            );
        }
    };
    let accept = tokio_rustls::TlsAcceptor::from(server_cfg).accept(client);
    let tls = match tokio::time::timeout(ctx.svc.header_timeout(), accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return super::refuse(&ctx, "intercept", started, 0, format!("TLS handshake with the agent failed: {e} (does it trust the local CA? see `interceptor ca export`)"));
        }
        Err(_) => {
            return super::refuse(
                &ctx,
                "intercept",
                started,
                0,
                "TLS handshake with the agent timed out".into(),
            );
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let (h1_cfg, h2_cfg) = client_cfg;
    let target = Target {
        dst: ctx.dst,
        tls: Some(Tls {
            h1: h1_cfg,
            h2: h2_cfg,
            name,
        }),
        connect_timeout: ctx.connect_timeout,
    };
    let (conn, driver) = Conn::new(ctx.clone(), "intercept", sni, h2, target);
    let out = serve_conn(tls, conn, driver).await;
    if out.timed_out {
        super::refuse(
            &ctx,
            "intercept",
            out.started,
            408,
            "the request head did not arrive within header_timeout_secs".into(),
        );
    }
    Outcome { error: out.error }
}

/// Polls the upstream connections for as long as the agent side runs (the `Upstream`, and
/// so the driver's queue, lives as long as the agent connection).
async fn drive(d: &mut Driver) -> Infallible {
    d.run().await;
    std::future::pending().await
}

/// Streams one HTTP/2 agent connection may have open at once (each may hold an upstream
/// HTTP/1.1 connection).
const H2_MAX_STREAMS: u32 = 100;

struct ConnEnd {
    error: Option<String>,
    timed_out: bool,
    started: Instant,
}

async fn serve_conn<I>(io: I, conn: Conn, mut driver: Driver) -> ConnEnd
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let ctx = conn.ctx.clone();
    let io = TokioIo::new(Counting {
        inner: io,
        read: conn.read.clone(),
    });
    let h2 = conn.h2;
    let conn = Arc::new(conn);
    let conn2 = conn.clone();
    let mut stop = ctx.stop.clone();
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let res = if h2 {
        // Each request holds its stream open until its response body is done.
        let streams = Streams::new();
        let s = streams.clone();
        let svc = service_fn(move |req| {
            let (conn, open) = (conn.clone(), s.open());
            async move {
                let resp = handle(conn, req).await?;
                Ok::<_, Infallible>(resp.map(|b| keeping(b, open)))
            }
        });
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(ctx.svc.max_header_bytes() as u32)
            .max_concurrent_streams(H2_MAX_STREAMS);
        let c = b.serve_connection(io, svc);
        tokio::pin!(c);
        let idle = streams.idle_for(ctx.svc.header_timeout());
        tokio::select! {
            r = c.as_mut() => r,
            n = drive(&mut driver) => match n {},
            // Ends like an idle HTTP/1.1 keep-alive connection (GOAWAY, then closed).
            _ = async { tokio::select! { _ = stopping => {}, _ = idle => {} } } => {
                c.as_mut().graceful_shutdown();
                tokio::select! {
                    r = c.as_mut() => r,
                    n = drive(&mut driver) => match n {},
                    _ = tokio::time::sleep(ctx.svc.header_timeout()), if !*ctx.stop.borrow() => Ok(()),
                }
            }
        }
    } else {
        let svc = service_fn(move |req| handle(conn.clone(), req));
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(ctx.svc.header_timeout())
            .max_buf_size(ctx.svc.max_header_bytes())
            .keep_alive(true);
        let c = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => r,
            n = drive(&mut driver) => match n {},
            _ = stopping => {
                c.as_mut().graceful_shutdown();
                tokio::select! {
                    r = c.as_mut() => r,
                    n = drive(&mut driver) => match n {},
                }
            }
        }
    };
    // Connections still busy (an upgrade being handed over, a closing exchange) finish on
    // their own once the agent side and its `Upstream` are gone.
    tokio::spawn(async move { driver.run().await });
    match res {
        Ok(()) => ConnEnd {
            error: None,
            timed_out: false,
            started,
        },
        // A head timeout on an idle keep-alive connection is just its end.
        Err(e) if e.is_timeout() && !conn2.mid_request() => ConnEnd {
            error: None,
            timed_out: false,
            started,
        },
        Err(e) => ConnEnd {
            timed_out: e.is_timeout(),
            error: Some(format!("HTTP connection: {e}")),
            started,
        },
    }
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Streamed, unless a hold reads it whole for approvers first.
    let mut req = req.map(ReqBody::Streaming);
    let started = Instant::now();
    let ctx = conn.ctx.clone();
    let mut rec = ctx.record("http_request", conn.tls);
    let host = host_of(&req);
    let bad_host = host.as_ref().err().cloned();
    let host = host.unwrap_or_default();
    rec.method = Some(req.method().as_str().to_owned());
    rec.host = host.clone();
    // Decided, audited and sent upstream in normalised form (`request_target.rs`).
    let target = origin_form(&req);
    rec.path = Some(match &target {
        Ok((p, _)) => p.clone(),
        Err(_) => req.uri().path().to_owned(),
    });
    rec.query = req.uri().query().map(str::to_owned);
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let mut fin = Finish {
        rec: None,
        lease: None,
        done: (conn.read.clone(), conn.read_at_done.clone()),
        started,
        up: up.clone(),
        down: down.clone(),
        ctx: ctx.clone(),
    };
    let (path, target) = match bad_host.map_or(target, Err) {
        Ok(v) => v,
        Err(e) => {
            rec.reason = e;
            return Ok(denied(
                rec,
                fin,
                StatusCode::BAD_REQUEST,
                "request refused",
                false,
            ));
        }
    };
    if conn.tls == "plain" {
        if let Some(why) = super::plain_leg::refused(&ctx.service, &ctx.svc) {
            rec.reason = why;
            let e = super::plain_leg::USE_HTTPS;
            return Ok(denied(rec, fin, StatusCode::BAD_REQUEST, e, false));
        }
    }
    // Absolute-form URIs must name the same host as `Host`.
    let uri_host = uri_host(&req);
    // The policy of now: a reload applies to the next request of an open connection.
    let policy = ctx.policy();
    let token = ctx.token_view();
    let mut d = evaluate_http(
        &policy,
        &HttpRequest {
            subject: ctx.subject_with(token.as_ref()),
            service: &ctx.service,
            host: host.as_deref(),
            sni: conn.sni.as_deref(),
            method: Some(req.method().as_str()),
            path: Some(&path),
            headers: Some(req.headers()),
        },
    );
    if d.verdict == Verdict::Hold {
        // Parked until an approver decides; only this request waits.
        match super::hold::settle(&ctx, &mut req, host.as_deref(), &path, &d).await {
            Ok((verdict, reason)) => (d.verdict, d.reason) = (verdict, reason),
            Err(e) => {
                rec.rule = d.rule.map(str::to_owned);
                let rule = d.rule.unwrap_or("-");
                rec.reason = format!("rule {rule} holds this request for approval, but {e}");
                return Ok(denied(rec, fin, e.status(), e.summary(), true));
            }
        }
    }
    rec.decision = d.verdict;
    rec.rule = d.rule.map(str::to_owned);
    rec.reason = d.reason.clone();
    if d.verdict != Verdict::Allow {
        return Ok(denied(
            rec,
            fin,
            StatusCode::FORBIDDEN,
            "forbidden by interceptor policy",
            false,
        ));
    }
    if uri_host.is_some() && uri_host != host {
        rec.reason = "the request URI names another host than the Host header".into();
        return Ok(denied(
            rec,
            fin,
            StatusCode::FORBIDDEN,
            "forbidden by interceptor policy",
            true,
        ));
    }
    let effects: HttpEffects = d.effects.cloned().unwrap_or_default();
    if conn.tls == "plain" {
        let rule = rec.rule.as_deref();
        if let Some(why) =
            super::plain_leg::refused_injection(&ctx.service, &ctx.svc, rule, &effects)
        {
            rec.reason = why;
            let e = super::plain_leg::USE_HTTPS;
            return Ok(denied(rec, fin, StatusCode::BAD_REQUEST, e, false));
        }
    }
    let upgrade = req.headers().contains_key(header::UPGRADE);
    if req.method() == Method::CONNECT {
        rec.reason = "CONNECT is not proxied".into();
        return Ok(denied(
            rec,
            fin,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            true,
        ));
    }
    // What the allowing rule still does not let through (the connection stays usable).
    let refused = if upgrade && !effects.allow_upgrade {
        Some(format!(
            "protocol upgrade refused: rule {} does not set allow_upgrade",
            rec.rule.as_deref().unwrap_or("-")
        ))
    } else {
        inject::refused_method(req.method(), &effects.inject).or_else(|| {
            req.headers()
                .get(header::UPGRADE)
                .and_then(inject::refused_upgrade)
        })
    };
    if let Some(why) = refused {
        rec.reason = why;
        return Ok(denied(
            rec,
            fin,
            StatusCode::FORBIDDEN,
            "forbidden by interceptor policy",
            false,
        ));
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let agent_version = parts.version;
    // HTTP/2 requests name the host in :authority, not Host; upstream gets HTTP/1.1 form
    // (rewritten back to HTTP/2 form when that connection is HTTP/2).
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, a);
        }
    }
    parts.version = http::Version::HTTP_11;
    let te_trailers = parts
        .headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    parts.uri = target;
    let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
    inject::strip_hop_by_hop(&mut parts.headers);
    if matches!(parts.method, Method::GET | Method::HEAD)
        && !hyper::body::Body::is_end_stream(&body)
        && hyper::body::Body::size_hint(&body).exact().is_none()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        // hyper's HTTP/1.1 client sends a GET or HEAD body of unknown length as no body at
        // all (length 0, the bytes lost): the chunking is asked for explicitly (other
        // methods get it from hyper; an HTTP/2 upstream drops the header).
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    if te_trailers {
        // gRPC and other trailer users need it end to end.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(u) = upgrade_to.filter(|_| upgrade) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u);
    }
    match inject::apply(&mut parts.headers, &effects.inject) {
        Ok(names) => rec.injected = names,
        Err(e) => {
            let why = e.to_string();
            return Ok(fail(
                rec,
                fin,
                StatusCode::BAD_GATEWAY,
                "credential injection failed",
                why,
                false,
            ));
        }
    }
    let masks = effects.masks() && parts.method != Method::HEAD;
    if masks {
        // The whole body, in a form that can be decoded (a 206 is withheld: `masked.rs`).
        super::mask::for_masking(&mut parts.headers);
    }
    // Write before forward: the request's intent is durable before it goes upstream.
    if let Err(e) = ctx
        .audit
        .commit(&super::audit::HttpCommand {
            time: crate::audit::now_rfc3339(),
            kind: "http_command",
            session: &rec.session,
            instance: &rec.instance,
            service: &rec.service,
            method: rec.method.as_deref().unwrap_or(""),
            host: rec.host.as_deref(),
            path: rec.path.as_deref().unwrap_or(""),
            query: rec.query.as_deref(),
            rule: rec.rule.as_deref(),
        })
        .await
    {
        tracing::error!(session = %ctx.session, error = %e, "audit store refused the request's record; not forwarding it (fail closed)");
        return Ok(fail(
            rec,
            fin,
            StatusCode::SERVICE_UNAVAILABLE,
            "the interceptor cannot record this request, so it was not sent (fail closed)",
            format!("audit: {e}"),
            true,
        ));
    }
    let body = counted(body, up.clone(), ctx.bytes_up.clone(), None);
    let body = super::body_idle::limited(body, ctx.svc.header_timeout());
    let sent = conn
        .upstream
        .send(Request::from_parts(parts, body), conn.h2);
    let mut resp = match sent.await {
        Ok((r, lease)) => {
            fin.lease = lease;
            r
        }
        Err(e) if super::body_idle::stalled(&e) => {
            let (status, e) = (StatusCode::REQUEST_TIMEOUT, e.to_string());
            return Ok(fail(rec, fin, status, "request body timeout", e, true));
        }
        Err(e) => {
            let e = e.to_string();
            tracing::warn!(session = %ctx.session, service = %ctx.service, error = %e, "upstream request failed");
            return Ok(fail(
                rec,
                fin,
                StatusCode::BAD_GATEWAY,
                "upstream request failed",
                e,
                false,
            ));
        }
    };
    rec.status = resp.status().as_u16();
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let server_up = hyper::upgrade::on(&mut resp);
            Upstream::upgraded(fin.lease.take());
            let (total_up, total_down) = (ctx.bytes_up.clone(), ctx.bytes_down.clone());
            // The record is written when the upgraded connection ends.
            fin.rec = Some(rec);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = (client_up.await, server_up.await) {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    if let Ok((u, dn)) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                        total_up.fetch_add(u, Relaxed);
                        total_down.fetch_add(dn, Relaxed);
                        fin.up.fetch_add(u, Relaxed);
                        fin.down.fetch_add(dn, Relaxed);
                    }
                }
                drop(fin);
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(
                parts,
                Empty::new().map_err(|n| match n {}).boxed(),
            ));
        }
    }
    let (mut parts, body) = resp.into_parts();
    parts.version = agent_version;
    // (`respond` removes the hop-by-hop headers, after looking at Transfer-Encoding.)
    Ok(super::masked::respond(&ctx, masks.then_some(&effects), rec, fin, down, parts, body).await)
}
