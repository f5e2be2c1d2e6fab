//! Webhook notifications of approval events: `POST <url>` with a JSON body
//! `{"event": "...", "instance": "...", "request": {...}}`, signed with HMAC-SHA256 over the
//! body (`X-Interceptor-Signature: sha256=<hex>`, `X-Interceptor-Event: <event>`).
//! http:// or https:// (verified against the system roots plus the webhook's `ca_file`).
//! Delivered in order by one background task, retried with exponential back-off; a
//! failing receiver never delays enforcement.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::Serialize;
use tokio::sync::mpsc;

use super::registry::RequestView;
use crate::http_client::{self, Call, Url};
use crate::policy::Webhook;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub struct Notifier {
    tx: mpsc::UnboundedSender<(String, RequestView)>,
}

#[derive(Serialize)]
struct Body<'a> {
    event: &'a str,
    instance: &'a str,
    request: &'a RequestView,
}

/// The signing key named by the webhook's `secret_file` / `secret_env`.
pub fn secret(w: &Webhook) -> Result<Vec<u8>, String> {
    if let Some(f) = &w.secret_file {
        let mut s = std::fs::read(f)
            .map_err(|e| format!("cannot read webhook secret_file {}: {e}", f.display()))?;
        if s.last() == Some(&b'\n') {
            s.pop();
        }
        return Ok(s);
    }
    if let Some(v) = &w.secret_env {
        return std::env::var(v)
            .map(String::into_bytes)
            .map_err(|_| format!("webhook secret_env {v} is not set in the daemon's environment"));
    }
    Err("the webhook has no secret".into())
}

pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let out = mac.finalize().into_bytes();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Notifier {
    /// Starts the delivery task for `w`.
    pub fn start(w: &Webhook, instance: String) -> Result<Notifier, String> {
        let key = secret(w)?;
        let t = Url::parse(&w.url).map_err(|e| e.to_string())?;
        let ca_file = w.ca_file.clone();
        let attempts = w.attempts.unwrap_or(4).max(1);
        let url = w.url.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, RequestView)>();
        tokio::spawn(async move {
            while let Some((event, view)) = rx.recv().await {
                let body = match serde_json::to_vec(&Body {
                    event: &event,
                    instance: &instance,
                    request: &view,
                }) {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(_) => continue,
                };
                let sig = sign(&key, &body);
                let mut delay = Duration::from_millis(500);
                for attempt in 1..=attempts {
                    match post(&t, ca_file.as_deref(), &event, &sig, &body).await {
                        Ok(()) => {
                            tracing::debug!(%url, %event, id = %view.id, "webhook delivered");
                            break;
                        }
                        Err(e) if attempt < attempts => {
                            tracing::warn!(%url, %event, id = %view.id, attempt, error = %e, "webhook failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        Err(e) => {
                            tracing::error!(%url, %event, id = %view.id, attempts, error = %e, "webhook gave up");
                        }
                    }
                }
            }
        });
        Ok(Notifier { tx })
    }

    pub fn send(&self, event: &str, view: RequestView) {
        let _ = self.tx.send((event.to_owned(), view));
    }
}

async fn post(
    url: &Url,
    ca_file: Option<&std::path::Path>,
    event: &str,
    sig: &str,
    body: &bytes::Bytes,
) -> Result<(), String> {
    let answer = http_client::send(Call {
        method: hyper::Method::POST,
        url,
        headers: &[
            ("content-type", "application/json"),
            ("x-interceptor-event", event),
            ("x-interceptor-signature", sig),
        ],
        body: body.clone(), // shared, not copied, across retries
        ca_file,
        timeout: Duration::from_secs(10),
        max_body: 64 * 1024,
    })
    .await
    .map_err(|e| e.to_string())?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered HTTP {}", answer.status))
    }
}
