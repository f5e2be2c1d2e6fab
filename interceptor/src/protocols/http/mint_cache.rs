//! The server configs of minted certificates, by canonical server name: bounded (the
//! least recently used goes beyond `MAX_MINTED`) and renewed before the certificate
//! expires (a daemon runs for months; minted certificates last about eleven).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::ServerConfig;

use super::server_name::Canonical;

/// Certificates kept at most (policies name far fewer hosts).
pub const MAX_MINTED: usize = 1024;
/// A certificate expiring within this many seconds is minted again.
pub const RENEW_BEFORE_SECS: i64 = 7 * 86400;

struct Entry {
    cfg: Arc<ServerConfig>,
    /// Unix seconds.
    not_after: i64,
    used: u64,
}

#[derive(Default)]
pub struct MintCache {
    entries: HashMap<Canonical, Entry>,
    tick: u64,
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl MintCache {
    /// The config for `name` unless missing or due for renewal at `now` (Unix seconds).
    pub fn get(&mut self, name: &Canonical, now: i64) -> Option<Arc<ServerConfig>> {
        self.tick += 1;
        let e = self.entries.get_mut(name)?;
        if e.not_after - now <= RENEW_BEFORE_SECS {
            return None;
        }
        e.used = self.tick;
        Some(e.cfg.clone())
    }

    pub fn insert(&mut self, name: Canonical, cfg: Arc<ServerConfig>, not_after: i64) {
        self.tick += 1;
        if self.entries.len() >= MAX_MINTED && !self.entries.contains_key(&name) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        let used = self.tick;
        self.entries.insert(
            name,
            Entry {
                cfg,
                not_after,
                used,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Arc<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let ca = super::super::tls::Ca::load_or_init(dir.path()).unwrap();
        ca.server_config("api.test").unwrap()
    }

    #[test]
    fn bounded_least_recently_used_first_and_renewed_before_expiry() {
        let c = cfg();
        let mut m = MintCache::default();
        let name = |i: usize| Canonical::Dns(format!("h{i}.test"));
        let far = now_secs() + 300 * 86400;
        for i in 0..MAX_MINTED {
            m.insert(name(i), c.clone(), far);
        }
        assert!(m.get(&name(0), now_secs()).is_some(), "h0 used last");
        m.insert(name(MAX_MINTED), c.clone(), far);
        assert_eq!(m.len(), MAX_MINTED, "bounded");
        assert!(m.get(&name(0), now_secs()).is_some(), "recently used, kept");
        assert!(
            m.get(&name(1), now_secs()).is_none(),
            "least recently used, gone"
        );
        for i in 0..3 * MAX_MINTED {
            m.insert(name(10_000 + i), c.clone(), far);
        }
        assert_eq!(m.len(), MAX_MINTED);
        // Within a week of expiry: a miss, so it is minted again.
        let soon = Canonical::Dns("soon.test".into());
        m.insert(soon.clone(), c.clone(), now_secs() + 3 * 86400);
        assert!(m.get(&soon, now_secs()).is_none());
        m.insert(soon.clone(), c, now_secs() + 300 * 86400);
        assert!(m.get(&soon, now_secs()).is_some());
    }
}
