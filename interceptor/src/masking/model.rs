//! The `masking:` policy section as written in YAML (`MaskingDoc`, rules, strategies), with serde and JSON-schema derives.

use std::fmt;
use std::path::PathBuf;

use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::columns::ColumnPattern;
use super::json::FieldPath;

/// Default number of trailing characters (or digits) kept by `strategy: partial`.
pub const DEFAULT_KEEP_LAST: usize = 4;

/// Largest `keep_last` accepted.
pub const MAX_KEEP_LAST: usize = 64;

/// Masking of personal data in results before the agent sees them.
///
/// Column rules are checked first, in order (the first match wins) and mask
/// the whole value; detectors then scan the text values of every other
/// column and replace each occurrence they find.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskingDoc {
    /// Name of an environment variable of the daemon holding the key of
    /// `strategy: hash` (its bytes, at least 16). When neither `key_env` nor
    /// `key_file` is given, a random key is generated when the daemon starts,
    /// so hashes are stable only for the life of that daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// File holding the key of `strategy: hash` (its bytes, at least 16; one
    /// trailing newline is ignored). Exclusive with `key_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Column rules, checked in order; the first rule whose `match` fits the
    /// column masks every value of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnRule>,
    /// Value detectors, run on the text values of columns no column rule
    /// masks. Each kind may be listed once; `kind: all` sets the strategy of
    /// every kind not listed on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detectors: Vec<DetectorRule>,
}

/// How a value (or a detected occurrence) is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Column rules: `[REDACTED]`; detectors: `[REDACTED:<kind>]`.
    Redact,
    /// `****` followed by the last `keep_last` characters (digits for phone,
    /// card and SSN; letters and digits for IBAN). Emails keep their first
    /// character and domain: `a***@example.com`. Values not longer than
    /// `keep_last` become `****`. Private keys are redacted.
    Partial {
        /// Characters kept at the end (default 4).
        keep_last: usize,
    },
    /// `<kind>_` followed by the first 16 hex digits of HMAC-SHA256(key,
    /// value): the same value gives the same pseudonym under one key.
    Hash,
}

impl Strategy {
    /// `partial` with the default `keep_last` (4).
    pub const PARTIAL: Strategy = Strategy::Partial {
        keep_last: DEFAULT_KEEP_LAST,
    };

    fn from_fields(name: StrategyName, keep_last: Option<usize>) -> Result<Strategy, String> {
        match (name, keep_last) {
            (StrategyName::Partial, k) => {
                let keep_last = k.unwrap_or(DEFAULT_KEEP_LAST);
                if keep_last > MAX_KEEP_LAST {
                    return Err(format!(
                        "keep_last {keep_last} is too large (at most {MAX_KEEP_LAST})"
                    ));
                }
                Ok(Strategy::Partial { keep_last })
            }
            (StrategyName::Redact, None) => Ok(Strategy::Redact),
            (StrategyName::Hash, None) => Ok(Strategy::Hash),
            (other, Some(_)) => Err(format!(
                "`keep_last` only goes with `strategy: partial`, not `strategy: {other}`"
            )),
        }
    }

    fn to_fields(self) -> (StrategyName, Option<usize>) {
        match self {
            Strategy::Redact => (StrategyName::Redact, None),
            Strategy::Hash => (StrategyName::Hash, None),
            Strategy::Partial { keep_last } => (
                StrategyName::Partial,
                (keep_last != DEFAULT_KEEP_LAST).then_some(keep_last),
            ),
        }
    }
}

/// The `strategy:` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    /// Replace with `[REDACTED]` (column rules) or `[REDACTED:<kind>]` (detectors).
    Redact,
    /// Keep the last `keep_last` characters (default 4) behind `****`;
    /// emails keep their first character and domain.
    Partial,
    /// Replace with a keyed pseudonym `<kind>_<16 hex digits>`.
    Hash,
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrategyName::Redact => "redact",
            StrategyName::Partial => "partial",
            StrategyName::Hash => "hash",
        })
    }
}

