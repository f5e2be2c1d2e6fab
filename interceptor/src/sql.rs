//! Pure SQL classifier: what each PostgreSQL statement of a query string does, from the real
//! PostgreSQL parser (libpg_query through the `pg_query` crate).
//!
//! [`classify`] parses a query string once and returns one [`Statement`] per statement in it
//! (`COMMIT; DROP TABLE x` is two), with the [`Operation`]s it performs, the tables it reads
//! and writes and the functions it calls. Statement boundaries, comments, escape strings,
//! dollar quoting and quoted identifiers are the parser's, so they are PostgreSQL's.
//! Anything this module has not mapped is an error ([`SqlError::Unknown`]): fail closed.
//! [`Classifier`] adds a bounded, thread-safe LRU cache keyed by the exact text.
//!
//! Layout: `tree` (a name-preserving generic view of the AST), `walk` (visits every node:
//! tables, functions, nested DML, CTE scoping), `stmt` (the statement-kind mapping below),
//! `functions` (side-effecting built-ins), `cache` ([`Classifier`]).
//!
//! # Statement mapping
//!
//! `kind` is pg_query's node name. Operations of nested parts are added: any
//! `INSERT`/`UPDATE`/`DELETE`/`MERGE` anywhere adds `write`, reading any table adds `read`, a
//! side-effecting function (see [`is_side_effecting_function`]) adds its operation.
//!
//! | statement (`kind`) | operations | tables |
//! |---|---|---|
//! | `SELECT`, `VALUES`, `TABLE` (`SelectStmt`) | read | FROM/JOIN/subquery tables read; CTE names are not tables |
//! | `SELECT … FOR UPDATE/SHARE` | read (the row locks are not reported) | read |
//! | `SELECT … INTO t` (`SelectStmt`) | read, ddl, write | `t` written |
//! | `WITH d AS (DELETE … RETURNING *) SELECT …` | read, write | target written |
//! | `INSERT`, `UPDATE`, `DELETE`, `MERGE` | write (+ read when it reads tables) | target written; `FROM`/`USING`/subquery/source tables read; with `RETURNING` the target is read too (and `read` added) |
//! | `UPDATE pg_settings …` (any write to `pg_settings`/`pg_catalog.pg_settings`: its rule calls `set_config`) | privileged + the above | as above |
//! | any statement reading (or writing) the planner's statistics: `pg_stats`, `pg_stats_ext`, `pg_stats_ext_exprs`, `pg_statistic`, `pg_statistic_ext`, `pg_statistic_ext_data`, unqualified or in `pg_catalog`, anywhere (joins, subqueries, CTEs, `COPY`, a view's query; not a CTE of that name, not under a plain `EXPLAIN`) | privileged + the above (sample values of every table, outside table rules and masking) | as above |
//! | `TRUNCATE` | write | written |
//! | `COPY t FROM STDIN` (`CopyStmt`) | write | `t` written |
//! | `COPY t TO STDOUT` | read | `t` read |
//! | `COPY (query) TO STDOUT` | read + the query's (`COPY (DELETE … RETURNING *) TO STDOUT` writes) | the query's |
//! | `COPY … FROM/TO 'file'`, `COPY … PROGRAM '…'` | privileged + the above | as above |
//! | `CALL p()` (`CallStmt`) | write | — (`p` in functions) |
//! | `NOTIFY` | write | — |
//! | `REFRESH MATERIALIZED VIEW` | write | view written |
//! | `EXPLAIN stmt` | read | all of stmt's tables read; nothing escalated (nothing runs) |
//! | `EXPLAIN ANALYZE stmt` (`ANALYZE`, `ANALYZE true`, `(ANALYZE on)`, any number: `(ANALYZE 0)` too, a number's value never decides) | read + stmt's | stmt's |
//! | `SHOW` (`VariableShowStmt`), `FETCH`/`MOVE` (`FetchStmt`) | read | — |
//! | `BEGIN`/`START`/`COMMIT`/`ROLLBACK`/`SAVEPOINT`/`RELEASE`/`ROLLBACK TO`/`PREPARE TRANSACTION`/`COMMIT PREPARED`/`ROLLBACK PREPARED`/`END`/`ABORT` (`TransactionStmt`) | transaction | — |
//! | `SET TRANSACTION …` (`VariableSetStmt`), `SET CONSTRAINTS` (`ConstraintsSetStmt`) | transaction | — |
//! | `SET x`, `RESET x`, `RESET ALL`, `SET SESSION CHARACTERISTICS` (`VariableSetStmt`) | session | — |
//! | `SET ROLE`, `RESET ROLE`, `SET SESSION AUTHORIZATION`, `RESET SESSION AUTHORIZATION`; `SET`/`SET LOCAL`/`SET SESSION`/`RESET` of `session_replication_role`, `search_path` (`SET SCHEMA`), `client_encoding` (`SET NAMES`) or `standard_conforming_strings` (see `is_privileged_setting`; `set_config` likewise) | privileged | — |
//! | `DISCARD PLANS/SEQUENCES/TEMP` | session | — |
//! | `DISCARD ALL` (resets the role and session authorization) | privileged | — |
//! | `LISTEN`, `UNLISTEN`, `CLOSE` (`ClosePortalStmt`), `DEALLOCATE` | session | — |
//! | `PREPARE p AS stmt` (`PrepareStmt`) | session + stmt's | stmt's; `prepared_name = p` |
//! | `EXECUTE p(…)` (`ExecuteStmt`) | session; the proxy must add what `p` does | `prepared_name = p` |
//! | `DEALLOCATE p` | session | `prepared_name = p` (none for `DEALLOCATE ALL`) |
//! | `DECLARE c CURSOR FOR query` (`DeclareCursorStmt`) | session + the query's | the query's |
//! | `VACUUM`, `ANALYZE` (`VacuumStmt`), `CLUSTER`, `LOCK` | utility | written (acted upon) |
//! | `CHECKPOINT`, `LOAD`, `DO`, `ALTER SYSTEM` | privileged | — |
//! | `GRANT`, `REVOKE` (`GrantStmt`, `GrantRoleStmt`), `ALTER DEFAULT PRIVILEGES`, `CREATE/ALTER/DROP ROLE/USER/GROUP`, `ALTER ROLE … SET`, `REASSIGN OWNED` | privileged | tables granted on written |
//! | `CREATE/ALTER EXTENSION`, `ALTER EXTENSION … SET SCHEMA`, `CREATE LANGUAGE`, `… FOREIGN DATA WRAPPER`, `… USER MAPPING`, `… TABLESPACE`, `… PUBLICATION`, `… SUBSCRIPTION`, `CREATE/ALTER EVENT TRIGGER`, `ALTER DATABASE … SET`, `ALTER … OWNER TO` (`ALTER SCHEMA … OWNER TO` too), `DROP OWNED`, `SECURITY LABEL` | ddl, privileged | objects written |
//! | code that runs later, unseen by the rules of the statements it runs in: `CREATE [OR REPLACE] FUNCTION/PROCEDURE … AS '…'` (a body given as a string, any language), `… SECURITY DEFINER` or `… SET` of a privileged setting (`CREATE` or `ALTER FUNCTION/PROCEDURE/ROUTINE`), `CREATE [CONSTRAINT] TRIGGER`, `ALTER TABLE … ENABLE/DISABLE [ALWAYS/REPLICA] TRIGGER/RULE`, `CREATE OPERATOR`, `CREATE AGGREGATE`, `CREATE CAST … WITH FUNCTION`, `CREATE TYPE … (INPUT = …)` | ddl, privileged (+ the operations of a parsed body) | objects written; a trigger's function in functions |
//! | changes of what a rule's name means: `ALTER SCHEMA … RENAME`, `ALTER TABLE/VIEW/MATERIALIZED VIEW/FOREIGN TABLE/SEQUENCE … RENAME TO` or `… SET SCHEMA`, the same of a `FUNCTION`/`PROCEDURE`/`ROUTINE`/`AGGREGATE`, `ALTER TABLE … ATTACH PARTITION t`, `ALTER TABLE t INHERIT p` (`t`'s rows read and written as `p`'s) | ddl, privileged | relations written: old and new name |
//! | `CREATE TABLE … AS`, `CREATE MATERIALIZED VIEW … AS` (`CreateTableAsStmt`) | ddl, write (+ read of the source) | new table written, source read |
//! | every other `CREATE`/`ALTER`/`DROP`, `COMMENT`, `REINDEX`, `CREATE INDEX`, `CREATE VIEW`, `CREATE RULE` (its actions are parsed: walked as if they ran), `CREATE FUNCTION/PROCEDURE … BEGIN ATOMIC … END` or `… RETURN expr` (a SQL-standard body, parsed: walked as if it ran), renames of columns, indexes, constraints, triggers and types, `CREATE/DROP DATABASE`, `IMPORT FOREIGN SCHEMA`, `CREATE SCHEMA` (+ its elements) | ddl (+ the operations of a view's query, a rule's actions, a SQL-standard body) | objects written, tables of embedded queries read or written |
//! | anything else | error [`SqlError::Unknown`] | |
//!
//! Table and function names are `schema.name` or `name` as written; a database part
//! (`db.schema.t`, which PostgreSQL accepts only for the current database) is dropped.
//!
//! "written" means acted upon: rows, definition, storage, privileges or locks. Queries that
//! only define later behaviour (a view's, a rule's action, a `BEGIN ATOMIC` body) are
//! classified as if they ran: conservative.
//!
//! # Limits the caller must know
//! - The text must be what the server parses: UTF-8 (convert from a non-UTF-8
//!   `client_encoding` first, or deny changing it: changing it is `privileged`), and parsed
//!   with the server's `standard_conforming_strings` ([`ParseOptions`]; the server reports it
//!   in `ParameterStatus`; changing it is `privileged` too). With it off, `'\''` ends
//!   differently.
//! - What an existing user-defined function, trigger, rule or view does is not visible
//!   (creating one whose code is not parsed here is `privileged`, see above); function
//!   names are listed for the policy. The PostgreSQL proxy looks the called functions up in
//!   the database (`protocols::postgres::routines`): a volatile one defined there adds
//!   `write`.
//! - Operators are function calls too; they are not listed.

