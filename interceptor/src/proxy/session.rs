//! One accepted connection: kernel record → identity → policy decision → relay or reset,
//! then exactly one audit record.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use interceptor_common::PROXY_MARK;
use tokio::net::{TcpSocket, TcpStream};

use super::{splice, LiveConn, Shared};
use crate::{
    audit::{now_rfc3339, ConnectionOpen, ConnectionRecord},
    ebpf::key_addr,
    identity::Identity,
    policy::{evaluate, ConnRequest, Decision, Subject, Verdict},
};

pub async fn handle(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let started = Instant::now();
    let time = now_rfc3339();
    shared.metrics.accepted.fetch_add(1, Relaxed);
    let n = shared.next_session.fetch_add(1, Relaxed);
    let session = format!("{}-{n:06}", shared.session_prefix);
    let mut rec = ConnectionRecord {
        time,
        kind: "connection",
        session: session.clone(),
        instance: shared.instance.clone(),
        identity: None,
        client: peer.to_string(),
        destination: None,
        decision: Verdict::Deny,
        rule: None,
        reason: String::new(),
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0.0,
        error: None,
    };

    // 1. Who connected where: the kernel's record, claimed by the client address.
    let Some(kernel) = shared.clients.take(peer) else {
        shared.metrics.refused_no_record.fetch_add(1, Relaxed);
        rec.reason =
            "no kernel record for this connection: it did not come through the redirect; refused"
                .into();
        tracing::warn!(%session, client = %peer, "{}", rec.reason);
        reset(&client);
        finish(&shared, rec, started);
        return;
    };
    let dst = key_addr(&kernel.orig);
    let mut identity = Identity::from_record(
        &kernel,
        Path::new("/proc"),
        shared.cgroup_name(kernel.cgroup_id),
    );
    let token = shared.agent_token(&shared.policy());
    identity.subject = token.as_ref().map(|t| t.subject.clone());
    rec.destination = Some(dst.to_string());

    // 2. The decision (pure), or the built-in loop guard.
    let decision = if is_own_listener(dst, &shared.listeners) {
        Decision::own_listener()
    } else {
        let policy = shared.policy();
        let subject = Subject {
            cgroup: identity.cgroup.as_deref(),
            uid: identity.uid,
            gid: identity.gid,
            exe: identity.exe.as_deref(),
            comm: &identity.comm,
            token: token.as_ref(),
        };
        evaluate(&policy, &ConnRequest { subject, dst })
    };
    rec.decision = decision.verdict;
    rec.rule = decision.rule.clone();
    rec.reason = decision.reason.clone();

    if decision.verdict == Verdict::Deny {
        shared.metrics.denied.fetch_add(1, Relaxed);
        tracing::info!(%session, pid = identity.pid, comm = %identity.comm, %dst, rule = ?decision.rule, reason = %decision.reason, "denied");
        rec.identity = Some(identity);
        reset(&client);
        finish(&shared, rec, started);
        return;
    }

    // (issue 6) Write before forward: the allowed connection is on record before anything
    // reaches the upstream; if the audit store cannot take it, the connection is reset.
    if let Err(e) = shared
        .audit
        .commit(&ConnectionOpen {
            time: rec.time.clone(),
            kind: "connection_open",
            session: &session,
            instance: &shared.instance,
            identity: &identity,
            client: peer.to_string(),
            destination: dst.to_string(),
            rule: decision.rule.as_deref(),
        })
        .await
    {
        tracing::error!(%session, %dst, error = %e, "connection refused: cannot record it (fail closed)");
        rec.error = Some(format!("refused, not recorded durably: {e}"));
        rec.identity = Some(identity);
        reset(&client);
        finish(&shared, rec, started);
        return;
    }

    // 3a. (issue 3) A PostgreSQL resource of the policy: the proxy speaks the protocol on
    //     both sides (protocols::postgres opens its own upstream connections through
    //     `connect_upstream`, pooled) instead of splicing bytes.
    let policy = shared.policy();
    if let Some((name, res)) = policy.postgres_resource(dst) {
        let (name, res) = (name.to_owned(), res.clone());
        serve_postgres(client, &shared, rec, identity, n, dst, name, res, started).await;
        return;
    }

    // 3b. (issue 4) An HTTP service of the policy: protocol detection, then HTTP rules per
    //     request (protocols::http), or SNI passthrough.
    if let Some((name, svc)) = policy.http_service(dst) {
        let (name, svc) = (name.to_owned(), svc.clone());
        serve_http(
            client, &shared, rec, identity, token, n, dst, name, svc, started,
        )
        .await;
        return;
    }

    // 3. Allowed: connect upstream (marked, so no hook ever redirects it) and relay.
    let upstream = match connect_upstream(dst, shared.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            shared.metrics.upstream_errors.fetch_add(1, Relaxed);
            tracing::warn!(%session, %dst, error = %e, "upstream connect failed");
            rec.error = Some(format!("upstream connect to {dst} failed: {e}"));
            rec.identity = Some(identity);
            // The client already saw its connect succeed: a reset is how it learns.
            reset(&client);
            finish(&shared, rec, started);
            return;
        }
    };
    shared.metrics.allowed.fetch_add(1, Relaxed);
    shared.metrics.active.fetch_add(1, Relaxed);
    tracing::debug!(%session, pid = identity.pid, %dst, rule = ?decision.rule, "allowed");
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            n,
            LiveConn {
                session: session.clone(),
                pid: identity.pid,
                comm: identity.comm.clone(),
                destination: dst,
                rule: decision.rule.clone(),
                started,
                bytes_up: up.clone(),
                bytes_down: down.clone(),
            },
        );
    rec.identity = Some(identity);
    let mut stop = shared.shutdown.subscribe();
    let relay = splice::relay(&client, &upstream, &up, &down);
    tokio::pin!(relay);
    let (e_up, e_down) = tokio::select! {
        ends = &mut relay => ends,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            rec.error = Some("ended by daemon shutdown".into());
            splice::abort(&client, &upstream);
            relay.await
        }
    };
    shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&n);
    shared.metrics.active.fetch_sub(1, Relaxed);
    rec.bytes_up = up.load(Relaxed);
    rec.bytes_down = down.load(Relaxed);
    shared.metrics.bytes_up.fetch_add(rec.bytes_up, Relaxed);
    shared.metrics.bytes_down.fetch_add(rec.bytes_down, Relaxed);
    let errors: Vec<String> = [("agent→upstream", e_up), ("upstream→agent", e_down)]
        .into_iter()
        .filter_map(|(dir, e)| match e {
            splice::End::Error(e) => Some(format!("{dir}: {e}")),
            splice::End::Eof => None,
        })
        .collect();
    if !errors.is_empty() {
        let e = errors.join("; ");
        rec.error = Some(match rec.error.take() {
            Some(first) => format!("{first}; {e}"),
            None => e,
        });
    }
    finish(&shared, rec, started);
}

