//! Relations by name, for decisions: whether a table a statement reads is in fact a view
//! (or a child table) whose columns come from columns with masking rules. A statement
//! computing on such a view's columns (`SELECT upper(tax_id) FROM tax_ids`) must be refused
//! like one computing on the ruled column itself (`computed.rs`): PostgreSQL describes the
//! computed output without any column, so no rule could mask it.
//!
//! A name is looked up in every schema (a session may change its `search_path`), on a
//! pooled side connection; the relations found are described by the catalog
//! (`catalog.rs`, `origins.rs`). Names are cached for [`CATALOG_FRESH`].

use std::time::Instant;

use super::catalog::{Catalog, CATALOG_FRESH};
use super::error::Result;
use super::upstream::Upstream;
use crate::masking::Origin;

/// What a name was found to be.
#[derive(Debug, Clone)]
pub struct Named {
    at: Instant,
    /// The OIDs of the relations so named; `Err`: why the lookup failed.
    oids: std::result::Result<Vec<u32>, String>,
}

/// The last component of a name as the classifier gives it (`public.users` → `users`).
pub fn relname(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, r)| r)
}

impl Catalog {
    /// The names (last components) of `tables` not looked up lately.
    pub fn names_missing<'a>(&self, tables: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let n = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = tables
            .into_iter()
            .map(|t| relname(t))
            .filter(|r| n.get(*r).is_none_or(|e| e.at.elapsed() > CATALOG_FRESH))
            .map(str::to_owned)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Looks `names` up on `conn`, with the relations found (see [`Catalog::fill`]).
    pub async fn fill_names(&self, names: &[String], conn: &mut Upstream) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = names
            .iter()
            .map(|n| super::routines::text_literal(n))
            .collect();
        let sql = format!(
            "SELECT c.oid::int8, c.relname FROM pg_catalog.pg_class c WHERE c.relname::text IN ({})",
            list.join(", ")
        );
        let rows = conn.side_query(&sql).await?;
        let mut found: std::collections::HashMap<&str, Vec<u32>> =
            names.iter().map(|n| (n.as_str(), Vec::new())).collect();
        for r in &rows {
            if let (Some(Some(oid)), Some(Some(rel))) = (r.first(), r.get(1)) {
                if let (Ok(oid), Some(v)) = (oid.parse::<u32>(), found.get_mut(rel.as_str())) {
                    v.push(oid);
                }
            }
        }
        let oids: Vec<u32> = found.values().flatten().copied().collect();
        self.fill(&self.missing(oids.iter().map(|&o| (o, 0))), conn)
            .await?;
        let at = Instant::now();
        let mut n = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() + found.len() > 10_000 {
            n.clear();
        }
        for (name, oids) in found {
            n.insert(name.to_owned(), Named { at, oids: Ok(oids) });
        }
        Ok(())
    }

    /// Forgets every name (after DDL: a view may have been created or replaced).
    pub fn forget_names(&self) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Records that looking `names` up failed (`why`).
    pub fn names_failed(&self, names: &[String], why: &str) {
        let at = Instant::now();
        let mut n = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            let failed = Named {
                at,
                oids: Err(why.to_owned()),
            };
            n.insert(name.clone(), failed);
        }
    }

    /// The columns the values of `column` (`None`: any column) of the relation(s) named
    /// `table` come from: empty for plain tables. `Err`: the name is not known (not looked
    /// up, or the lookup failed: why).
    pub fn origins_by_name(
        &self,
        table: &str,
        column: Option<&str>,
    ) -> std::result::Result<Vec<Origin>, String> {
        let rel = relname(table);
        let oids = match self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
        {
            None => return Err(format!("{table} was not looked up")),
            Some(Named { oids: Err(why), .. }) => return Err(why.clone()),
            Some(Named { oids: Ok(o), .. }) => o.clone(),
        };
        let schema = table.rsplit_once('.').map(|(s, _)| s);
        let mut out = Vec::new();
        for oid in oids {
            let Some(info) = self.get(oid) else {
                return Err(format!("{table} could not be described"));
            };
            if schema.is_some_and(|s| info.qualified.rsplit_once('.').map(|(q, _)| q) != Some(s)) {
                continue;
            }
            for (num, origins) in &info.origins {
                let name = info.columns.get(num).map(String::as_str);
                if column.is_none_or(|c| name.is_some_and(|n| n.eq_ignore_ascii_case(c))) {
                    out.extend(origins.iter().cloned());
                }
            }
        }
        Ok(out)
    }
}