mod cache;
mod functions;
mod outputs;
mod stmt;
mod tree;
mod walk;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_corpus;

use std::collections::BTreeSet;

pub use cache::Classifier;
pub use functions::is_side_effecting_function;

/// What a statement does. A statement can do several things (`EXPLAIN ANALYZE DELETE` reads
/// and writes).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Reads rows or settings.
    Read,
    /// Changes rows (or other data: sequences, large objects, notifications).
    Write,
    /// Creates, alters or drops schema objects.
    Ddl,
    /// Acts as another role, on other sessions, on the server's files or runs arbitrary code.
    Privileged,
    /// Transaction control.
    Transaction,
    /// Session state: settings, prepared statements, cursors, LISTEN.
    Session,
    /// Maintenance and locks: VACUUM, ANALYZE, CLUSTER, LOCK, advisory locks.
    Utility,
}

impl Operation {
    /// The lowercase name used in policies and audit logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Ddl => "ddl",
            Operation::Privileged => "privileged",
            Operation::Transaction => "transaction",
            Operation::Session => "session",
            Operation::Utility => "utility",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    /// pg_query's node name: `"SelectStmt"`, `"InsertStmt"`, `"ExplainStmt"`, …
    pub kind: String,
    /// Everything the statement does, nested parts included.
    pub operations: BTreeSet<Operation>,
    /// Tables whose rows are read. Names as PostgreSQL folds them (unquoted lowercased,
    /// quoted kept), schema-qualified when written so; a database part is dropped
    /// (`crm.public.t` is `public.t`).
    pub tables_read: BTreeSet<String>,
    /// Tables acted upon: rows written, or definition, storage, privileges or locks changed.
    pub tables_written: BTreeSet<String>,
    /// Every function called anywhere, named as written (folded like tables, database part
    /// dropped): `pg_sleep`, `pg_catalog.pg_sleep`. Policies match both forms (see
    /// `policies/README.md`).
    pub functions: BTreeSet<String>,
    /// This statement's own source text.
    pub text: String,
    /// The prepared statement named by `PREPARE name` (defined), `EXECUTE name` (run: its
    /// operations are only `session`; the proxy must add those of the statement it recorded
    /// for `name` at `PREPARE`, and deny an unknown name) or `DEALLOCATE name` (dropped;
    /// `None` for `DEALLOCATE ALL`). `None` for every other kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_name: Option<String>,
    /// Columns its output computes on, and the aliases to resolve them (see
    /// [`outputs`](self::outputs)): masking rules cannot follow them.
    #[serde(skip)]
    pub outputs: Outputs,
}

