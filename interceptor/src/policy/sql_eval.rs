//! The pure SQL evaluator: `evaluate_sql(policy, request) -> SqlDecision`, first match wins,
//! default deny.

use std::collections::BTreeSet;

use serde::Serialize;

use super::eval::{Subject, Verdict};
use super::glob::Pattern;
use super::load::{CompiledSqlRule, Policy};
use super::pg::{SqlAction, SqlOperation};

/// What one statement does, as the classifier saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlStatement<'a> {
    /// Statement kind, e.g. "SELECT", "DELETE" (used in reasons).
    pub kind: &'a str,
    pub operations: BTreeSet<SqlOperation>,
    /// Every table touched (read or written): "schema.table" or "table".
    pub tables: Vec<&'a str>,
    /// Functions called, named as written (folded like tables): "schema.function" or
    /// "function". Matched like tables: an unqualified call may be `pg_catalog.` or `public.`
    /// ([`function_resolutions`]).
    pub functions: Vec<&'a str>,
}

/// The statements of one request (a Query message may hold several).
#[derive(Debug, Clone, Copy)]
pub struct SqlRequest<'a> {
    pub subject: Subject<'a>,
    /// Name of the resource (`resources:` key).
    pub resource: &'a str,
    pub statements: &'a [SqlStatement<'a>],
}

/// The outcome for one request: denied if any statement is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlDecision {
    pub verdict: Verdict,
    /// The rule that decided (the denying rule, or for an allow the first statement's
    /// rule); `None` when no rule matched (default deny).
    pub rule: Option<String>,
    pub reason: String,
    /// Smallest row limit of the allowing rules (`None`: unlimited).
    pub row_limit: Option<u64>,
    /// Index of the denied statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<usize>,
}

impl SqlDecision {
    /// A denial by no rule (the request could not be decided, or no rule allows it).
    pub fn denied(reason: String) -> SqlDecision {
        SqlDecision {
            verdict: Verdict::Deny,
            rule: None,
            reason,
            row_limit: None,
            statement: None,
        }
    }
}

