//! Functions defined in the database: what a call to a function the classifier cannot see
//! into really does. A function written in the database (not installed by an extension)
//! can do anything: a `STABLE` one cannot run `UPDATE` itself but may call a volatile one
//! that does, and an aggregate's own volatility says nothing of its state function. So a
//! statement calling one counts as `write`, unless the resource lists it in
//! `read_only_functions`. A function of an extension counts as `write` when it is
//! volatile. One the database does not define (yet: created in an open transaction, or
//! just now) counts as `write` too (fail closed). Built-ins (`pg_catalog`,
//! `information_schema`) are judged by the classifier's own table.
//!
//! What `pg_proc` says comes from a lookup by name on a pooled upstream connection, cached
//! per upstream ([`Routines`]): found names for [`FRESH`], absent ones for
//! [`ABSENT_FRESH`], failed lookups for [`FAILED_FRESH`]. The judgement itself
//! ([`judge_rows`]) is pure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::upstream::Upstream;
use super::PgError;

/// How long a looked-up name is trusted. `CREATE OR REPLACE FUNCTION` by someone else can
/// change a function's volatility; the cache sees it within this time.
pub const FRESH: Duration = Duration::from_secs(60);
/// How long "no such function" is trusted: a function created meanwhile is found then.
pub const ABSENT_FRESH: Duration = Duration::from_secs(5);
/// How long a failed lookup stands (its names count as unknown, i.e. `write`).
pub const FAILED_FRESH: Duration = Duration::from_secs(1);
/// Names cached per upstream; the cache starts over beyond it.
const MAX_NAMES: usize = 4096;
/// Names looked up per query.
const BATCH: usize = 256;

/// One `pg_proc` row of a name: its schema, whether it is volatile, and whether an
/// extension installed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub schema: String,
    pub volatile: bool,
    pub extension: bool,
}

/// What a call does, as far as the catalog tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Only built-ins answer to the name: the classifier's table decides.
    System,
    /// An extension's stable or immutable function, or one `read_only_functions` trusts.
    Harmless,
    /// May change data: `schema.name` of one such function, and why.
    Writes(String, &'static str),
    /// Not known: why.
    Unknown(String),
}

impl Judgement {
    /// Whether the decision depends on the database's functions (and so may change).
    pub fn user_defined(&self) -> bool {
        !matches!(self, Judgement::System)
    }
}

fn is_system(schema: &str) -> bool {
    schema == "pg_catalog" || schema == "information_schema"
}

/// The bare name and the schema (if qualified) of a function as the classifier lists it
/// (`pg_catalog.lower`, `lower`). A quoted name holding a dot splits wrongly and is then
/// unknown: fail closed.
pub fn split(function: &str) -> (Option<&str>, &str) {
    match function.rsplit_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, function),
    }
}

/// Distinct names one statement may have looked up; a statement calling more counts as
/// calling unknown functions (a lookup per name would let one agent hold the lookups of
/// every session of the database).
pub const MAX_LOOKUPS: usize = 64;

/// Why a function written in the database counts as a write.
pub const WRITTEN_HERE: &str = "is defined in the database (not by an extension), so it may change data — even a STABLE one can call one that does (list it in read_only_functions if it does not)";
/// Why a volatile function of an extension counts as a write.
pub const VOLATILE: &str = "is a volatile function: it may change data";

/// Judges a call of `function` from the `pg_proc` rows of its bare name. An unqualified
/// call may resolve to any schema on the search path, so a volatile function of that name
/// in any schema counts. `trusted(qualified)`: the resource's `read_only_functions`.
pub fn judge_rows(function: &str, rows: &[Row], trusted: &dyn Fn(&str) -> bool) -> Judgement {
    let (schema, name) = split(function);
    let candidates: Vec<&Row> = rows
        .iter()
        .filter(|r| schema.is_none_or(|s| s == r.schema))
        .collect();
    if candidates.is_empty() {
        return Judgement::Unknown(format!("the database defines no function {function}"));
    }
    let mut user = false;
    for r in candidates.iter().filter(|r| !is_system(&r.schema)) {
        user = true;
        let qualified = format!("{}.{name}", r.schema);
        if trusted(&qualified) {
            continue;
        }
        if !r.extension {
            return Judgement::Writes(qualified, WRITTEN_HERE);
        }
        if r.volatile {
            return Judgement::Writes(qualified, VOLATILE);
        }
    }
    if user {
        Judgement::Harmless
    } else {
        Judgement::System
    }
}

