//! Masking of personal data in results (PostgreSQL rows, later HTTP JSON) before the agent sees them: a pure engine, no I/O on the hot path.
//!
//! A `Masker` is compiled once from the policy's `masking:` section
//! (`MaskingDoc`) and a key, and shared (`Arc`) by every connection. Per
//! result set the caller builds a `ColumnPlan` from the column names, then
//! calls `mask_value` for each value: `None` means unchanged (no allocation).
//!
//! - **Column rules** (`table.column` or a column-name glob; first match
//!   wins) replace every value of the column: `redact` → `[REDACTED]`,
//!   `partial` → `****` + the last `keep_last` characters (an email value
//!   keeps its first character and domain: `a***@example.com`), `hash` →
//!   `<column>_<16 hex>`. They apply to non-text columns too; the result is
//!   text and `Masked::requires_text` tells the caller to describe the
//!   column as text (or send NULL).
//! - **Detectors** scan text values of the other columns and replace each
//!   occurrence: `redact` → `[REDACTED:<kind>]`, `partial` → `****` + the
//!   last `keep_last` digits (phone, card, SSN), letters and digits (IBAN) or
//!   characters (others); emails `a***@example.com`; private keys are always
//!   redacted whole. `hash` → `<kind>_<16 hex>` of the normalized value
//!   (lower-case email, digits only for phone, card and SSN, IBAN without
//!   spaces).
//! - **Hashes** are the first 16 hex digits of HMAC-SHA256(key, value):
//!   the same value gives the same pseudonym under one key, so the agent
//!   can still join and count. Without `key_env`/`key_file` the key is
//!   random per daemon, and pseudonyms change when it restarts.
//!
//! Detectors favour precision: bare nine-digit numbers are never SSNs (use
//! a column rule for undashed SSNs), bare digit runs are never phones, cards
//! need a known issuer prefix and length and the Luhn check, IBANs their
//! country's length and mod-97. See `DetectorKind`.
//!
//! Layout: `model` (serde/JSON-schema section), `columns` (column patterns,
//! `ColumnPlan`), `detect` (the scanners), `replace` (what each strategy
//! writes), `json` (field paths), `json_text` (`mask_json_text`: masking JSON text in
//! place), `key` (key loading), `error`.

mod columns;
mod detect;
mod error;
mod json;
mod json_text;
mod key;
mod model;
mod replace;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::sync::{LazyLock, Mutex};

pub use columns::{ColumnPlan, ColumnRef, Origin};
pub use error::MaskingError;
pub use json::FieldPath;
pub use json_text::{check as check_json, JsonTextError, MAX_DEPTH as MAX_JSON_DEPTH};
pub use key::{random_key, MIN_KEY_LEN, RANDOM_KEY_LEN};
pub use model::{
    ColumnRule, DetectorKind, DetectorRule, FieldRule, MaskingDoc, Strategy, StrategyName,
    DEFAULT_KEEP_LAST, MAX_KEEP_LAST,
};

use columns::{ColAction, ColumnPattern};
use detect::{Hit, Hits, KindSet};
use replace::HmacSha256;

/// A masked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The replacement value (UTF-8 text).
    pub bytes: Vec<u8>,
    /// What masked it: `column:<match>` for a column rule (e.g.
    /// `column:users.email`), else the detector kind of the first occurrence
    /// (e.g. `email`).
    pub kind: &'static str,
    /// Number of occurrences replaced (1 for a column rule).
    pub count: usize,
    /// The column is not text-like but its value was replaced by text: the
    /// caller must describe the column as text, or send NULL instead.
    pub requires_text: bool,
}

struct CompiledRule {
    pattern: ColumnPattern,
    strategy: model::Strategy,
    kind: &'static str,
}

/// Compiled masking rules and key. `Send + Sync`; share it with `Arc`.
pub struct Masker {
    rules: Vec<CompiledRule>,
    detectors: [Option<Strategy>; 10],
    enabled: KindSet,
    mac: HmacSha256,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field(
                "columns",
                &self.rules.iter().map(|r| r.kind).collect::<Vec<_>>(),
            )
            .field("detectors", &self.detectors)
            .finish_non_exhaustive()
    }
}

/// Interns rule labels so `Masked::kind` can be `&'static str`: each
/// distinct label is leaked once per process, however often policies are
/// reloaded.
fn intern(s: String) -> &'static str {
    static SEEN: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&k) = seen.get(s.as_str()) {
        return k;
    }
    let k: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(k);
    k
}

impl Masker {
    /// Compiles `doc`. `key` is the HMAC key of `strategy: hash` (see
    /// `MaskingDoc::load_key`); an empty `key` means a fresh random one.
    pub fn new(doc: &MaskingDoc, key: Vec<u8>) -> Result<Masker, MaskingError> {
        let rules = doc
            .columns
            .iter()
            .map(|r| {
                Ok(CompiledRule {
                    pattern: ColumnPattern::parse(&r.pattern)?,
                    strategy: r.strategy,
                    kind: intern(format!("column:{}", r.pattern)),
                })
            })
            .collect::<Result<Vec<_>, MaskingError>>()?;
        let mut detectors = [None; 10];
        let mut all = None;
        for d in &doc.detectors {
            let slot = match d.kind {
                DetectorKind::All => &mut all,
                k => &mut detectors[k.index()],
            };
            if slot.is_some() {
                return Err(MaskingError::DuplicateDetector(d.kind.name()));
            }
            *slot = Some(d.strategy);
        }
        let mut enabled = KindSet::default();
        for k in DetectorKind::KINDS {
            if detectors[k.index()].is_none() {
                detectors[k.index()] = all;
            }
            if detectors[k.index()].is_some() {
                enabled = enabled.with(k);
            }
        }
        let key = if key.is_empty() { random_key()? } else { key };
        Ok(Masker {
            rules,
            detectors,
            enabled,
            mac: replace::keyed(&key),
        })
    }

