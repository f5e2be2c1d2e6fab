//! PostgreSQL enforcement: the proxy speaks the wire protocol on both sides for
//! destinations the policy declares as `resources: NAME: postgres:`.
//!
//! - The agent is answered `N` to SSLRequest/GSSENCRequest and AuthenticationOk whatever
//!   password it sends (it is identified by the kernel, not a password).
//! - Upstream, the proxy logs in with the resource's user and secret (SCRAM-SHA-256, md5
//!   or cleartext; TLS per `tls:`), or reuses a pooled connection reset by `DISCARD ALL`.
//! - Every Query and Parse is classified (`crate::sql`) and decided (`policy::evaluate_sql`).
//!   A denial is sent upstream as a statement that fails to parse (so the server itself
//!   aborts a transaction in progress and skips to Sync, exactly as for any error), and
//!   the server's error is replaced by ours (SQLSTATE 42501) on the way back.
//! - Results are masked per the resource's `masking:` and cut at the row limit.
//! - One audit record per statement, plus `session_start` / `session_end`.
//!
//! Layout: `codec` (framing), `frontend`/`backend` (typed messages), `auth` (upstream
//! login), `tls`, `upstream` (connect, pool), `enforce`, `shape` (classification cache
//! keys), `mask`, `cancel`, `audit`,
//! `startup` (the agent's startup phase, with a deadline), `session` (the two pumps), `error`.

pub mod audit;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod codec;
pub mod computed;
pub mod enforce;
pub mod error;
pub mod frontend;
pub mod hold;
pub mod mask;
pub mod notices;
pub mod origins;
pub mod relations;
pub mod routines;
pub mod session;
pub mod shape;
pub mod startup;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use error::PgError;
pub use session::{serve, Ctx, Outcome};

use crate::masking::{Masker, MaskingDoc};

/// State shared by every PostgreSQL session of the process: upstream pool, cancel keys,
/// classification cache, per-resource catalogs (tables, functions) and maskers.
pub struct Global {
    pub pool: upstream::Pool,
    pub cancels: cancel::CancelMap,
    pub classifier: crate::sql::Classifier,
    catalogs: Mutex<HashMap<String, Arc<mask::Catalog>>>,
    routines: Mutex<HashMap<String, Arc<routines::Routines>>>,
    maskers: Mutex<HashMap<String, (MaskingDoc, Arc<Masker>)>>,
}

/// Entries in the classification cache.
pub const CLASSIFIER_CACHE: usize = 4096;

pub fn global() -> &'static Global {
    static G: OnceLock<Global> = OnceLock::new();
    G.get_or_init(|| Global {
        pool: upstream::Pool::default(),
        cancels: cancel::CancelMap::default(),
        classifier: crate::sql::Classifier::new(CLASSIFIER_CACHE),
        catalogs: Mutex::default(),
        routines: Mutex::default(),
        maskers: Mutex::default(),
    })
}

impl Global {
    /// The table names of an upstream database, by `pool_key`.
    pub fn catalog(&self, pool_key: &str) -> Arc<mask::Catalog> {
        per_key(&self.catalogs, pool_key)
    }

    /// The functions of an upstream database, by `pool_key`.
    pub fn routines(&self, pool_key: &str) -> Arc<routines::Routines> {
        per_key(&self.routines, pool_key)
    }

    /// The masker of a resource, compiled once per distinct `masking:` section.
    pub fn masker(&self, resource: &str, doc: &MaskingDoc) -> Result<Arc<Masker>, String> {
        let mut m = self.maskers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, masker)) = m.get(resource) {
            if d == doc {
                return Ok(masker.clone());
            }
        }
        let key = doc.load_key().map_err(|e| e.to_string())?;
        let masker = Arc::new(Masker::new(doc, key).map_err(|e| e.to_string())?);
        m.insert(resource.to_owned(), (doc.clone(), masker.clone()));
        Ok(masker)
    }
}

/// The entry of `key`, made on first use.
fn per_key<T: Default>(map: &Mutex<HashMap<String, Arc<T>>>, key: &str) -> Arc<T> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_owned())
        .or_default()
        .clone()
}
