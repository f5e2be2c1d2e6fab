//! HTTP and HTTPS enforcement for destinations the policy declares as `http_services`.
//!
//! The first bytes of the agent decide (peeked, not consumed; `detect`): an HTTP/1.x
//! request line is served by hyper (`proxy`), a TLS ClientHello is read for its SNI
//! (`sni`) and then either piped through untouched (`tls: passthrough`, decided on the SNI
//! alone) or terminated with a certificate of the local CA (`tls: intercept`, `tls`) and
//! served like plain HTTP, re-encrypted upstream with the real server verified. Anything
//! else sent to a service is refused: the service is declared HTTP, and letting unknown
//! bytes through would bypass the request rules.
//!
//! Every request is decided by `policy::evaluate_http` (host checked against the service
//! of the original destination, then `http_rules`); allowed requests get their injected
//! headers (`inject`) and their responses masked (`mask`, with the shared engine). One
//! audit record per request (`audit`).
//!
//! Layout: `detect`, `sni`, `tls`, `proxy` (server side, per request), `counting`, `upstream`
//! (client side), `inject`, `mask`, `respond`, `audit`; `hold` and `held_body` for requests
//! held for approval.

pub mod audit;
mod body_idle;
mod budget;
mod charset;
mod counting;
pub mod detect;
pub mod held_body;
pub mod hold;
mod idle;
pub mod inflate;
pub mod inject;
pub mod mask;
mod masked;
mod mint_cache;
pub mod path;
mod plain_leg;
pub mod proxy;
pub mod records;
mod request_target;
pub mod respond;
pub mod server_name;
pub mod sni;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::audit::{now_rfc3339, AuditLog};
use crate::identity::Identity;
use crate::masking::{Masker, MaskingDoc};
use crate::policy::{evaluate_http, HttpRequest, HttpService, Policy, TlsHandling, Verdict};
use crate::protocols::postgres::audit::Who;

use audit::HttpRecord;
use detect::Detected;

/// Upstream TLS configs by (service, ca_file).
/// Per service: the upstream TLS configs offering http/1.1 only, and h2 + http/1.1.
type ClientConfigs = HashMap<(String, Option<PathBuf>), (ClientConfigRef, ClientConfigRef)>;
type ClientConfigRef = Arc<rustls::ClientConfig>;
/// Maskers by (service, with detectors), with the section they were compiled from.
type Maskers = HashMap<(String, bool), (MaskingDoc, Arc<Masker>)>;

/// State shared by every HTTP connection of the process.
#[derive(Default)]
pub struct Global {
    state_dir: OnceLock<PathBuf>,
    ca: OnceLock<Result<Arc<tls::Ca>, String>>,
    clients: Mutex<ClientConfigs>,
    maskers: Mutex<Maskers>,
}

pub fn global() -> &'static Global {
    static G: OnceLock<Global> = OnceLock::new();
    G.get_or_init(Global::default)
}

/// Called once by the daemon: remembers the state dir and, when the policy intercepts TLS,
/// loads (or creates) the local CA now so a problem shows at start-up.
pub fn init(state_dir: &Path, policy: &Policy) -> Result<(), tls::TlsError> {
    let g = global();
    let _ = g.state_dir.set(state_dir.to_path_buf());
    if policy.intercepts_tls() {
        let ca = tls::Ca::load_or_init(state_dir)?;
        let _ = g.ca.set(Ok(Arc::new(ca)));
    }
    Ok(())
}

/// The environment `interceptor run` gives its child when the local CA is in use: a
/// bundle (system roots + local CA) for OpenSSL, curl and Python, the CA alone for Node
/// (which adds it to its own roots). Empty when the policy intercepts no TLS.
pub fn child_ca_env(state_dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let Some(Ok(ca)) = global().ca.get() else {
        return Vec::new();
    };
    let (cert, _) = tls::ca_paths(state_dir);
    let bundle = cert.with_file_name("bundle.pem");
    if let Err(e) = tls::write_bundle(&bundle, &ca.cert_pem) {
        tracing::warn!(path = %bundle.display(), error = %e, "cannot write the CA bundle for the child");
        return Vec::new();
    }
    vec![
        ("SSL_CERT_FILE", bundle.clone()),
        ("REQUESTS_CA_BUNDLE", bundle.clone()),
        ("CURL_CA_BUNDLE", bundle),
        ("NODE_EXTRA_CA_CERTS", cert),
    ]
}