enum Found {
    Rows(Vec<Row>),
    Failed(String),
}

struct Entry {
    at: Instant,
    found: Found,
}

impl Entry {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = match &self.found {
            Found::Rows(r) if r.is_empty() => ABSENT_FRESH,
            Found::Rows(_) => FRESH,
            Found::Failed(_) => FAILED_FRESH,
        };
        now.duration_since(self.at) < ttl
    }
}

/// The functions of one upstream database, by bare name (shared by its sessions).
#[derive(Default)]
pub struct Routines {
    names: Mutex<HashMap<String, Entry>>,
    /// One lookup at a time per upstream: sessions asking for the same names wait for it
    /// instead of each querying.
    filling: tokio::sync::Mutex<()>,
}

impl Routines {
    /// The judgement of a call from the cache; `None` when its name must be looked up.
    pub fn judge(&self, function: &str, trusted: &dyn Fn(&str) -> bool) -> Option<Judgement> {
        let (_, name) = split(function);
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let e = names.get(name).filter(|e| e.fresh(Instant::now()))?;
        Some(match &e.found {
            Found::Rows(rows) => judge_rows(function, rows, trusted),
            Found::Failed(why) => Judgement::Unknown(format!("looking {name} up failed: {why}")),
        })
    }

    /// Of these bare names, those not cached or no longer fresh.
    pub fn stale<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let now = Instant::now();
        let cached = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = names
            .into_iter()
            .filter(|n| !cached.get(*n).is_some_and(|e| e.fresh(now)))
            .map(str::to_owned)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Held while looking names up.
    pub async fn fill_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.filling.lock().await
    }

    /// Looks up `names` (bare) on `conn`, an idle connection, and caches what it finds
    /// (absence included).
    pub async fn fill(&self, names: &[String], conn: &mut Upstream) -> Result<(), PgError> {
        for batch in names.chunks(BATCH) {
            let rows = conn.side_query(&lookup_sql(batch)).await?;
            let mut found: HashMap<&str, Vec<Row>> =
                batch.iter().map(|n| (n.as_str(), Vec::new())).collect();
            for r in &rows {
                let (Some(Some(schema)), Some(Some(name)), Some(Some(vol)), Some(Some(ext))) =
                    (r.first(), r.get(1), r.get(2), r.get(3))
                else {
                    continue;
                };
                if let Some(v) = found.get_mut(name.as_str()) {
                    v.push(Row {
                        schema: schema.clone(),
                        volatile: vol == "v",
                        extension: ext == "t",
                    });
                }
            }
            let at = Instant::now();
            self.store(found.into_iter().map(|(n, rows)| {
                (
                    n.to_owned(),
                    Entry {
                        at,
                        found: Found::Rows(rows),
                    },
                )
            }));
        }
        Ok(())
    }

    /// Records that looking `names` up failed: they count as unknown for a moment.
    pub fn failed(&self, names: &[String], why: &str) {
        let at = Instant::now();
        self.store(names.iter().map(|n| {
            let found = Found::Failed(why.to_owned());
            (n.clone(), Entry { at, found })
        }));
    }

    /// Caches the rows of one name as if looked up now.
    #[cfg(test)]
    pub fn remember(&self, name: &str, rows: Vec<Row>) {
        let e = Entry {
            at: Instant::now(),
            found: Found::Rows(rows),
        };
        self.store(std::iter::once((name.to_owned(), e)));
    }

    /// Forgets everything (after this upstream's functions may have changed: DDL).
    pub fn forget(&self) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn store(&self, entries: impl Iterator<Item = (String, Entry)>) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for (n, e) in entries {
            if names.len() >= MAX_NAMES && !names.contains_key(&n) {
                // Stale entries go first; only a cache full of fresh ones starts over.
                let now = Instant::now();
                names.retain(|_, e| e.fresh(now));
                if names.len() >= MAX_NAMES {
                    names.clear();
                }
            }
            names.insert(n, e);
        }
    }
}

/// A SQL expression for the text `n`, hex-encoded, so no name can break out of its literal
/// whatever the server's quoting settings.
pub fn text_literal(n: &str) -> String {
    let hex: String = n.bytes().map(|b| format!("{b:02x}")).collect();
    format!("convert_from(decode('{hex}', 'hex'), 'UTF8')")
}

