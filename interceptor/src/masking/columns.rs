//! Column rules: `table.column` / column-name glob patterns and the per-result-set `ColumnPlan`.

use globset::{GlobBuilder, GlobMatcher};

use super::MaskingError;

/// A compiled column `match`.
#[derive(Debug, Clone)]
pub(crate) struct ColumnPattern {
    /// `None`: any table (a bare column glob, or `*.column`).
    table: Option<GlobMatcher>,
    /// The table part names a schema too (`public.users.email`).
    table_qualified: bool,
    column: GlobMatcher,
}

fn glob(pattern: &str, part: &str) -> Result<GlobMatcher, MaskingError> {
    let err = |reason: String| MaskingError::Pattern {
        pattern: pattern.to_owned(),
        reason,
    };
    if part.is_empty() {
        return Err(err("empty table or column name".to_owned()));
    }
    GlobBuilder::new(part)
        .case_insensitive(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| err(e.kind().to_string()))
}

impl ColumnPattern {
    /// `column-glob`, `table.column`, `*.column`, `schema.table.column`
    /// (split at the last dot).
    pub(crate) fn parse(pattern: &str) -> Result<ColumnPattern, MaskingError> {
        match pattern.rsplit_once('.') {
            None => Ok(ColumnPattern {
                table: None,
                table_qualified: false,
                column: glob(pattern, pattern)?,
            }),
            Some((table, column)) => Ok(ColumnPattern {
                table: if table == "*" {
                    None
                } else {
                    Some(glob(pattern, table)?)
                },
                table_qualified: table.contains('.'),
                column: glob(pattern, column)?,
            }),
        }
    }

    /// Whether this rule can apply to some column of `table`.
    pub(crate) fn covers_table(&self, table: &str) -> bool {
        match &self.table {
            None => true,
            Some(g) => {
                g.is_match(table)
                    || (!self.table_qualified
                        && table
                            .rsplit_once('.')
                            .is_some_and(|(_, last)| g.is_match(last)))
            }
        }
    }

    /// Whether a column `name` of `table` matches. An unknown table matches
    /// any table part (masking more rather than less); a schema-qualified
    /// table name also matches an unqualified table part on its last
    /// component.
    pub(crate) fn matches(&self, table: Option<&str>, name: &str) -> bool {
        if !self.column.is_match(name) {
            return false;
        }
        table.is_none_or(|t| self.covers_table(t))
    }

    /// Whether this rule masks a column `name` of `table` or of one of its `origins`.
    pub(crate) fn matches_ref(&self, c: &ColumnRef<'_>) -> bool {
        self.matches(c.table, c.name)
            || c.origins.iter().any(|o| match &o.column {
                Some(col) => self.matches(Some(&o.table), col),
                None => self.covers_table(&o.table),
            })
    }
}

/// A result column as the caller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnRef<'a> {
    /// Table name (`users` or `public.users`) when known; PostgreSQL gives
    /// the table OID of plain table columns, the caller maps it to a name.
    pub table: Option<&'a str>,
    /// Column name. Pass the table's own column name when known (an alias
    /// such as `SELECT email AS e` would otherwise escape a `users.email` rule).
    pub name: &'a str,
    /// The values are UTF-8 text detectors can scan (text-format values of
    /// text, varchar, char, name, json, jsonb, xml, ... columns). `false`
    /// for binary-format values and non-text types: detectors skip them.
    pub text_like: bool,
    /// Other columns the values come from: the base-table column behind a view's column,
    /// the same column of a partition's or child table's ancestors. A rule on any of them
    /// masks this column too.
    pub origins: &'a [Origin],
    /// The result names a table that could not be looked up (the catalog query failed):
    /// which rules apply is not known, so the first column rule masks the column (fail
    /// closed).
    pub table_unknown: bool,
}

/// A column a result column's values come from (see [`ColumnRef::origins`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// "schema.table".
    pub table: String,
    /// `None`: the whole row (a view's column computed from `users u` as a record), which
    /// any rule on a column of `table` concerns.
    pub column: Option<String>,
}

/// What to do with each column of one result set (from `Masker::plan`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnPlan {
    pub(crate) cols: Vec<ColAction>,
    pub(crate) noop: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColAction {
    /// No column rule, not text or no detectors: values pass unchanged.
    Keep,
    /// No column rule: run the detectors on text values.
    Detect,
    /// Column rule `rule` masks every value.
    Rule {
        rule: usize,
        requires_text: bool,
        /// Prefix of `strategy: hash` pseudonyms: the column name.
        hash_prefix: Box<str>,
    },
}

impl ColumnPlan {
    /// Number of columns planned.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// No columns planned.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// No value of this result set can be changed: the caller may skip
    /// `mask_value` altogether.
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// Whether a column rule masks column `i` (every value of it).
    pub fn has_rule(&self, i: usize) -> bool {
        matches!(self.cols.get(i), Some(ColAction::Rule { .. }))
    }

    /// Whether column `i` has a column rule but is not text-like: its
    /// masked values are text, so the caller must describe the column as
    /// text (or send NULL instead) before sending rows.
    pub fn requires_text(&self, i: usize) -> bool {
        matches!(
            self.cols.get(i),
            Some(ColAction::Rule {
                requires_text: true,
                ..
            })
        )
    }
}

/// The prefix of hash pseudonyms of a column: its name in lower case, with
/// characters other than ASCII letters, digits and `_` as `_`, at most 32
/// bytes; `value` for an empty name.
pub(crate) fn hash_prefix(name: &str) -> Box<str> {
    let p: String = name
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if p.is_empty() {
        "value".into()
    } else {
        p.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, table: Option<&str>, name: &str) -> bool {
        ColumnPattern::parse(p).unwrap().matches(table, name)
    }

    #[test]
    fn table_and_column() {
        assert!(m("users.email", Some("users"), "email"));
        assert!(m("users.email", Some("USERS"), "Email"));
        assert!(m("users.email", Some("public.users"), "email"));
        assert!(!m("users.email", Some("orders"), "email"));
        assert!(!m("users.email", Some("users"), "email2"));
        // Unknown table: matched on the column name.
        assert!(m("users.email", None, "email"));
        assert!(m("*.email", Some("orders"), "email"));
        assert!(m("public.users.email", Some("public.users"), "email"));
        assert!(!m("public.users.email", Some("audit.users"), "email"));
        assert!(!m("public.users.email", Some("users"), "email"));
        assert!(m("user*.e?ail", Some("users_archive"), "email"));
    }

    #[test]
    fn bare_globs() {
        assert!(m("*ssn*", Some("people"), "tax_ssn_hash"));
        assert!(m("*ssn*", None, "SSN"));
        assert!(!m("*ssn*", None, "session"));
        assert!(m("*phone*", Some("x"), "mobile_phone"));
        assert!(m("[ab]_id", None, "a_id"));
    }

    #[test]
    fn invalid_patterns() {
        for p in ["", "users.", ".email", "users.[", "a{b"] {
            assert!(ColumnPattern::parse(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(&*hash_prefix("Email"), "email");
        assert_eq!(&*hash_prefix("home phone"), "home_phone");
        assert_eq!(&*hash_prefix(""), "value");
        assert_eq!(&*hash_prefix("prénom"), "pr_nom");
    }
}