fn finish(shared: &Shared, mut rec: ConnectionRecord, started: Instant) {
    rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    shared.audit.record(&rec);
}

/// A destination that reaches one of our listeners: the same address and port; for a
/// listener on the unspecified address, any loopback address; a connect to the unspecified
/// address (which Linux sends to loopback) for a loopback listener. Another loopback
/// address with the same port (127.0.0.2:P next to our 127.0.0.1:P) is someone else.
fn is_own_listener(dst: SocketAddr, listeners: &[SocketAddr]) -> bool {
    let ip = dst.ip().to_canonical();
    listeners.iter().any(|l| {
        let lip = l.ip().to_canonical();
        l.port() == dst.port()
            && (ip == lip
                || (lip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
                || (ip.is_unspecified() && lip.is_loopback()))
    })
}

/// Closes with RST instead of FIN, so the client sees "connection reset".
pub(crate) fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    if let Err(e) =
        nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::Linger, &linger)
    {
        tracing::debug!(error = %e, "SO_LINGER failed; the client will see a normal close");
    }
}

/// The bookkeeping of a session a protocol module serves: listed as live for `status`,
/// counted in the metrics, and its connection record finished with the byte totals.
struct Tracked {
    n: u64,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Tracked {
    fn begin(
        shared: &Shared,
        n: u64,
        rec: &ConnectionRecord,
        identity: &Identity,
        dst: SocketAddr,
        started: Instant,
    ) -> Tracked {
        shared.metrics.allowed.fetch_add(1, Relaxed);
        shared.metrics.active.fetch_add(1, Relaxed);
        let t = Tracked {
            n,
            up: Arc::new(AtomicU64::new(0)),
            down: Arc::new(AtomicU64::new(0)),
        };
        shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                n,
                LiveConn {
                    session: rec.session.clone(),
                    pid: identity.pid,
                    comm: identity.comm.clone(),
                    destination: dst,
                    rule: rec.rule.clone(),
                    started,
                    bytes_up: t.up.clone(),
                    bytes_down: t.down.clone(),
                },
            );
        t
    }

    fn end(
        self,
        shared: &Shared,
        mut rec: ConnectionRecord,
        error: Option<String>,
        started: Instant,
    ) {
        shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.n);
        shared.metrics.active.fetch_sub(1, Relaxed);
        rec.bytes_up = self.up.load(Relaxed);
        rec.bytes_down = self.down.load(Relaxed);
        shared.metrics.bytes_up.fetch_add(rec.bytes_up, Relaxed);
        shared.metrics.bytes_down.fetch_add(rec.bytes_down, Relaxed);
        rec.error = error;
        finish(shared, rec, started);
    }
}