impl Global {
    /// The local CA (loaded on first use when a reload added interception).
    pub fn ca(&self) -> Result<Arc<tls::Ca>, String> {
        self.ca
            .get_or_init(|| {
                let dir = self
                    .state_dir
                    .get()
                    .ok_or("the HTTP module was not initialised with a state dir")?;
                tls::Ca::load_or_init(dir)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// The upstream TLS client config of a service (cached per service and `ca_file`).
    /// The upstream TLS configs of a service: ALPN http/1.1 only (for HTTP/1.1 agents),
    /// and h2 + http/1.1 (for HTTP/2 agents).
    pub fn client_configs(
        &self,
        service: &str,
        svc: &HttpService,
    ) -> Result<(ClientConfigRef, ClientConfigRef), String> {
        let key = (service.to_owned(), svc.ca_file.clone());
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(&key) {
            return Ok(c.clone());
        }
        let h1 = tls::client_config(service, svc.ca_file.as_deref()).map_err(|e| e.to_string())?;
        let mut h2 = h1.clone();
        h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let c = (Arc::new(h1), Arc::new(h2));
        m.insert(key, c.clone());
        Ok(c)
    }

    /// The masker of a service: with its detectors (`detect`), or field rules only.
    pub fn masker(
        &self,
        service: &str,
        svc: &HttpService,
        detect: bool,
    ) -> Result<Arc<Masker>, String> {
        let mut doc = svc.masking.clone().unwrap_or_default();
        if !detect {
            doc.detectors.clear();
        }
        let key = (service.to_owned(), detect);
        let mut m = self.maskers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, masker)) = m.get(&key) {
            if *d == doc {
                return Ok(masker.clone());
            }
        }
        let k = doc.load_key().map_err(|e| e.to_string())?;
        let masker = Arc::new(Masker::new(&doc, k).map_err(|e| e.to_string())?);
        m.insert(key, (doc, masker.clone()));
        Ok(masker)
    }
}

/// One agent connection to an HTTP service.
/// Reads the daemon's policy as it is now.
pub type PolicySource = Arc<dyn Fn() -> Arc<Policy> + Send + Sync>;

pub struct Ctx {
    pub session: String,
    pub instance: String,
    pub identity: Identity,
    /// The daemon's current policy: every request is decided by the policy of its time, so
    /// a reload applies to the next request of an open keep-alive or HTTP/2 connection
    /// (the service definition `svc` stays as it was when the connection was accepted).
    pub current_policy: PolicySource,
    pub service: String,
    pub svc: HttpService,
    pub dst: SocketAddr,
    pub audit: AuditLog,
    pub connect_timeout: Duration,
    /// Connection totals (for the connection record and `status`).
    pub bytes_up: Arc<AtomicU64>,
    pub bytes_down: Arc<AtomicU64>,
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Where `hold` rules park requests.
    pub approvals: Arc<crate::approvals::Registry>,
    /// The agents' bound token (checked for expiry per request), and its view when the
    /// connection was accepted.
    pub token: Option<Arc<crate::auth::TokenBinding>>,
    pub token_now: Option<crate::policy::AgentToken>,
    /// What every record of this connection repeats (`RecordBase::new`).
    pub base: audit::RecordBase,
    /// The agent's socket, watched for a hang-up while a request is held.
    pub agent_fd: Option<std::os::fd::RawFd>,
}

impl Ctx {
    /// The policy as it is now (after any reload).
    pub fn policy(&self) -> Arc<Policy> {
        (self.current_policy)()
    }

    /// The subject with the agent token as it is now (expiry checked).
    pub fn token_view(&self) -> Option<crate::policy::AgentToken> {
        self.token.as_ref().map(|t| t.view(self.policy().issuers()))
    }

    /// The subject with `token` as its agent token.
    pub fn subject_with<'a>(
        &'a self,
        token: Option<&'a crate::policy::AgentToken>,
    ) -> crate::policy::Subject<'a> {
        crate::policy::Subject {
            token,
            ..self.subject()
        }
    }

    pub fn who(&self) -> Who {
        Who::of(&self.identity)
    }

    pub fn record(&self, kind: &'static str, tls: &'static str) -> HttpRecord {
        HttpRecord {
            time: now_rfc3339(),
            kind,
            session: self.base.session.clone(),
            instance: self.base.instance.clone(),
            identity: self.base.identity.clone(),
            service: self.base.service.clone(),
            tls,
            method: None,
            host: None,
            path: None,
            query: None,
            status: 0,
            decision: Verdict::Deny,
            rule: None,
            reason: String::new(),
            injected: Vec::new(),
            bytes_up: 0,
            bytes_down: 0,
            fields_masked: 0,
            duration_ms: 0.0,
            error: None,
        }
    }

    pub fn subject(&self) -> crate::policy::Subject<'_> {
        crate::policy::Subject {
            cgroup: self.identity.cgroup.as_deref(),
            uid: self.identity.uid,
            gid: self.identity.gid,
            exe: self.identity.exe.as_deref(),
            comm: &self.identity.comm,
            token: self.token_now.as_ref(),
        }
    }
}

/// How the connection ended, for the connection record.
#[derive(Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
}

