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
use super::routines::{self, Judgement, Routines};
use crate::policy::PostgresResource;

/// SQLSTATE of every denial (insufficient_privilege).
pub const DENIED_SQLSTATE: &str = "42501";

/// The statements a request runs, after resolving `EXECUTE name` to what `name` does.
#[derive(Debug, Clone)]
pub struct Checked {
    pub statements: Vec<Statement>,
    pub decision: SqlDecision,
    /// Human summary for audit.
    pub summary: String,
    /// Why the catalog of the database's functions changed what a statement does
    /// ("public.purge() is volatile: …"); shown in a denial.
    pub notes: Vec<String>,
    /// The decision depends on functions defined in the database (it may change).
    pub user_routines: bool,
    /// Function names (bare) to look up before this can be decided ([`Enforcer::routines`]).
    pub look_up: Vec<String>,
    /// Relation names (bare) to look up before this can be decided ([`Enforcer::relations`]).
    pub look_up_relations: Vec<String>,
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
        let mut m = match &self.decision.rule {
            Some(r) if !self.decision.reason.contains(r.as_str()) => {
                format!(
                    "interceptor: {what} denied by rule {r}: {}",
                    self.decision.reason
                )
            }
            _ => format!("interceptor: {what} denied: {}", self.decision.reason),
        };
        for n in &self.notes {
            m.push_str(" (");
            m.push_str(n);
            m.push(')');
        }
        m
    }

    /// A decision that looked no function up.
    pub fn new(summary: String, statements: Vec<Statement>, decision: SqlDecision) -> Checked {
        Checked {
            statements,
            decision,
            summary,
            notes: Vec::new(),
            user_routines: false,
            look_up: Vec::new(),
            look_up_relations: Vec::new(),
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

/// Tables named in a denial before the rest is only counted.
const DESCRIBED_TABLES: usize = 10;

/// "DELETE on orders, users": the written tables, then the others read, at most
/// [`DESCRIBED_TABLES`] of them ("… and 19990 more"). Linear: a statement may name tens of
/// thousands of tables, and every denial of it is described.
fn describe(s: &Statement) -> String {
    let read_only = s
        .tables_read
        .iter()
        .filter(|t| !s.tables_written.contains(*t));
    let mut tables = s.tables_written.iter().chain(read_only);
    let shown: Vec<&str> = tables
        .by_ref()
        .take(DESCRIBED_TABLES)
        .map(String::as_str)
        .collect();
    let more = tables.count();
    let kind = kind_name(&s.kind);
    match (shown.is_empty(), more) {
        (true, _) => kind,
        (false, 0) => format!("{kind} on {}", shown.join(", ")),
        (false, n) => format!("{kind} on {} and {n} more", shown.join(", ")),
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
        statement,
        ..SqlDecision::denied(reason)
    }
}

/// Everything a session needs to decide its statements.
pub struct Enforcer<'a> {
    pub policy: &'a Policy,
    pub subject: Subject<'a>,
    pub resource: &'a str,
    /// The resource's masking: COPY … TO STDOUT would bypass it (denied), and outputs
    /// computed on ruled columns cannot be masked (denied, see `computed`).
    pub masker: Option<&'a crate::masking::Masker>,
    /// The database's functions and the resource (its `read_only_functions`): a call of a
    /// volatile function defined in the database makes the statement a `write`. `None`:
    /// calls are judged by the classifier alone.
    pub routines: Option<(&'a Routines, &'a PostgresResource)>,
    /// The database's relations by name: whether a table a statement computes on is a view
    /// (or child table) of ruled columns (`relations.rs`). `None`: no table is.
    pub relations: Option<&'a super::catalog::Catalog>,
}

impl Enforcer<'_> {
    /// Decides a classified query string. `prepared` holds the SQL-level prepared
    /// statements of the session (`PREPARE name AS …`), by name. With `look_up`, a call of
    /// a function not in the routines' cache is not decided: its name is returned in
    /// [`Checked::look_up`] (deny, until looked up); without, it counts as unknown.
    pub fn check(
        &self,
        classified: &Arc<Result<Classification, SqlError>>,
        prepared: &HashMap<String, Statement>,
        look_up: bool,
    ) -> Checked {
        let cls = match classified.as_ref() {
            Ok(c) => c,
            Err(SqlError::Empty) => {
                let empty = SqlDecision {
                    verdict: Verdict::Allow,
                    rule: None,
                    reason: "empty query".into(),
                    row_limit: None,
                    statement: None,
                };
                return Checked::new(String::new(), Vec::new(), empty);
            }
            Err(e) => {
                let d = deny(format!("{e}"), None);
                return Checked::new("unclassified".into(), Vec::new(), d);
            }
        };
        let mut statements = Vec::with_capacity(cls.statements.len());
        let mut relations_missing = Vec::new();
        let mut by_catalog = false;
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
                        s.outputs = p.outputs.clone();
                    }
                    None => {
                        statements.push(s);
                        let reason = format!("EXECUTE of prepared statement {name:?}, which this session did not PREPARE through the interceptor");
                        return Checked::new(cls.summary(), statements, deny(reason, Some(i)));
                    }
                }
            }
            if let Some(m) = self.masker {
                let computes = !(s.outputs.computed.is_empty() && s.outputs.bare.is_empty());
                let why = match self.relations {
                    Some(cat) if computes && m.has_column_rules() => {
                        by_catalog = true;
                        let missing = cat.names_missing(&s.tables_read);
                        if look_up && !missing.is_empty() {
                            relations_missing.extend(missing);
                            None
                        } else {
                            let origins = |t: &str, c: Option<&str>| cat.origins_by_name(t, c);
                            super::computed::unmaskable(m, &s, &origins)
                        }
                    }
                    _ => super::computed::unmaskable(m, &s, &super::computed::no_origins),
                };
                if let Some(why) = why {
                    statements.push(s);
                    return Checked::new(cls.summary(), statements, deny(why, Some(i)));
                }
            }
            if self.masker.is_some()
                && s.kind == "CopyStmt"
                && s.operations.contains(&Operation::Read)
            {
                statements.push(s);
                let reason = "COPY … TO returns rows without masking on this resource; use SELECT"
                    .to_owned();
                return Checked::new(cls.summary(), statements, deny(reason, Some(i)));
            }
            statements.push(s);
        }
        if !relations_missing.is_empty() {
            relations_missing.sort_unstable();
            relations_missing.dedup();
            let reason = "the database's relations are being looked up".to_owned();
            let mut c = Checked::new(cls.summary(), statements, deny(reason, None));
            c.look_up_relations = relations_missing;
            return c;
        }
        let (notes, user_routines) = match self.routines {
            Some((routines, res)) => {
                let mut missing = Vec::new();
                let judged = judge_calls(&mut statements, routines, res, look_up, &mut missing);
                if !missing.is_empty() {
                    let reason = "the database's functions are being looked up".to_owned();
                    let mut c = Checked::new(cls.summary(), statements, deny(reason, None));
                    c.look_up = missing;
                    return c;
                }
                judged
            }
            None => (Vec::new(), false),
        };
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
            summary: crate::sql::summarize(&statements),
            statements,
            decision,
            notes,
            // A view may be created or replaced: decisions that consulted the catalog are
            // not kept either.
            user_routines: user_routines || by_catalog,
            look_up: Vec::new(),
            look_up_relations: Vec::new(),
        }
    }
}

