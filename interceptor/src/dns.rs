//! UDP DNS proxy: one listener per allowed resolver (on 127.0.0.1 or ::1). The kernel
//! rewrites the agent's datagrams to a resolver onto that resolver's listener; the proxy finds
//! the caller (sock_diag → socket cookie → `UDP_CALLERS`), decides the name with
//! `policy::evaluate_dns` (pure), forwards allowed queries to the real resolver (SO_MARK) and
//! relays the answer, or answers REFUSED. One audit record per query.

mod owner;
pub mod wire;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use interceptor_common::PROXY_MARK;
use serde::Serialize;
use tokio::{net::UdpSocket, sync::Semaphore};

use crate::{
    audit::now_rfc3339,
    ebpf::UdpCallers,
    identity::Identity,
    policy::{self, Verdict},
    proxy::Shared,
    sockdiag,
};

/// How long the proxy waits for the real resolver.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Queries being answered at once, over all listeners. Each forwarded query holds a socket
/// and a buffer until its answer or `UPSTREAM_TIMEOUT`; beyond this many the proxy answers
/// SERVFAIL at once (like dnsmasq's `dns-forward-max`), so an agent flooding a slow
/// resolver cannot exhaust the daemon's file descriptors or memory.
pub const MAX_IN_FLIGHT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot bind the DNS proxy listener on {addr}: {source} (is loopback up?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One audit record per DNS query.
#[derive(Debug, Clone, Serialize)]
pub struct DnsRecord {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub instance: String,
    pub identity: Option<Identity>,
    pub client: String,
    pub resolver: String,
    pub qname: String,
    pub qtype: String,
    /// The answer's rcode as the agent got it (REFUSED when denied).
    pub rcode: Option<String>,
    pub decision: Verdict,
    pub rule: Option<String>,
    pub reason: String,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The running listeners: (resolver, listener address).
pub struct DnsProxy {
    pub listeners: Vec<(IpAddr, SocketAddr)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsProxy {
    /// Binds one listener per resolver and starts serving. IPv6 resolvers are skipped (with
    /// a warning) when the host has no IPv6 loopback: DNS to them then stays denied.
    pub async fn start(
        resolvers: &[IpAddr],
        shared: Arc<Shared>,
        callers: Arc<UdpCallers>,
    ) -> Result<DnsProxy, DnsError> {
        let mut listeners = Vec::new();
        let mut tasks = Vec::new();
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        for &resolver in resolvers {
            let addr: SocketAddr = if resolver.is_ipv4() {
                (Ipv4Addr::LOCALHOST, 0).into()
            } else {
                (Ipv6Addr::LOCALHOST, 0).into()
            };
            let sock = match UdpSocket::bind(addr).await {
                Ok(s) => s,
                Err(e) if resolver.is_ipv6() => {
                    tracing::warn!(%resolver, error = %e, "no IPv6 loopback for the DNS proxy: DNS to this resolver stays denied");
                    continue;
                }
                Err(source) => return Err(DnsError::Bind { addr, source }),
            };
            let local = sock
                .local_addr()
                .map_err(|source| DnsError::Bind { addr, source })?;
            listeners.push((resolver, local));
            let listener = Listener {
                sock: Arc::new(sock),
                local,
                resolver,
            };
            tasks.push(tokio::spawn(serve(
                listener,
                shared.clone(),
                callers.clone(),
                limit.clone(),
            )));
        }
        Ok(DnsProxy { listeners, tasks })
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// One listener: where agents' datagrams to `resolver` arrive.
#[derive(Clone)]
struct Listener {
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    resolver: IpAddr,
}

async fn serve(l: Listener, shared: Arc<Shared>, callers: Arc<UdpCallers>, limit: Arc<Semaphore>) {
    let mut buf = vec![0u8; 4096];
    let mut warned: Option<Instant> = None;
    loop {
        let (n, peer) = match l.sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "DNS proxy receive failed");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    limit = MAX_IN_FLIGHT,
                    "DNS proxy overloaded: answering SERVFAIL until queries in flight finish (a slow resolver or an agent flooding it)"
                );
                warned = Some(Instant::now());
            }
            overloaded(&l, peer, &query, &shared).await;
            continue;
        };
        let (l, shared, callers) = (l.clone(), shared.clone(), callers.clone());
        tokio::spawn(async move {
            handle(&l, peer, query, &shared, &callers).await;
            drop(permit);
        });
    }
}

/// Answers SERVFAIL at once, without looking up the caller or forwarding; audited.
async fn overloaded(l: &Listener, peer: SocketAddr, query: &[u8], shared: &Shared) {
    let Some(q) = wire::parse_query(query) else {
        return;
    };
    let reply = wire::error_reply(query, &q, wire::RCODE_SERVFAIL);
    let decision = policy::Decision {
        verdict: Verdict::Deny,
        rule: None,
        reason: format!(
            "DNS proxy overloaded: {MAX_IN_FLIGHT} queries already in flight; answered SERVFAIL without forwarding"
        ),
    };
    record(
        shared,
        l,
        peer,
        None,
        q,
        &reply,
        decision,
        Instant::now(),
        None,
    );
    if let Err(e) = l.sock.send_to(&reply, peer).await {
        tracing::debug!(%peer, error = %e, "DNS proxy: reply not delivered");
    }
}

/// Queues the audit record of one query (before the agent gets its answer).
#[allow(clippy::too_many_arguments)]
fn record(
    shared: &Shared,
    l: &Listener,
    peer: SocketAddr,
    identity: Option<Identity>,
    q: wire::Question,
    reply: &[u8],
    decision: policy::Decision,
    started: Instant,
    error: Option<String>,
) {
    shared.audit.record_any(&DnsRecord {
        time: now_rfc3339(),
        kind: "dns",
        instance: shared.instance.clone(),
        identity,
        client: peer.to_string(),
        resolver: SocketAddr::new(l.resolver, policy::DNS_PORT).to_string(),
        rcode: wire::answer_rcode(reply, q.id).map(wire::rcode_name),
        qname: q.name,
        qtype: wire::qtype_name(q.qtype),
        decision: decision.verdict,
        rule: decision.rule,
        reason: decision.reason,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        error,
    });
}

/// The caller of a datagram from `peer` to our listener `local`.
fn caller(
    shared: &Shared,
    callers: &UdpCallers,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<Identity> {
    let cookie = match sockdiag::udp_socket(peer, local) {
        Ok(Some(found)) => found.cookie,
        // Not found, or no sock_diag for UDP here (inet_diag/udp_diag are modules that are
        // not loaded; the kernel says ENOENT for both): look among the guarded cgroup's
        // processes through /proc.
        other => {
            tracing::debug!(result = ?other.err(), "sock_diag found no DNS client socket; looking in /proc");
            let pids = crate::outside::cgroup_pids(&shared.cgroup_top);
            owner::cookie(peer, &pids, Path::new("/proc"))?
        }
    };
    let rec = callers.get(cookie)?;
    Some(Identity::from_record(
        &rec,
        Path::new("/proc"),
        shared.cgroup_name(rec.cgroup_id),
    ))
}

async fn handle(
    l: &Listener,
    peer: SocketAddr,
    query: Vec<u8>,
    shared: &Arc<Shared>,
    callers: &Arc<UdpCallers>,
) {
    let started = Instant::now();
    let Some(q) = wire::parse_query(&query) else {
        tracing::debug!(%peer, "DNS proxy: not a single-question query; dropped");
        return;
    };
    // sock_diag, or a /proc walk as the fallback: off the worker threads (block_in_place
    // would hand this worker's other sessions to a new thread on every query).
    let identity = {
        let (shared, callers, local) = (shared.clone(), callers.clone(), l.local);
        tokio::task::spawn_blocking(move || caller(&shared, &callers, peer, local))
            .await
            .unwrap_or(None)
    };
    let decision = match &identity {
        None => policy::Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: "no kernel record of the sender (not from the guarded cgroup)".into(),
        },
        Some(_) => policy::evaluate_dns(&shared.policy().dns(), &q.name),
    };
    let resolver_addr = SocketAddr::new(l.resolver, policy::DNS_PORT);
    let (reply, error) = if decision.is_allow() {
        match forward(resolver_addr, &query, q.id).await {
            Ok(r) => (r, None),
            Err(e) => (wire::error_reply(&query, &q, wire::RCODE_SERVFAIL), Some(e)),
        }
    } else {
        (wire::error_reply(&query, &q, wire::RCODE_REFUSED), None)
    };
    // Recorded before the agent gets its answer: an agent that exits at once ends
    // `interceptor run`, and a record queued after the reply could be lost with the
    // detached task (seen in the 6.1 VM suite).
    record(
        shared, l, peer, identity, q, &reply, decision, started, error,
    );
    if let Err(e) = l.sock.send_to(&reply, peer).await {
        tracing::debug!(%peer, error = %e, "DNS proxy: reply not delivered");
    }
}

/// Sends the query to the real resolver from a marked socket and waits for its answer.
async fn forward(resolver: SocketAddr, query: &[u8], id: u16) -> Result<Vec<u8>, String> {
    let any: SocketAddr = if resolver.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let up = UdpSocket::bind(any).await.map_err(|e| e.to_string())?;
    nix::sys::socket::setsockopt(&up.as_fd(), nix::sys::socket::sockopt::Mark, &PROXY_MARK)
        .map_err(|e| format!("SO_MARK: {e}"))?;
    up.connect(resolver).await.map_err(|e| e.to_string())?;
    up.send(query).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, up.recv(&mut buf))
            .await
            .map_err(|_| format!("no answer from {resolver} within {UPSTREAM_TIMEOUT:?}"))?
            .map_err(|e| format!("{resolver}: {e}"))?;
        if wire::answer_rcode(&buf[..n], id).is_some() {
            return Ok(buf[..n].to_vec());
        }
    }
}
