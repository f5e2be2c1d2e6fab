//! When an HTTP/2 agent connection has had nothing to do for long enough. HTTP/1.1 has
//! hyper's head timeout (an idle keep-alive connection or a slow head ends after
//! `header_timeout_secs`); HTTP/2 has none, so a connection with no stream open — idle, or
//! stuck in a HEADERS frame that never ends — would hold its task and buffers forever.
//! [`Streams`] counts the open streams (a request until its response body is sent or
//! dropped) and [`Streams::idle_for`] resolves once none was open for the given time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Streams {
    open: AtomicUsize,
    /// When the last stream closed (or the connection started).
    idle_since: Mutex<Instant>,
}

/// One open stream; closed when dropped.
pub struct Open(Arc<Streams>);

impl Streams {
    pub fn new() -> Arc<Streams> {
        Arc::new(Streams {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self.clone())
    }

    /// Resolves once no stream has been open for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let mut wait = limit;
            if self.open.load(Ordering::SeqCst) == 0 {
                let idle = self
                    .idle_since
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed();
                if idle >= limit {
                    return;
                }
                wait = limit - idle;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let s = &self.0;
        let mut since = s.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        if s.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_only_after_the_last_stream_closed_for_the_limit() {
        let s = Streams::new();
        let limit = Duration::from_millis(50);
        let a = s.open();
        let b = s.open();
        // Open streams keep it busy however long they last.
        let busy = tokio::time::timeout(limit * 4, s.idle_for(limit)).await;
        assert!(busy.is_err());
        drop(a);
        let busy = tokio::time::timeout(limit * 4, s.idle_for(limit)).await;
        assert!(busy.is_err(), "one stream is still open");
        drop(b);
        let t = Instant::now();
        s.idle_for(limit).await;
        assert!(t.elapsed() >= limit, "{:?}", t.elapsed());
    }
}
