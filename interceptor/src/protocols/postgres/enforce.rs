//! Statement → decision: classification (cached), SQL-level prepared statements, the
//! policy's `evaluate_sql`, and the ErrorResponse a denial becomes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::{
    evaluate_sql, Policy, SqlDecision, SqlOperation, SqlRequest, SqlStatement, Subject, Verdict,
};
use crate::sql::{Classification, Operation, SqlError, Statement};

use super::backend;
use super::codec::Frame;

/// SQLSTATE of every denial (insufficient_privilege).
pub const DENIED_SQLSTATE: &str = "42501";

/// The statements a request runs, after resolving `EXECUTE name` to what `name` does.
#[derive(Debug, Clone)]
pub struct Checked {
    pub statements: Vec<Statement>,
    pub decision: SqlDecision,
    /// Human summary for audit.
    pub summary: String,
}

impl Checked {
    pub fn allowed(&self) -> bool {
        self.decision.verdict == Verdict::Allow
    }

    /// "interceptor: DELETE on orders denied by rule r: reason".
    pub fn message(&self) -> String {
        let what = self
            .decision
            .statement
            .and_then(|i| self.statements.get(i))
            .map(describe)
            .unwrap_or_else(|| "statement".to_owned());
        match &self.decision.rule {
            Some(r) if !self.decision.reason.contains(r.as_str()) => {
                format!(
                    "interceptor: {what} denied by rule {r}: {}",
                    self.decision.reason
                )
            }
            _ => format!("interceptor: {what} denied: {}", self.decision.reason),
        }
    }

    /// The ErrorResponse the agent gets.
    pub fn error_frame(&self) -> Frame {
        backend::error(
            "ERROR",
            DENIED_SQLSTATE,
            &self.message(),
            None,
            Some("the interceptor's SQL policy decides what this agent may run; ask its operator"),
        )
    }
}

/// Statement kind as people write it: "SelectStmt" → "SELECT", "DeleteStmt" → "DELETE".
pub fn kind_name(kind: &str) -> String {
    let base = kind.strip_suffix("Stmt").unwrap_or(kind);
    match base {
        "Select" => "SELECT".into(),
        "Insert" => "INSERT".into(),
        "Update" => "UPDATE".into(),
        "Delete" => "DELETE".into(),
        "Merge" => "MERGE".into(),
        "Copy" => "COPY".into(),
        "Do" => "DO".into(),
        "Explain" => "EXPLAIN".into(),
        "Execute" => "EXECUTE".into(),
        "Prepare" => "PREPARE".into(),
        "Transaction" => "transaction control".into(),
        other => other.to_owned(),
    }
}

fn describe(s: &Statement) -> String {
    let mut tables: Vec<&str> = s.tables_written.iter().map(String::as_str).collect();
    for t in &s.tables_read {
        if !tables.contains(&t.as_str()) {
            tables.push(t);
        }
    }
    if tables.is_empty() {
        kind_name(&s.kind)
    } else {
        format!("{} on {}", kind_name(&s.kind), tables.join(", "))
    }
}

fn op(o: Operation) -> SqlOperation {
    match o {
        Operation::Read => SqlOperation::Read,
        Operation::Write => SqlOperation::Write,
        Operation::Ddl => SqlOperation::Ddl,
        Operation::Privileged => SqlOperation::Privileged,
        Operation::Transaction => SqlOperation::Transaction,
        Operation::Session => SqlOperation::Session,
        Operation::Utility => SqlOperation::Utility,
    }
}

fn deny(reason: String, statement: Option<usize>) -> SqlDecision {
    SqlDecision {
        verdict: Verdict::Deny,
        rule: None,
        reason,
        row_limit: None,
        statement,
    }
}

/// Everything a session needs to decide its statements.
pub struct Enforcer<'a> {
    pub policy: &'a Policy,
    pub subject: Subject<'a>,
    pub resource: &'a str,
    /// COPY … TO STDOUT would bypass masking: denied when the resource masks.
    pub masking: bool,
}

impl Enforcer<'_> {
    /// Decides a classified query string. `prepared` holds the SQL-level prepared
    /// statements of the session (`PREPARE name AS …`), by name.
    pub fn check(
        &self,
        classified: &Arc<Result<Classification, SqlError>>,
        prepared: &HashMap<String, Statement>,
    ) -> Checked {
        let cls = match classified.as_ref() {
            Ok(c) => c,
            Err(SqlError::Empty) => {
                return Checked {
                    statements: Vec::new(),
                    decision: SqlDecision {
                        verdict: Verdict::Allow,
                        rule: None,
                        reason: "empty query".into(),
                        row_limit: None,
                        statement: None,
                    },
                    summary: String::new(),
                }
            }
            Err(e) => {
                return Checked {
                    statements: Vec::new(),
                    decision: deny(format!("{e}"), None),
                    summary: "unclassified".into(),
                };
            }
        };
        let mut statements = Vec::with_capacity(cls.statements.len());
        for (i, s) in cls.statements.iter().enumerate() {
            let mut s = s.clone();
            if s.kind == "ExecuteStmt" {
                let name = s.prepared_name.clone().unwrap_or_default();
                match prepared.get(&name) {
                    Some(p) => {
                        s.operations.extend(p.operations.iter().copied());
                        s.tables_read.extend(p.tables_read.iter().cloned());
                        s.tables_written.extend(p.tables_written.iter().cloned());
                        s.functions.extend(p.functions.iter().cloned());
                    }
                    None => {
                        statements.push(s);
                        let reason = format!("EXECUTE of prepared statement {name:?}, which this session did not PREPARE through the interceptor");
                        return Checked {
                            summary: cls.summary(),
                            statements,
                            decision: deny(reason, Some(i)),
                        };
                    }
                }
            }
            if self.masking && s.kind == "CopyStmt" && s.operations.contains(&Operation::Read) {
                statements.push(s);
                let reason = "COPY … TO returns rows without masking on this resource; use SELECT"
                    .to_owned();
                return Checked {
                    summary: cls.summary(),
                    statements,
                    decision: deny(reason, Some(i)),
                };
            }
            statements.push(s);
        }
        let kinds: Vec<String> = statements.iter().map(|s| kind_name(&s.kind)).collect();
        let facts: Vec<SqlStatement> = statements
            .iter()
            .zip(&kinds)
            .map(|(s, k)| SqlStatement {
                kind: k,
                operations: s.operations.iter().map(|&o| op(o)).collect(),
                tables: s
                    .tables_read
                    .iter()
                    .chain(s.tables_written.iter())
                    .map(String::as_str)
                    .collect(),
                functions: s.functions.iter().map(String::as_str).collect(),
            })
            .collect();
        let decision = evaluate_sql(
            self.policy,
            &SqlRequest {
                subject: self.subject,
                resource: self.resource,
                statements: &facts,
            },
        );
        Checked {
            summary: cls.summary(),
            statements,
            decision,
        }
    }
}