/// Decides a request. Pure: no I/O, no clock. An empty request (no statements) is allowed
/// without a rule (PostgreSQL answers it with EmptyQueryResponse). A denied statement
/// denies the request; otherwise a held statement holds it (hold rules match like deny
/// rules: any listed operation, table or function).
pub fn evaluate_sql(policy: &Policy, req: &SqlRequest) -> SqlDecision {
    if req.subject.token_expired() {
        return SqlDecision {
            verdict: Verdict::Deny,
            rule: None,
            reason: super::eval::TOKEN_EXPIRED_REASON.to_owned(),
            row_limit: None,
            statement: None,
        };
    }
    let mut rule = None;
    let mut row_limit: Option<u64> = None;
    let mut hold: Option<SqlDecision> = None;
    for (i, st) in req.statements.iter().enumerate() {
        let d = evaluate_statement(policy, req, st);
        if d.verdict == Verdict::Deny {
            return SqlDecision {
                statement: Some(i),
                ..d
            };
        }
        if d.verdict == Verdict::Hold {
            if hold.is_none() {
                hold = Some(SqlDecision {
                    statement: Some(i),
                    ..d
                });
            }
            continue;
        }
        if rule.is_none() {
            rule = d.rule;
        }
        row_limit = match (row_limit, d.row_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if let Some(h) = hold {
        return h;
    }
    let reason = match &rule {
        Some(r) => format!("allowed by rule {r}"),
        None => "empty statement".to_owned(),
    };
    SqlDecision {
        verdict: Verdict::Allow,
        rule,
        reason,
        row_limit,
        statement: None,
    }
}

fn evaluate_statement(policy: &Policy, req: &SqlRequest, st: &SqlStatement) -> SqlDecision {
    let applicable = |r: &&CompiledSqlRule| {
        r.identities.as_ref().is_none_or(|ids| {
            ids.iter()
                .any(|&i| policy.identities[i].1.matches(&req.subject))
        }) && r
            .resources
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|n| n == req.resource))
    };
    // Why each applicable allow rule did not cover the statement (for the denial).
    let mut misses: Vec<(&CompiledSqlRule, String)> = Vec::new();
    for r in policy.sql_rules.iter().filter(applicable) {
        match r.action {
            SqlAction::Hold => {
                if deny_matches(r, st) {
                    let reason = r.reason.clone().unwrap_or_else(|| {
                        format!("{} needs an approval (hold rule {})", describe(st), r.name)
                    });
                    return SqlDecision {
                        verdict: Verdict::Hold,
                        rule: Some(r.name.clone()),
                        reason,
                        row_limit: r.row_limit,
                        statement: None,
                    };
                }
            }
            SqlAction::Deny => {
                if deny_matches(r, st) {
                    let reason = r.reason.clone().unwrap_or_else(|| {
                        format!("{} matches deny rule {}", describe(st), r.name)
                    });
                    return SqlDecision {
                        verdict: Verdict::Deny,
                        rule: Some(r.name.clone()),
                        reason,
                        row_limit: None,
                        statement: None,
                    };
                }
            }
            SqlAction::Allow => match allow_mismatch(r, st) {
                None => {
                    let resource_limit = policy
                        .pg_resources
                        .iter()
                        .find(|(n, _)| n == req.resource)
                        .and_then(|(_, res)| res.row_limit.map(|n| n.get()));
                    let row_limit = r.row_limit.or(resource_limit);
                    let returns_rows = st.operations.contains(&SqlOperation::Read);
                    return SqlDecision {
                        verdict: Verdict::Allow,
                        rule: Some(r.name.clone()),
                        reason: format!("allowed by rule {}", r.name),
                        row_limit: row_limit.filter(|_| returns_rows),
                        statement: None,
                    };
                }
                Some(why) => misses.push((r, why)),
            },
        }
    }
    let reason = match misses.as_slice() {
        [(r, why)] => format!("not allowed by rule {}: {why}", r.name),
        [_, ..] => format!(
            "no rule allows it ({})",
            misses
                .iter()
                .map(|(r, why)| format!("{}: {why}", r.name))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        [] => format!(
            "no SQL rule allows {} for this identity on resource {}",
            describe(st),
            req.resource
        ),
    };
    SqlDecision::denied(reason)
}

/// e.g. "DELETE on public.orders"; at most 10 tables are named ("… and 19991 more"): a
/// statement can touch thousands, and the reason is sent and audited with every denial.
pub fn describe(st: &SqlStatement) -> String {
    const SHOWN: usize = 10;
    if st.tables.is_empty() {
        return st.kind.to_owned();
    }
    let mut s = format!("{} on ", st.kind);
    s.push_str(&st.tables[..st.tables.len().min(SHOWN)].join(", "));
    if st.tables.len() > SHOWN {
        s.push_str(&format!(" and {} more", st.tables.len() - SHOWN));
    }
    s
}

/// The schema-qualified names a table of a statement can be. A qualified name is itself. An
/// unqualified one resolves through the search path, taken as the default (`"$user", public`;
/// changing `search_path` is a privileged operation): to `public.`, except that `pg_catalog`
/// is always searched first, so a `pg_*` name may also be a system catalog
/// (`pg_stat_activity`) and must be allowed as both.
fn resolutions(table: &str) -> Vec<String> {
    if table.contains('.') {
        vec![table.to_owned()]
    } else if table.starts_with("pg_") {
        vec![format!("pg_catalog.{table}"), format!("public.{table}")]
    } else {
        vec![format!("public.{table}")]
    }
}

/// The schema-qualified names a called function can be. A qualified call is itself. An
/// unqualified one resolves through the default search path, where `pg_catalog` is always
/// searched first (every built-in lives there: `lower`, `pg_sleep`), then `public`; it must
/// be allowed as both and is denied as either. So a deny rule on `pg_sleep` or on
/// `pg_catalog.pg_sleep` catches `pg_sleep(1)` and `pg_catalog.pg_sleep(1)` alike.
fn function_resolutions(function: &str) -> Vec<String> {
    if function.contains('.') {
        vec![function.to_owned()]
    } else {
        vec![
            format!("pg_catalog.{function}"),
            format!("public.{function}"),
        ]
    }
}

/// Whether the pattern matches a qualified table (or function) name: a pattern with a `.`
/// against `schema.name`, one without against the bare name.
pub(crate) fn name_matches(p: &Pattern, qualified: &str) -> bool {
    if p.as_str().contains('.') {
        p.is_match(qualified)
    } else {
        let bare = qualified.rsplit_once('.').map_or(qualified, |(_, t)| t);
        p.is_match(bare)
    }
}

/// Whether any of the resolutions matches one of the patterns.
fn any_match(ps: &[Pattern], resolutions: Vec<String>) -> bool {
    resolutions
        .iter()
        .any(|q| ps.iter().any(|p| name_matches(p, q)))
}

/// The first of the resolutions no pattern matches.
fn unmatched(ps: &[Pattern], resolutions: Vec<String>) -> Option<String> {
    resolutions
        .into_iter()
        .find(|q| !ps.iter().any(|p| name_matches(p, q)))
}

fn deny_matches(r: &CompiledSqlRule, st: &SqlStatement) -> bool {
    r.operations
        .as_ref()
        .is_none_or(|ops| st.operations.iter().any(|o| ops.contains(o)))
        && r.tables
            .as_ref()
            .is_none_or(|ps| st.tables.iter().any(|t| any_match(ps, resolutions(t))))
        && r.functions.as_ref().is_none_or(|ps| {
            st.functions
                .iter()
                .any(|f| any_match(ps, function_resolutions(f)))
        })
}

/// Why an allow rule does not cover the statement, or `None` when it does.
fn allow_mismatch(r: &CompiledSqlRule, st: &SqlStatement) -> Option<String> {
    if let Some(ops) = &r.operations {
        let extra: Vec<&str> = st
            .operations
            .iter()
            .filter(|o| !ops.contains(o))
            .map(|o| o.as_str())
            .collect();
        if !extra.is_empty() {
            let allowed: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
            return Some(format!(
                "{} operations are not allowed (it allows {})",
                extra.join(" and "),
                allowed.join(", ")
            ));
        }
    }
    if let Some(ps) = &r.tables {
        if let Some((t, q)) = st
            .tables
            .iter()
            .find_map(|t| unmatched(ps, resolutions(t)).map(|q| (t, q)))
        {
            return Some(if !t.contains('.') {
                format!("table {t} (as {q}) is not in its tables")
            } else {
                format!("table {t} is not in its tables")
            });
        }
    }
    if let Some(ps) = &r.functions {
        if let Some((f, q)) = st
            .functions
            .iter()
            .find_map(|f| unmatched(ps, function_resolutions(f)).map(|q| (f, q)))
        {
            return Some(if !f.contains('.') {
                format!("function {f} (as {q}) is not in its functions")
            } else {
                format!("function {f} is not in its functions")
            });
        }
    }
    None
}