pub use outputs::{ColumnUse, Outputs};

/// All statements of a query string, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Classification {
    pub statements: Vec<Statement>,
}

impl Classification {
    /// The union of the statements' operations.
    pub fn operations(&self) -> BTreeSet<Operation> {
        self.union(|s| &s.operations)
    }

    pub fn tables_read(&self) -> BTreeSet<String> {
        self.union(|s| &s.tables_read)
    }

    pub fn tables_written(&self) -> BTreeSet<String> {
        self.union(|s| &s.tables_written)
    }

    pub fn functions(&self) -> BTreeSet<String> {
        self.union(|s| &s.functions)
    }

    fn union<T: Ord + Clone>(&self, f: impl Fn(&Statement) -> &BTreeSet<T>) -> BTreeSet<T> {
        self.statements
            .iter()
            .flat_map(|s| f(s).iter().cloned())
            .collect()
    }

    /// One line for audit logs: per statement `Kind ops [read tables] -> [written tables]
    /// calls [functions] prepared=name`, statements joined by `"; "`. Empty parts are left
    /// out: `SelectStmt read [users]`.
    pub fn summary(&self) -> String {
        summarize(&self.statements)
    }
}

/// [`Classification::summary`] of these statements.
pub fn summarize(statements: &[Statement]) -> String {
    let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
    statements
        .iter()
        .map(|s| {
            let ops: Vec<&str> = s.operations.iter().map(|o| o.as_str()).collect();
            let mut line = format!("{} {}", s.kind, ops.join(","));
            if !s.tables_read.is_empty() {
                line.push_str(&format!(" [{}]", list(&s.tables_read)));
            }
            if !s.tables_written.is_empty() {
                line.push_str(&format!(" -> [{}]", list(&s.tables_written)));
            }
            if !s.functions.is_empty() {
                line.push_str(&format!(" calls [{}]", list(&s.functions)));
            }
            if let Some(p) = &s.prepared_name {
                line.push_str(&format!(" prepared={p}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a query string was not classified. Every variant means: deny.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// PostgreSQL's parser rejected it; the message is the parser's.
    #[error("SQL does not parse: {0}")]
    Parse(String),
    #[error("cannot classify {kind}: {detail}; denied (fail closed)")]
    Unknown { kind: String, detail: String },
    /// No statement at all (empty, blanks, comments or lone semicolons).
    #[error("empty query")]
    Empty,
}

/// How the server parses strings. PostgreSQL reports `standard_conforming_strings` in a
/// `ParameterStatus` message; a proxy should pass what the server last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParseOptions {
    /// `standard_conforming_strings` (on by default since PostgreSQL 9.1): backslashes in
    /// `'…'` are plain characters.
    pub standard_conforming_strings: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            standard_conforming_strings: true,
        }
    }
}

/// Classifies a query string with PostgreSQL's defaults ([`ParseOptions::default`]). Pure.
pub fn classify(sql: &str) -> Result<Classification, SqlError> {
    classify_with(sql, ParseOptions::default())
}

/// Classifies a query string parsed as the server with `options` would parse it. Pure.
pub fn classify_with(sql: &str, options: ParseOptions) -> Result<Classification, SqlError> {
    let mut parser_options = pg_query::ParserOptions::DEFAULT;
    if !options.standard_conforming_strings {
        parser_options |= pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS;
    }
    // pg_query's result helpers index into the tree; never let a panic there escape.
    let unknown = |detail: &str| SqlError::Unknown {
        kind: "query".to_owned(),
        detail: detail.to_owned(),
    };
    let parsed = std::panic::catch_unwind(|| pg_query::parse(sql, parser_options))
        .map_err(|_| unknown("the parser's result helpers panicked"))?
        .map_err(|e| match e {
            pg_query::Error::Parse(msg) => SqlError::Parse(msg),
            pg_query::Error::Conversion(_) => SqlError::Parse("query contains a NUL byte".into()),
            // prost stops decoding at 100 nested messages: about 45 chained binary operators
            // (`a || b || …`) or 20-odd nested subqueries.
            pg_query::Error::Decode(_) => unknown("parse tree nests too deeply to decode"),
            other => unknown(&other.to_string()),
        })?;
    let raw = &parsed.protobuf.stmts;
    if raw.is_empty() {
        return Err(SqlError::Empty);
    }
    let statements = raw
        .iter()
        .map(|r| {
            let node = r
                .stmt
                .as_deref()
                .and_then(|n| n.node.as_ref())
                .ok_or(SqlError::Empty)?;
            let mut facts = walk::Facts::default();
            stmt::classify_stmt(node, &mut facts, true)?;
            Ok(Statement {
                kind: tree::variant_name(node).to_owned(),
                operations: facts.ops,
                tables_read: facts.read,
                tables_written: facts.written,
                functions: facts.functions,
                text: statement_text(sql, r.stmt_location, r.stmt_len),
                prepared_name: facts.prepared_name,
                outputs: facts.outputs,
            })
        })
        .collect::<Result<Vec<_>, SqlError>>()?;
    Ok(Classification { statements })
}

/// The statement's text from the parser's byte offsets (`len` 0: to the end), trimmed.
fn statement_text(sql: &str, location: i32, len: i32) -> String {
    let start = usize::try_from(location).unwrap_or(0);
    let end = match usize::try_from(len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(n) => start.saturating_add(n).min(sql.len()),
    };
    sql.get(start..end).unwrap_or(sql).trim().to_owned()
}