/// A kind of personal data or secret found inside text values.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// local@domain.tld (a dot in the domain, a TLD of two or more letters).
    Email,
    /// E.164 (`+` and 8 to 15 digits) or North American formats such as
    /// `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `415 555 0199`; bare
    /// digit runs never.
    Phone,
    /// 13 to 19 digits (optionally grouped by single spaces or dashes, mixed,
    /// or by dots) with a known card prefix and length, passing the Luhn check.
    CreditCard,
    /// US social security number written `AAA-GG-SSSS`, `AAA GG SSSS` or
    /// `AAA.GG.SSSS`; use a column rule for SSNs without separators.
    UsSsn,
    /// IBAN, compact or in groups of four (spaces or dashes), in upper or
    /// lower case, with the country's length and a valid mod-97 checksum.
    Iban,
    /// Dotted-quad IPv4 address not part of a longer dotted sequence.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// JSON Web Token (three base64url segments, header with `"alg"`).
    Jwt,
    /// Well-known API key formats (AWS, GitHub, GitLab, Slack, Stripe, OpenAI,
    /// Google, npm, PyPI, Hugging Face, Shopify, DigitalOcean, Linear).
    ApiKey,
    /// PEM private key block, BEGIN through END line.
    PrivateKey,
    /// Every kind above not listed on its own.
    All,
}

impl DetectorKind {
    /// The concrete kinds (all but `All`), in index order.
    pub const KINDS: [DetectorKind; 10] = [
        DetectorKind::Email,
        DetectorKind::Phone,
        DetectorKind::CreditCard,
        DetectorKind::UsSsn,
        DetectorKind::Iban,
        DetectorKind::Ipv4,
        DetectorKind::Ipv6,
        DetectorKind::Jwt,
        DetectorKind::ApiKey,
        DetectorKind::PrivateKey,
    ];

    /// The YAML name, also used in `[REDACTED:<kind>]`, hash prefixes and
    /// `Masked::kind`.
    pub const fn name(self) -> &'static str {
        match self {
            DetectorKind::Email => "email",
            DetectorKind::Phone => "phone",
            DetectorKind::CreditCard => "credit_card",
            DetectorKind::UsSsn => "us_ssn",
            DetectorKind::Iban => "iban",
            DetectorKind::Ipv4 => "ipv4",
            DetectorKind::Ipv6 => "ipv6",
            DetectorKind::Jwt => "jwt",
            DetectorKind::ApiKey => "api_key",
            DetectorKind::PrivateKey => "private_key",
            DetectorKind::All => "all",
        }
    }

    /// Position in `KINDS` (`All` has none).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A column rule: every value of a matching column is masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ColumnRuleDoc", into = "ColumnRuleDoc")]
pub struct ColumnRule {
    /// `table.column` (either part a glob; table may be `*`, or
    /// `schema.table`), or a bare column-name glob such as `*ssn*`.
    /// Matched case-insensitively.
    pub pattern: String,
    /// How values are replaced.
    pub strategy: Strategy,
}

/// A value detector and the strategy for what it finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DetectorRuleDoc", into = "DetectorRuleDoc")]
pub struct DetectorRule {
    /// What to look for (`all`: every kind not listed on its own).
    pub kind: DetectorKind,
    /// How each occurrence is replaced.
    pub strategy: Strategy,
}

/// A JSON field rule (HTTP bodies): the values at `path` are masked whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FieldRuleDoc", into = "FieldRuleDoc")]
pub struct FieldRule {
    /// `$.users[*].email`, `users.*.email`, `$..email`, `$.items[0].card`.
    /// Names match ASCII case-insensitively (`$..ssn` also masks `SSN`).
    pub path: FieldPath,
    /// How the values are replaced.
    pub strategy: Strategy,
}

impl FieldRule {
    /// Parses `path`; see `FieldPath` for the syntax.
    pub fn new(path: &str, strategy: Strategy) -> Result<FieldRule, super::MaskingError> {
        Ok(FieldRule {
            path: path.parse()?,
            strategy,
        })
    }
}

