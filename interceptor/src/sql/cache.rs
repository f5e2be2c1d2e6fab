//! [`Classifier`]: [`classify_with`] behind a bounded, thread-safe LRU cache keyed by the exact
//! query text (and parse options), so a statement an agent repeats is parsed once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{classify_with, Classification, ParseOptions, SqlError};

/// Query texts longer than this are classified but not cached, so the cache's memory stays
/// bounded by about `capacity × MAX_CACHED_LEN` (times a small factor for the results).
pub const MAX_CACHED_LEN: usize = 16 * 1024;

type Key = String;
type Value = Arc<Result<Classification, SqlError>>;

/// Classifies query texts, caching the results of the last `capacity` distinct texts (per
/// [`ParseOptions`] value).
/// Share it between connections (`Arc<Classifier>`); the lock is not held while parsing.
pub struct Classifier {
    capacity: usize,
    /// One LRU per `standard_conforming_strings` setting (index 1: on).
    lru: Mutex<[Lru; 2]>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Lru {
    /// Entry and the tick of its last use.
    map: HashMap<Key, (Value, u64)>,
    /// Tick of last use → key: the first entry is the least recently used.
    order: BTreeMap<u64, Key>,
    tick: u64,
}

impl Lru {
    fn get(&mut self, key: &str) -> Option<Value> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used) = self.map.get_mut(key)?;
        let key = self.order.remove(used)?;
        *used = tick;
        self.order.insert(tick, key);
        Some(Arc::clone(value))
    }

    fn put(&mut self, key: Key, value: Value, capacity: usize) {
        self.tick += 1;
        if let Some((_, used)) = self.map.get(&key) {
            self.order.remove(used);
        }
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick));
        while self.map.len() > capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }
}

impl Classifier {
    /// A classifier remembering up to `capacity` texts (0: no caching).
    pub fn new(capacity: usize) -> Self {
        Classifier {
            capacity,
            lru: Mutex::new([Lru::default(), Lru::default()]),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// [`super::classify`], cached.
    pub fn classify(&self, sql: &str) -> Arc<Result<Classification, SqlError>> {
        self.classify_with(sql, ParseOptions::default())
    }

    /// [`classify_with`], cached per (options, text).
    pub fn classify_with(
        &self,
        sql: &str,
        options: ParseOptions,
    ) -> Arc<Result<Classification, SqlError>> {
        let cacheable = self.capacity > 0 && sql.len() <= MAX_CACHED_LEN;
        let slot = usize::from(options.standard_conforming_strings);
        if cacheable {
            if let Some(hit) = self.lock()[slot].get(sql) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return hit;
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let value = Arc::new(classify_with(sql, options));
        if cacheable {
            self.lock()[slot].put(sql.to_owned(), Arc::clone(&value), self.capacity);
        }
        value
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Number of cached texts.
    pub fn len(&self) -> usize {
        self.lock().iter().map(|l| l.map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Lru; 2]> {
        // The cache holds only finished results: a panic elsewhere cannot leave it torn.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Classifier {
    /// 4096 entries.
    fn default() -> Self {
        Classifier::new(4096)
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hits, misses) = self.stats();
        f.debug_struct("Classifier")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("hits", &hits)
            .field("misses", &misses)
            .finish()
    }
}