/// Adds `write` to each statement calling a volatile (or unknown) function defined in the
/// database. Returns the notes saying why, and whether any call was judged by the catalog
/// rather than left to the classifier. Names not in the cache go to `missing` when
/// `look_up` (and are unknown otherwise).
fn judge_calls(
    statements: &mut [Statement],
    routines: &Routines,
    res: &PostgresResource,
    look_up: bool,
    missing: &mut Vec<String>,
) -> (Vec<String>, bool) {
    let trusted = |q: &str| res.trusts_function(q);
    let mut notes = Vec::new();
    let mut user = false;
    for s in statements.iter_mut() {
        let mut write = None;
        for f in &s.functions {
            let j = match routines.judge(f, &trusted) {
                Some(j) => j,
                None if look_up => {
                    missing.push(routines::split(f).1.to_owned());
                    continue;
                }
                None => Judgement::Unknown(format!("{f} could not be looked up")),
            };
            user |= j.user_defined();
            match j {
                Judgement::System | Judgement::Harmless => {}
                Judgement::Writes(q, why) => {
                    write.get_or_insert(format!("{q}() {why}; the statement counts as write"));
                }
                Judgement::Unknown(why) => {
                    write.get_or_insert(format!(
                        "{why}; a call of an unknown function counts as write"
                    ));
                }
            }
        }
        if let Some(note) = write {
            if s.operations.insert(Operation::Write) {
                notes.push(note);
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.len() > routines::MAX_LOOKUPS {
        // Too many to look up: judged without (unknown, so write).
        let n = missing.len();
        missing.clear();
        for s in statements.iter_mut() {
            if s.operations.insert(Operation::Write) {
                notes.push(format!("the statement calls {n} functions the interceptor does not know, more than it looks up ({}); they count as write", routines::MAX_LOOKUPS));
            }
        }
        user = true;
    }
    (notes, user)
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn describe_lists_written_then_read_tables_capped() {
        let sql = "DELETE FROM a USING b, a2 WHERE a.x = b.x RETURNING a.x";
        let s = &crate::sql::classify(sql).unwrap().statements[0];
        assert_eq!(describe(s), "DELETE on a, a2, b");
        let s = &crate::sql::classify("BEGIN").unwrap().statements[0];
        assert_eq!(describe(s), "transaction control");

        let using: Vec<String> = (0..20_000).map(|i| format!("t{i:05}")).collect();
        let sql = format!("DELETE FROM a USING {}", using.join(", "));
        let s = &crate::sql::classify(&sql).unwrap().statements[0];
        let d = describe(s);
        assert_eq!(
            d,
            "DELETE on a, t00000, t00001, t00002, t00003, t00004, t00005, t00006, t00007, \
             t00008 and 19991 more"
        );
    }
}
