//! Cancel keys: the agent gets a proxy-minted BackendKeyData; a CancelRequest carrying it
//! (a new redirected connection) is mapped to the upstream backend's real key, and wakes
//! the session's `on_cancel` (a statement held for approval is withdrawn by it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::frontend::cancel_request;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub pid: i32,
    pub key: i32,
}

/// Woken when the agent cancels.
pub type OnCancel = Arc<tokio::sync::Notify>;

#[derive(Default)]
pub struct CancelMap {
    map: Mutex<HashMap<(i32, i32), (Target, OnCancel)>>,
}

fn random_i32() -> i32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // Fall back to the clock: keys are still unique per session via the map.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() as i32 ^ (t.as_secs() as i32).rotate_left(13);
    }
    i32::from_be_bytes(b)
}

impl CancelMap {
    /// A fresh (pid, key) for the agent, mapped to `target` and the session's `on_cancel`.
    pub fn mint(&self, target: Target, on_cancel: OnCancel) -> (i32, i32) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let pid = (random_i32() & 0x3fff_ffff).max(1);
            let key = random_i32();
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry((pid, key)) {
                e.insert((target, on_cancel));
                return (pid, key);
            }
        }
    }

    pub fn remove(&self, pid: i32, key: i32) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(pid, key));
    }

    pub fn get(&self, pid: i32, key: i32) -> Option<(Target, OnCancel)> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pid, key))
            .cloned()
    }
}

/// Sends a real CancelRequest to the upstream (marked socket, like every upstream connect).
pub async fn send(target: Target, timeout: Duration) -> std::io::Result<()> {
    let mut s = crate::proxy::session::connect_upstream(target.addr, timeout).await?;
    s.write_all(&cancel_request(target.pid, target.key)).await?;
    s.shutdown().await?;
    // The server closes without answering; wait briefly so the request is read.
    let mut buf = [0u8; 1];
    let _ = tokio::time::timeout(timeout, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_map_to_targets() {
        let m = CancelMap::default();
        let t = Target {
            addr: "127.0.0.2:5432".parse().unwrap(),
            pid: 4242,
            key: 99,
        };
        let n = Arc::new(tokio::sync::Notify::new());
        let (pid, key) = m.mint(t, n.clone());
        assert!(pid > 0);
        assert_ne!(
            (pid, key),
            (4242, 99),
            "the agent never sees the upstream key"
        );
        let (got, on_cancel) = m.get(pid, key).unwrap();
        assert_eq!(got, t);
        assert!(Arc::ptr_eq(&on_cancel, &n));
        m.remove(pid, key);
        assert!(m.get(pid, key).is_none());
    }
}