/// The lookup query. Names travel hex-encoded, so no name can break out of its literal
/// whatever the server's quoting settings.
fn lookup_sql(names: &[String]) -> String {
    let list: Vec<String> = names.iter().map(|n| text_literal(n)).collect();
    format!(
        "SELECT n.nspname, p.proname, p.provolatile, EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.proname::text IN ({})",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of an extension's function (`row`) or one written in the database (`own`).
    fn row(schema: &str, volatile: bool) -> Row {
        Row {
            schema: schema.into(),
            volatile,
            extension: true,
        }
    }

    fn own(schema: &str, volatile: bool) -> Row {
        Row {
            extension: false,
            ..row(schema, volatile)
        }
    }

    const NONE: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn built_ins_are_left_to_the_classifier() {
        let rows = [row("pg_catalog", true)];
        assert_eq!(judge_rows("random", &rows, NONE), Judgement::System);
        assert_eq!(
            judge_rows("pg_catalog.random", &rows, NONE),
            Judgement::System
        );
    }

    #[test]
    fn a_volatile_user_function_is_named_and_a_stable_one_is_harmless() {
        let rows = [row("public", true)];
        assert_eq!(
            judge_rows("purge", &rows, NONE),
            Judgement::Writes("public.purge".into(), VOLATILE)
        );
        assert_eq!(
            judge_rows("public.purge", &rows, NONE),
            Judgement::Writes("public.purge".into(), VOLATILE)
        );
        let stable = [row("public", false)];
        assert_eq!(judge_rows("total", &stable, NONE), Judgement::Harmless);
    }

    #[test]
    fn an_unqualified_call_counts_every_schema_and_a_qualified_one_only_its_own() {
        // A volatile overload shadowing a built-in name in another schema counts.
        let rows = [row("pg_catalog", false), row("ops", true)];
        assert_eq!(
            judge_rows("lower", &rows, NONE),
            Judgement::Writes("ops.lower".into(), VOLATILE)
        );
        assert_eq!(
            judge_rows("pg_catalog.lower", &rows, NONE),
            Judgement::System
        );
        // A schema with no such function: unknown (fail closed).
        assert!(matches!(
            judge_rows("other.lower", &rows, NONE),
            Judgement::Unknown(_)
        ));
        assert!(matches!(
            judge_rows("nowhere", &[], NONE),
            Judgement::Unknown(_)
        ));
    }

    #[test]
    fn functions_written_in_the_database_are_writes_whatever_their_volatility() {
        for volatile in [false, true] {
            let rows = [own("public", volatile)];
            assert_eq!(
                judge_rows("report", &rows, NONE),
                Judgement::Writes("public.report".into(), WRITTEN_HERE)
            );
            let trusted = |q: &str| q == "public.report";
            assert_eq!(judge_rows("report", &rows, &trusted), Judgement::Harmless);
        }
    }

    #[test]
    fn trusted_volatile_functions_are_harmless() {
        let rows = [row("public", true)];
        let trusted = |q: &str| q == "public.uuid_generate_v4";
        assert_eq!(
            judge_rows("uuid_generate_v4", &rows, &trusted),
            Judgement::Harmless
        );
        assert_eq!(
            judge_rows("purge", &rows, &trusted),
            Judgement::Writes("public.purge".into(), VOLATILE)
        );
    }

    #[test]
    fn the_cache_answers_fresh_names_and_lists_the_others() {
        let r = Routines::default();
        assert_eq!(r.judge("purge", NONE), None);
        assert_eq!(r.stale(["purge", "lower", "purge"]), ["lower", "purge"]);
        r.remember("purge", vec![row("public", true)]);
        r.remember("lower", vec![row("pg_catalog", false)]);
        assert!(r.stale(["purge", "lower"]).is_empty());
        assert_eq!(
            r.judge("purge", NONE),
            Some(Judgement::Writes("public.purge".into(), VOLATILE))
        );
        assert_eq!(r.judge("lower", NONE), Some(Judgement::System));
        r.failed(&["x".to_owned()], "connection refused");
        assert!(matches!(r.judge("x", NONE), Some(Judgement::Unknown(_))));
        r.forget();
        assert_eq!(r.judge("purge", NONE), None);
    }

    #[test]
    fn names_travel_hex_encoded() {
        let sql = lookup_sql(&["a'); DROP TABLE t; --".to_owned(), "lower".to_owned()]);
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.contains("decode('6c6f776572', 'hex')"), "{sql}");
    }
}