/// Serves one agent connection to an HTTP service until it closes.
pub async fn serve(client: TcpStream, ctx: Ctx) -> Outcome {
    let ctx = Arc::new(ctx);
    let started = Instant::now();
    match detect::detect(&client, ctx.svc.header_timeout()).await {
        Detected::Http => proxy::serve_plain(client, ctx).await,
        Detected::Tls { sni } => match ctx.svc.tls_handling() {
            TlsHandling::Passthrough => passthrough(client, ctx, sni, started).await,
            TlsHandling::Intercept => proxy::serve_tls(client, ctx, sni).await,
            TlsHandling::Plain => reset_refused(
                &client,
                &ctx,
                started,
                format!(
                    "TLS refused: service {} speaks plain HTTP (tls: plain); use http://",
                    ctx.service
                ),
            ),
        },
        Detected::Timeout => {
            let _ = client.try_write(respond::REQUEST_TIMEOUT_RAW);
            refuse(
                &ctx,
                "plain",
                started,
                408,
                "the agent sent nothing before the header timeout".into(),
            )
        }
        Detected::Closed => Outcome::default(),
        Detected::Other(what) => reset_refused(
            &client,
            &ctx,
            started,
            format!(
                "not HTTP or TLS ({what}); service {} only speaks HTTP",
                ctx.service
            ),
        ),
    }
}

/// Resets the agent's connection and audits the refusal (no HTTP status was sent).
fn reset_refused(client: &TcpStream, ctx: &Ctx, started: Instant, reason: String) -> Outcome {
    crate::proxy::session::reset(client);
    refuse(ctx, "plain", started, 0, reason)
}

fn refuse(ctx: &Ctx, tls: &'static str, started: Instant, status: u16, reason: String) -> Outcome {
    let mut rec = ctx.record("http_request", tls);
    rec.status = status;
    rec.reason = reason.clone();
    rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    ctx.audit.record_any(&rec);
    Outcome {
        error: Some(reason),
    }
}

/// `tls: passthrough`: decide on the SNI, then pipe the bytes both ways untouched.
async fn passthrough(
    client: TcpStream,
    ctx: Arc<Ctx>,
    sni: Option<String>,
    started: Instant,
) -> Outcome {
    let mut rec = ctx.record("http_passthrough", "passthrough");
    rec.host = sni.clone();
    let policy = ctx.policy();
    let d = if sni.is_none() {
        None
    } else {
        Some(evaluate_http(
            &policy,
            &HttpRequest {
                subject: ctx.subject(),
                service: &ctx.service,
                host: None,
                sni: sni.as_deref(),
                method: None,
                path: None,
                headers: None,
            },
        ))
    };
    let finish = |mut rec: HttpRecord, error: Option<String>| {
        rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        rec.error = error.clone();
        ctx.audit.record_any(&rec);
        Outcome { error }
    };
    let Some(d) = d else {
        rec.reason =
            "TLS without SNI: a passthrough service decides on the SNI, so it is required".into();
        crate::proxy::session::reset(&client);
        return finish(rec, None);
    };
    rec.decision = d.verdict;
    rec.rule = d.rule.map(str::to_owned);
    rec.reason = d.reason.clone();
    if d.verdict == Verdict::Hold {
        rec.decision = Verdict::Deny;
        rec.reason = format!(
            "{}; a held request needs TLS interception (passthrough shows an approver nothing), so it is refused",
            d.reason
        );
    }
    if d.verdict != Verdict::Allow {
        tracing::info!(session = %ctx.session, service = %ctx.service, sni = ?sni, reason = %rec.reason, "TLS passthrough denied");
        crate::proxy::session::reset(&client);
        return finish(rec, None);
    }
    let upstream = match crate::proxy::session::connect_upstream(ctx.dst, ctx.connect_timeout).await
    {
        Ok(s) => s,
        Err(e) => {
            crate::proxy::session::reset(&client);
            return finish(
                rec,
                Some(format!("upstream connect to {} failed: {e}", ctx.dst)),
            );
        }
    };
    let mut stop = ctx.stop.clone();
    let relay = crate::proxy::splice::relay(&client, &upstream, &ctx.bytes_up, &ctx.bytes_down);
    tokio::pin!(relay);
    let mut error = None;
    let (a, b) = tokio::select! {
        ends = &mut relay => ends,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            error = Some("ended by daemon shutdown".to_owned());
            crate::proxy::splice::abort(&client, &upstream);
            relay.await
        }
    };
    for (dir, e) in [("agent→upstream", a), ("upstream→agent", b)] {
        if let crate::proxy::splice::End::Error(e) = e {
            error.get_or_insert_with(|| format!("{dir}: {e}"));
        }
    }
    rec.bytes_up = ctx.bytes_up.load(Relaxed);
    rec.bytes_down = ctx.bytes_down.load(Relaxed);
    rec.status = 0;
    finish(rec, error)
}
