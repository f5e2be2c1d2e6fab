//! Webhook notifications of approval events: `POST <url>` with a JSON body
//! `{"event": "...", "instance": "...", "request": {...}}`, signed with HMAC-SHA256 over the
//! body (`X-Interceptor-Signature: sha256=<hex>`, `X-Interceptor-Event: <event>`).
//! http:// or https:// (verified against the system roots plus the webhook's `ca_file`).
//! Delivered in order by one background task, retried with exponential back-off; a
//! failing receiver never delays enforcement. At most `QUEUE` events wait for delivery:
//! beyond, new ones are dropped (logged, and audited by the registry as `webhook_dropped`).

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::Serialize;
use tokio::sync::mpsc;

use super::registry::RequestView;
use crate::http_client::{self, Call, Url};
use crate::policy::Webhook;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Events waiting for delivery, at most.
pub const QUEUE: usize = 256;

pub struct Notifier {
    tx: mpsc::Sender<(String, RequestView)>,
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
        let (tx, mut rx) = mpsc::channel::<(String, RequestView)>(QUEUE);
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

    /// Queues `event` for delivery; false if the queue is full (the receiver is down or
    /// slow) and the event was dropped.
    pub fn send(&self, event: &str, view: RequestView) -> bool {
        match self.tx.try_send((event.to_owned(), view)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full((event, view))) => {
                tracing::warn!(%event, id = %view.id, "webhook queue full ({QUEUE} events): event dropped");
                false
            }
            // The delivery task is gone (the runtime is stopping).
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_receiver_does_not_queue_events_without_bound() {
        // Accepts connections (kernel backlog) and never answers.
        let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k").unwrap();
        let w: Webhook = serde_json::from_value(serde_json::json!({
            "url": format!("http://{}/hook", quiet.local_addr().unwrap()),
            "secret_file": key,
        }))
        .unwrap();
        let n = Notifier::start(&w, "i".into()).unwrap();
        let view: RequestView = serde_json::from_value(serde_json::json!({
            "id": "apr-1", "state": "pending", "created": "", "expires": "",
            "protocol": "http", "session": "s", "identity": {}, "resource": "r",
            "command": "c", "classification": "", "rule": "", "reason": ""
        }))
        .unwrap();
        let queued = (0..QUEUE + 50)
            .filter(|_| n.send("created", view.clone()))
            .count();
        // The queue, plus the one event the task may have taken.
        assert!((QUEUE..=QUEUE + 1).contains(&queued), "{queued}");
    }
}