/// (issue 3) Runs a PostgreSQL session (`protocols::postgres::serve`) and writes the
/// connection record, like the splice path does.
#[allow(clippy::too_many_arguments)]
async fn serve_postgres(
    client: TcpStream,
    shared: &Arc<Shared>,
    mut rec: ConnectionRecord,
    identity: Identity,
    n: u64,
    dst: SocketAddr,
    resource: String,
    res: crate::policy::PostgresResource,
    started: Instant,
) {
    use crate::protocols::postgres;
    let t = Tracked::begin(shared, n, &rec, &identity, dst, started);
    let ctx = postgres::Ctx {
        session: rec.session.clone(),
        instance: shared.instance.clone(),
        identity: identity.clone(),
        current_policy: {
            let shared = shared.clone();
            Arc::new(move || shared.policy())
        },
        resource,
        res,
        audit: shared.audit.clone(),
        connect_timeout: shared.connect_timeout,
        bytes_up: t.up.clone(),
        bytes_down: t.down.clone(),
        stop: shared.shutdown.subscribe(),
        approvals: shared.approvals.clone(),
        token: shared.token.clone(),
        agent_fd: Some(client.as_raw_fd()),
    };
    rec.identity = Some(identity);
    let outcome = postgres::serve(client, ctx).await;
    t.end(shared, rec, outcome.error, started);
}

/// (issue 4) Serves an HTTP service connection (`protocols::http::serve`) and writes the
/// connection record, like the splice path does.
#[allow(clippy::too_many_arguments)]
async fn serve_http(
    client: TcpStream,
    shared: &Arc<Shared>,
    mut rec: ConnectionRecord,
    identity: Identity,
    token: Option<crate::policy::AgentToken>,
    n: u64,
    dst: SocketAddr,
    service: String,
    svc: crate::policy::HttpService,
    started: Instant,
) {
    use crate::protocols::http;
    let t = Tracked::begin(shared, n, &rec, &identity, dst, started);
    let base = http::audit::RecordBase::new(&rec.session, &shared.instance, &identity, &service);
    let ctx = http::Ctx {
        session: rec.session.clone(),
        instance: shared.instance.clone(),
        identity: identity.clone(),
        // Each request is decided by the daemon's policy of its time (a reload applies
        // to open connections), not by the one this connection was accepted under.
        current_policy: {
            let shared = shared.clone();
            Arc::new(move || shared.policy())
        },
        service,
        svc,
        dst,
        audit: shared.audit.clone(),
        connect_timeout: shared.connect_timeout,
        bytes_up: t.up.clone(),
        bytes_down: t.down.clone(),
        stop: shared.shutdown.subscribe(),
        approvals: shared.approvals.clone(),
        token: shared.token.clone(),
        token_now: token,
        base,
        agent_fd: Some(client.as_raw_fd()),
    };
    rec.identity = Some(identity);
    let outcome = http::serve(client, ctx).await;
    t.end(shared, rec, outcome.error, started);
}

/// Connects to an upstream with `SO_MARK = PROXY_MARK` so the kernel hooks never redirect
/// it. Every proxy-originated upstream socket must come from here (also used by
/// `protocols::postgres`).
pub(crate) async fn connect_upstream(
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let sock = match dst.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    nix::sys::socket::setsockopt(&sock.as_fd(), nix::sys::socket::sockopt::Mark, &PROXY_MARK)?;
    let s = tokio::time::timeout(timeout, sock.connect(dst))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        })??;
    s.set_nodelay(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_guard() {
        let l: Vec<SocketAddr> = vec![
            "127.0.0.1:15001".parse().unwrap(),
            "[::1]:15001".parse().unwrap(),
        ];
        assert!(is_own_listener("127.0.0.1:15001".parse().unwrap(), &l));
        // Another loopback address on the same port is not us (a listener there is
        // someone else's: a bound 127.0.0.1 listener never gets 127.0.0.9's connections).
        assert!(!is_own_listener("127.0.0.9:15001".parse().unwrap(), &l));
        assert!(is_own_listener("0.0.0.0:15001".parse().unwrap(), &l));
        assert!(is_own_listener("[::]:15001".parse().unwrap(), &l));
        assert!(is_own_listener("[::1]:15001".parse().unwrap(), &l));
        let any: Vec<SocketAddr> = vec!["0.0.0.0:15003".parse().unwrap()];
        assert!(is_own_listener("127.0.0.9:15003".parse().unwrap(), &any));
        assert!(!is_own_listener("192.0.2.1:15003".parse().unwrap(), &any));
        assert!(is_own_listener(
            "[::ffff:127.0.0.1]:15001".parse().unwrap(),
            &l
        ));
        assert!(!is_own_listener("127.0.0.2:15002".parse().unwrap(), &l));
        assert!(!is_own_listener("192.0.2.1:15001".parse().unwrap(), &l));
    }
}