    /// No column rules and no detectors: nothing is ever masked (field
    /// rules of `mask_json_text` still apply).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.enabled.is_empty()
    }

    /// The pattern of the column rule that masks column `name` of `table` (`None`: a
    /// table not known, which any table part matches).
    pub fn column_rule(&self, table: Option<&str>, name: &str) -> Option<&'static str> {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(table, name))
            .map(|r| r.kind.strip_prefix("column:").unwrap_or(r.kind))
    }

    pub fn has_column_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether some column rule can apply to a column of `table`.
    pub fn rules_cover_table(&self, table: &str) -> bool {
        self.rules.iter().any(|r| r.pattern.covers_table(table))
    }

    /// Decides, once per result set, which column rule (if any) masks each
    /// column and whether detectors run on it.
    pub fn plan(&self, columns: &[ColumnRef<'_>]) -> ColumnPlan {
        let detect = !self.enabled.is_empty();
        let cols: Vec<ColAction> = columns
            .iter()
            .map(|c| {
                match self
                    .rules
                    .iter()
                    .position(|r| r.pattern.matches_ref(c))
                    .or((c.table_unknown && !self.rules.is_empty()).then_some(0))
                {
                    Some(rule) => ColAction::Rule {
                        rule,
                        requires_text: !c.text_like,
                        hash_prefix: columns::hash_prefix(c.name),
                    },
                    None if detect && c.text_like => ColAction::Detect,
                    None => ColAction::Keep,
                }
            })
            .collect();
        let noop = cols.iter().all(|c| *c == ColAction::Keep);
        ColumnPlan { cols, noop }
    }

    /// Masks one (non-NULL) value of column `column` of the planned result
    /// set. `None`: unchanged, nothing allocated. A column past the plan is
    /// left unchanged.
    pub fn mask_value(&self, plan: &ColumnPlan, column: usize, value: &[u8]) -> Option<Masked> {
        match plan.cols.get(column)? {
            ColAction::Keep => None,
            ColAction::Detect => {
                let mut hits = Hits::default();
                detect::find_all(value, self.enabled, &mut hits);
                let first = hits.first()?.kind.name();
                Some(Masked {
                    bytes: self.replace_hits(value, &hits),
                    kind: first,
                    count: hits.len(),
                    requires_text: false,
                })
            }
            ColAction::Rule {
                rule,
                requires_text,
                hash_prefix,
            } => {
                let r = &self.rules[*rule];
                let mut bytes = Vec::with_capacity(24);
                replace::push_whole(&mut bytes, r.strategy, &self.mac, hash_prefix, value);
                Some(Masked {
                    bytes,
                    kind: r.kind,
                    count: 1,
                    requires_text: *requires_text,
                })
            }
        }
    }

    /// Runs the detectors over free text and replaces every occurrence.
    /// `None` when nothing was found; else the new text and the number of
    /// occurrences.
    pub fn mask_text(&self, text: &str) -> Option<(String, usize)> {
        let mut hits = Hits::default();
        detect::find_all(text.as_bytes(), self.enabled, &mut hits);
        if hits.is_empty() {
            return None;
        }
        let bytes = self.replace_hits(text.as_bytes(), &hits);
        // Matches start and end on ASCII bytes and replacements are UTF-8.
        let s = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Some((s, hits.len()))
    }

    /// Masks a JSON document given as text (UTF-8, whitespace around it allowed): values
    /// addressed by `field_rules` are replaced whole (the first rule whose path matches
    /// wins; numbers and booleans become strings, objects and arrays `"[REDACTED]"` or a
    /// hash of their compact JSON form, `null` stays), and the detectors run on every
    /// other string value and on object keys (a key with a hit becomes its masked text,
    /// `#2`, `#3`… added if that key exists already). Path names match ASCII
    /// case-insensitively. Every byte not masked is kept as it came (see `json_text`).
    ///
    /// `Ok(None)`: nothing masked; else the new text and the number of values and keys
    /// changed. Text that is not JSON, or nested deeper than `MAX_JSON_DEPTH`, is an error.
    pub fn mask_json_text(
        &self,
        text: &[u8],
        field_rules: &[FieldRule],
    ) -> Result<Option<(Vec<u8>, usize)>, JsonTextError> {
        let detect = |s: &str| self.mask_text(s);
        let ctx = json_text::Ctx {
            rules: field_rules,
            mac: &self.mac,
            detect: &detect,
        };
        json_text::mask(&ctx, text)
    }

    fn replace_hits(&self, value: &[u8], hits: &[Hit]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len() + 16 * hits.len());
        let mut last = 0;
        for h in hits {
            out.extend_from_slice(&value[last..h.start]);
            let strategy = self.detectors[h.kind.index()].unwrap_or(Strategy::Redact);
            replace::push_detected(
                &mut out,
                strategy,
                &self.mac,
                h.kind,
                &value[h.start..h.end],
            );
            last = h.end;
        }
        out.extend_from_slice(&value[last..]);
        out
    }
}
