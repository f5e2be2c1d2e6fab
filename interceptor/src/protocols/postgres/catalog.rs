//! Names behind the table OIDs of RowDescriptions, per resource, looked up on demand on a
//! side connection and cached: each table's qualified name and column names, and where
//! the columns of views and child tables come from (`origins.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::Result;
use super::origins::{self, Raw};
use super::upstream::Upstream;
use crate::masking::Origin;

/// One table's name and column names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// "schema.table".
    pub qualified: String,
    pub columns: HashMap<i16, String>,
    /// Per column, the columns its values come from (a view's base columns, a partition's
    /// ancestors' columns: `origins.rs`); absent for a plain table's own columns.
    pub origins: HashMap<i16, Vec<Origin>>,
    /// When it was looked up: names change (`ALTER TABLE … RENAME`), columns are added.
    pub fetched: std::time::Instant,
}

/// How long a table's names are trusted before they are looked up again.
pub const CATALOG_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Table OID → name, per resource, filled on demand.
#[derive(Default)]
pub struct Catalog {
    pub(super) tables: Mutex<HashMap<u32, Arc<TableInfo>>>,
    /// Relation name (as statements name it, without schema) → the OIDs of the relations
    /// so named in any schema, or why they could not be looked up (`relations.rs`).
    pub(super) names: Mutex<HashMap<String, super::relations::Named>>,
    /// One lookup at a time: sessions that start together and miss the same tables wait
    /// for the first one's answer instead of each logging in for its own.
    filling: tokio::sync::Mutex<()>,
}

const CATALOG_MAX: usize = 10_000;

impl Catalog {
    /// The tables (of these `(table OID, column number)` pairs, OID non-zero) to look up:
    /// not cached, looked up more than [`CATALOG_FRESH`] ago, or without that column (added
    /// since; system columns, numbered below 1, are never listed).
    pub fn missing(&self, cols: impl IntoIterator<Item = (u32, i16)>) -> Vec<u32> {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let stale = |oid: &u32, col: i16| match t.get(oid) {
            None => true,
            Some(i) => {
                i.fetched.elapsed() > CATALOG_FRESH || (col > 0 && !i.columns.contains_key(&col))
            }
        };
        let mut v: Vec<u32> = cols
            .into_iter()
            .filter(|(o, c)| *o != 0 && stale(o, *c))
            .map(|(o, _)| o)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Held while looking OIDs up (see `filling`).
    pub async fn fill_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.filling.lock().await
    }

    pub fn get(&self, oid: u32) -> Option<Arc<TableInfo>> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&oid)
            .cloned()
    }

    /// Looks up the OIDs not cached yet on `conn` (an idle connection), with the relations
    /// their columns come from (views over views: up to [`origins::MAX_DEPTH`] rounds).
    pub async fn fill(&self, oids: &[u32], conn: &mut Upstream) -> Result<()> {
        let mut raws: HashMap<u32, Raw> = HashMap::new();
        let mut queue: Vec<u32> = oids.to_vec();
        for _ in 0..origins::MAX_DEPTH {
            queue.retain(|o| !raws.contains_key(o));
            if queue.is_empty() {
                break;
            }
            let fresh = Self::names(&queue, conn, &mut raws).await?;
            let cached = |oid: u32| {
                self.get(oid)
                    .is_some_and(|i| i.fetched.elapsed() <= CATALOG_FRESH)
            };
            queue = origins::look_up(&mut raws, &fresh, &cached, conn).await?;
        }
        let known = |oid: u32, col: i16| {
            let i = self
                .get(oid)
                .filter(|i| i.fetched.elapsed() <= CATALOG_FRESH)?;
            let name = i.columns.get(&col)?.clone();
            let more = i.origins.get(&col).cloned().unwrap_or_default();
            Some((i.qualified.clone(), name, more))
        };
        let now = std::time::Instant::now();
        let found: Vec<(u32, TableInfo)> = raws
            .keys()
            .map(|&oid| {
                let r = &raws[&oid];
                let info = TableInfo {
                    qualified: r.qualified.clone(),
                    columns: r.columns.clone(),
                    origins: origins::compose(oid, &raws, &known),
                    fetched: now,
                };
                (oid, info)
            })
            .collect();
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() + found.len() > CATALOG_MAX {
            t.clear();
        }
        for (oid, info) in found {
            t.insert(oid, Arc::new(info));
        }
        Ok(())
    }

    /// Names, kinds and columns of `oids` into `raws`; returns the OIDs found.
    async fn names(
        oids: &[u32],
        conn: &mut Upstream,
        raws: &mut HashMap<u32, Raw>,
    ) -> Result<Vec<u32>> {
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        let sql = format!(
            "SELECT c.oid::int8, n.nspname, c.relname, a.attnum, a.attname, c.relkind FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.oid IN ({})",
            list.join(",")
        );
        let mut fresh = Vec::new();
        for r in conn.side_query(&sql).await? {
            let (
                Some(Some(oid)),
                Some(Some(ns)),
                Some(Some(rel)),
                Some(Some(num)),
                Some(Some(att)),
                Some(Some(kind)),
            ) = (r.first(), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
            else {
                continue;
            };
            let (Ok(oid), Ok(num)) = (oid.parse::<u32>(), num.parse::<i16>()) else {
                continue;
            };
            let raw = raws.entry(oid).or_insert_with(|| {
                fresh.push(oid);
                Raw {
                    qualified: format!("{ns}.{rel}"),
                    kind: kind.bytes().next().unwrap_or(b'r'),
                    ..Raw::default()
                }
            });
            raw.columns.insert(num, att.clone());
        }
        Ok(fresh)
    }
}