/// A column rule as written: `match`, `strategy`, `keep_last`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ColumnRule")]
pub(crate) struct ColumnRuleDoc {
    /// `table.column` (either part a glob; table may be `*`, or
    /// `schema.table`), or a bare column-name glob such as `*ssn*`.
    /// Matched case-insensitively. When the table of a result column is not
    /// known, a `table.column` rule matches on the column name alone.
    #[serde(rename = "match")]
    pattern: String,
    /// redact, partial or hash.
    strategy: StrategyName,
    /// For `strategy: partial`: characters kept at the end (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_last: Option<usize>,
}

/// A detector rule as written: `kind`, `strategy`, `keep_last`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DetectorRule")]
pub(crate) struct DetectorRuleDoc {
    /// What to look for in text values.
    kind: DetectorKind,
    /// redact, partial or hash.
    strategy: StrategyName,
    /// For `strategy: partial`: characters kept at the end (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_last: Option<usize>,
}

/// A JSON field rule as written: `path`, `strategy`, `keep_last`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FieldRule")]
pub(crate) struct FieldRuleDoc {
    /// `$.users[*].email`, `users.*.email`, `$..email`, `$.items[0].card`.
    /// Names match ASCII case-insensitively (`$..ssn` also masks `SSN`).
    path: String,
    /// redact, partial or hash.
    strategy: StrategyName,
    /// For `strategy: partial`: characters kept at the end (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_last: Option<usize>,
}

impl TryFrom<ColumnRuleDoc> for ColumnRule {
    type Error = String;
    fn try_from(d: ColumnRuleDoc) -> Result<Self, String> {
        ColumnPattern::parse(&d.pattern).map_err(|e| e.to_string())?;
        Ok(ColumnRule {
            pattern: d.pattern,
            strategy: Strategy::from_fields(d.strategy, d.keep_last)?,
        })
    }
}

impl From<ColumnRule> for ColumnRuleDoc {
    fn from(r: ColumnRule) -> Self {
        let (strategy, keep_last) = r.strategy.to_fields();
        ColumnRuleDoc {
            pattern: r.pattern,
            strategy,
            keep_last,
        }
    }
}

impl TryFrom<DetectorRuleDoc> for DetectorRule {
    type Error = String;
    fn try_from(d: DetectorRuleDoc) -> Result<Self, String> {
        Ok(DetectorRule {
            kind: d.kind,
            strategy: Strategy::from_fields(d.strategy, d.keep_last)?,
        })
    }
}

impl From<DetectorRule> for DetectorRuleDoc {
    fn from(r: DetectorRule) -> Self {
        let (strategy, keep_last) = r.strategy.to_fields();
        DetectorRuleDoc {
            kind: r.kind,
            strategy,
            keep_last,
        }
    }
}

impl TryFrom<FieldRuleDoc> for FieldRule {
    type Error = String;
    fn try_from(d: FieldRuleDoc) -> Result<Self, String> {
        Ok(FieldRule {
            path: d
                .path
                .parse()
                .map_err(|e: super::MaskingError| e.to_string())?,
            strategy: Strategy::from_fields(d.strategy, d.keep_last)?,
        })
    }
}

impl From<FieldRule> for FieldRuleDoc {
    fn from(r: FieldRule) -> Self {
        let (strategy, keep_last) = r.strategy.to_fields();
        FieldRuleDoc {
            path: r.path.to_string(),
            strategy,
            keep_last,
        }
    }
}

impl JsonSchema for ColumnRule {
    fn schema_name() -> String {
        ColumnRuleDoc::schema_name()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        ColumnRuleDoc::json_schema(gen)
    }
}

impl JsonSchema for DetectorRule {
    fn schema_name() -> String {
        DetectorRuleDoc::schema_name()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        DetectorRuleDoc::json_schema(gen)
    }
}

impl JsonSchema for FieldRule {
    fn schema_name() -> String {
        FieldRuleDoc::schema_name()
    }
    fn json_schema(gen: &mut SchemaGenerator) -> Schema {
        FieldRuleDoc::json_schema(gen)
    }
}
