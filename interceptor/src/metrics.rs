//! Daemon counters and an optional Prometheus text endpoint on a local address.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Counters updated by the proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub refused_no_record: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub active: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub policy_reloads: AtomicU64,
    pub policy_reload_failures: AtomicU64,
}

impl Metrics {
    /// (name, help, kind, value) for every counter.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        vec![
            (
                "interceptor_connections_accepted_total",
                "Connections accepted by the proxy",
                "counter",
                self.accepted.load(Relaxed),
            ),
            (
                "interceptor_connections_allowed_total",
                "Connections allowed by policy",
                "counter",
                self.allowed.load(Relaxed),
            ),
            (
                "interceptor_connections_denied_total",
                "Connections denied by policy",
                "counter",
                self.denied.load(Relaxed),
            ),
            (
                "interceptor_connections_refused_no_record_total",
                "Connections refused: no kernel record (did not come through the redirect)",
                "counter",
                self.refused_no_record.load(Relaxed),
            ),
            (
                "interceptor_upstream_errors_total",
                "Allowed connections whose upstream connect failed",
                "counter",
                self.upstream_errors.load(Relaxed),
            ),
            (
                "interceptor_connections_active",
                "Connections open now",
                "gauge",
                self.active.load(Relaxed),
            ),
            (
                "interceptor_bytes_up_total",
                "Bytes from agents to upstreams",
                "counter",
                self.bytes_up.load(Relaxed),
            ),
            (
                "interceptor_bytes_down_total",
                "Bytes from upstreams to agents",
                "counter",
                self.bytes_down.load(Relaxed),
            ),
            (
                "interceptor_policy_reloads_total",
                "Successful policy reloads",
                "counter",
                self.policy_reloads.load(Relaxed),
            ),
            (
                "interceptor_policy_reload_failures_total",
                "Failed policy reloads (old policy kept)",
                "counter",
                self.policy_reload_failures.load(Relaxed),
            ),
        ]
    }
}

/// Renders the Prometheus text exposition format. `kernel` are the eBPF counters.
pub fn render(m: &Metrics, kernel: &[(&'static str, u64)]) -> String {
    let mut out = String::new();
    for (name, help, kind, v) in m.snapshot() {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    let _ = writeln!(out, "# HELP interceptor_kernel_events_total Events counted by the eBPF programs\n# TYPE interceptor_kernel_events_total counter");
    for (name, v) in kernel {
        let _ = writeln!(
            out,
            "interceptor_kernel_events_total{{event=\"{name}\"}} {v}"
        );
    }
    out
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    body: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let (mut s, _) = listener.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            // Read the whole request head: a client may send it in several
            // segments, and answering after the first one would close the
            // socket on unread bytes (the client then sees a reset).
            let head = tokio::time::timeout(std::time::Duration::from_secs(5), read_head(&mut s));
            let req = match head.await {
                Ok(Ok(req)) => req,
                _ => return,
            };
            let ok = req.starts_with(b"GET /metrics");
            let (status, text) = if ok {
                ("200 OK", body())
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// Reads until the blank line that ends an HTTP request head (at most 8 KiB).
async fn read_head(s: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut req = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        if req.len() > 8192 {
            return Err(std::io::Error::other("request head over 8 KiB"));
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        req.extend_from_slice(&buf[..n]);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.allowed.store(3, Relaxed);
        let text = render(&m, &[("redirected_v4", 5)]);
        assert!(text.contains("interceptor_connections_allowed_total 3\n"));
        assert!(text.contains("interceptor_kernel_events_total{event=\"redirected_v4\"} 5\n"));
        assert!(text.contains("# TYPE interceptor_connections_active gauge"));
    }

    /// A scrape whose request head arrives in two segments gets the page,
    /// not a 404 and a reset (the CI flake of stop 12).
    #[tokio::test]
    async fn answers_a_request_head_split_across_segments() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = tokio::spawn(serve(addr, Arc::new(|| "up 1\n".to_string())));
        let mut c = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        c.set_nodelay(true).unwrap();
        c.write_all(b"GET ").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        c.write_all(b"/metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("up 1\n"), "{out}");
        server.abort();
    }
}
