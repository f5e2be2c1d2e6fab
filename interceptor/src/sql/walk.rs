//! Generic walk over a statement's [`Tree`]: tables read and written, functions called, nested
//! data-modifying statements, `SELECT … INTO`, and CTE name scoping.
//!
//! Every node is visited; only a few node types have rules, everything else is descended
//! into. Rules:
//! - `RangeVar` in *read* mode is a table read (unless a bare name refers to a CTE in scope),
//!   in *target* mode a table written (or, when nothing executes, read).
//! - `InsertStmt`/`UpdateStmt`/`DeleteStmt`/`MergeStmt` anywhere (top level or in a `WITH`)
//!   add `Write`; their `relation` is written; with `RETURNING` it is read too (`Read`).
//! - `SelectStmt` with an `INTO` clause adds `Ddl` and `Write`; the new table is written.
//! - `FuncCall` adds its name to the functions and, when executing, the operation from
//!   [`is_side_effecting_function`]; `set_config` looks at its first argument.
//! - Names are reported as `schema.name` or `name`: a database part (`db.schema.t`, which
//!   PostgreSQL only accepts for the current database) is dropped, so rules on `schema.t`
//!   still apply.
//! - Writing to `pg_settings` (its `UPDATE` rule calls `set_config` for any setting) adds
//!   `Privileged`.
//! - Reading or writing the planner's statistics (`pg_stats`, `pg_statistic`, …: see
//!   [`is_statistics_relation`]) adds `Privileged`: they hold sample values of every table.
//!   Not under a plain `EXPLAIN` (nothing is read), nor for a CTE of that name.
//! - A function a system view is built on (`pg_stat_get_activity`) reads that view.
//! - A `WithClause` scopes CTE names: a non-recursive CTE sees the earlier ones, a recursive
//!   `WITH` sees them all, the statement body sees all of them. So
//!   `WITH secrets AS (SELECT * FROM secrets) …` still reads the table `secrets`.
//! - Everything inside a query (`SelectStmt`, the non-target parts of DML) is in read mode.

use std::collections::BTreeSet;

use super::functions::{
    is_privileged_setting, is_settings_view, is_side_effecting_function, is_statistics_relation,
    view_of_function,
};
use super::outputs::Outputs;
use super::tree::Tree;
use super::Operation;

/// What the walk found, accumulated over one statement (and its inner statements).
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub ops: BTreeSet<Operation>,
    pub read: BTreeSet<String>,
    pub written: BTreeSet<String>,
    pub functions: BTreeSet<String>,
    pub prepared_name: Option<String>,
    pub outputs: Outputs,
}

/// How a `RangeVar` met outside of a query is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Its rows are read (queries, `COPY … TO`, `EXPLAIN`).
    Read,
    /// It is acted upon: rows written, definition, storage, privileges or locks changed.
    Target,
}

pub(crate) struct Walker<'f> {
    facts: &'f mut Facts,
    /// False under a plain `EXPLAIN`: nothing is executed, so nothing is escalated and
    /// target tables count as read.
    exec: bool,
    /// CTE names visible at the current point.
    ctes: Vec<String>,
}

impl<'f> Walker<'f> {
    pub(crate) fn new(facts: &'f mut Facts, exec: bool) -> Self {
        Walker {
            facts,
            exec,
            ctes: Vec::new(),
        }
    }

    pub(crate) fn walk(&mut self, tree: &Tree, mode: Mode) {
        match tree {
            Tree::Msg(name, fields) => self.msg(name, fields, tree, mode),
            Tree::List(items) => items.iter().for_each(|t| self.walk(t, mode)),
            Tree::Str(_) | Tree::Int(_) | Tree::Bool(_) | Tree::Null => {}
        }
    }

    fn msg(&mut self, name: &str, fields: &[(&'static str, Tree)], tree: &Tree, mode: Mode) {
        match name {
            // Under a plain EXPLAIN the table of `SELECT … INTO`/`CREATE TABLE … AS` is not made.
            "IntoClause" if !self.exec => {}
            // FOR UPDATE OF x: x names a FROM item (often an alias), not another table.
            "LockingClause" => self.fields_except(fields, &["locked_rels"], mode),
            // CREATE TABLE … (LIKE src): src's definition is only read.
            "TableLikeClause" => self.fields_except(fields, &[], Mode::Read),
            "RangeVar" => self.range_var(tree, mode, mode == Mode::Read),
            "FuncCall" => {
                self.func_call(tree);
                self.fields_except(fields, &["funcname"], Mode::Read);
            }
            // A function in FROM computes on the columns it is given; a subquery's alias
            // names a row of it.
            "RangeFunction" | "RangeSubselect" => {
                if self.exec {
                    if name == "RangeFunction" {
                        self.facts.outputs.refs(tree);
                    }
                    self.facts.outputs.alias(tree, None, "");
                }
                self.fields_except(fields, &[], mode);
            }
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.scoped(tree, |w| {
                if let Some(rel) = tree.field("relation") {
                    if w.exec {
                        w.facts.ops.insert(Operation::Write);
                    }
                    w.range_var(rel, Mode::Target, false);
                    let returns = tree
                        .field("returning_clause")
                        .and_then(|r| r.field("exprs"))
                        .is_some_and(|e| !e.items().is_empty());
                    if returns {
                        w.range_var(rel, Mode::Read, false);
                        if let (true, Some(r)) = (w.exec, tree.field("returning_clause")) {
                            if let Some(exprs) = r.field("exprs") {
                                w.facts.outputs.targets(exprs);
                            }
                        }
                    }
                }
                w.fields_except(fields, &["relation", "with_clause"], Mode::Read);
            }),
            "SelectStmt" => self.scoped(tree, |w| {
                if w.exec {
                    w.facts.outputs.select(tree);
                }
                if let Some(into) = tree.field("into_clause") {
                    if w.exec {
                        w.facts.ops.insert(Operation::Ddl);
                        w.facts.ops.insert(Operation::Write);
                    }
                    w.walk(into, Mode::Target);
                }
                w.fields_except(fields, &["into_clause", "with_clause"], Mode::Read);
            }),
            _ if tree.field("with_clause").is_some() => self.scoped(tree, |w| {
                w.fields_except(fields, &["with_clause"], mode);
            }),
            _ => self.fields_except(fields, &[], mode),
        }
    }

    fn fields_except(&mut self, fields: &[(&'static str, Tree)], skip: &[&str], mode: Mode) {
        for (k, v) in fields {
            if !skip.contains(k) {
                self.walk(v, mode);
            }
        }
    }

    /// Walks the CTEs of `tree`'s `with_clause` with their visibility rules, then runs `body`
    /// with all of them in scope.
    fn scoped(&mut self, tree: &Tree, body: impl FnOnce(&mut Self)) {
        let outer = self.ctes.len();
        if let Some(with) = tree.field("with_clause") {
            let recursive = matches!(with.field("recursive"), Some(Tree::Bool(true)));
            let ctes = with.field("ctes").map(Tree::items).unwrap_or(&[]);
            let names: Vec<String> = ctes
                .iter()
                .filter_map(|c| c.field("ctename").and_then(Tree::as_str))
                .map(str::to_owned)
                .collect();
            if recursive {
                self.ctes.extend(names.iter().cloned());
            }
            for cte in ctes {
                if let Tree::Msg(_, fields) = cte {
                    self.fields_except(fields, &["ctename"], Mode::Read);
                }
                if !recursive {
                    if let Some(n) = cte.field("ctename").and_then(Tree::as_str) {
                        self.ctes.push(n.to_owned());
                    }
                }
            }
        }
        body(self);
        self.ctes.truncate(outer);
    }

    /// Records a `RangeVar`. DML targets are never CTE references, so only a bare name met in
    /// a query (`from_query`) is looked up among the CTEs in scope.
    fn range_var(&mut self, rv: &Tree, mode: Mode, from_query: bool) {
        let Some(name) = relation_name(rv) else {
            return;
        };
        if mode == Mode::Target && self.exec {
            if is_settings_view(&name) || is_statistics_relation(&name) {
                self.facts.ops.insert(Operation::Privileged);
            }
            self.facts.written.insert(name);
            return;
        }
        let qualified = ["schemaname", "catalogname"].iter().any(|k| {
            rv.field(k)
                .and_then(Tree::as_str)
                .is_some_and(|s| !s.is_empty())
        });
        if from_query && !qualified && self.ctes.contains(&name) {
            // A CTE's row holds whatever it selected.
            self.facts.outputs.alias(rv, Some(&name), "");
            return;
        }
        self.facts.outputs.alias(rv, None, &name);
        if self.exec && is_statistics_relation(&name) {
            self.facts.ops.insert(Operation::Privileged);
        }
        self.facts.ops.insert(Operation::Read);
        self.facts.read.insert(name);
    }

    fn func_call(&mut self, call: &Tree) {
        let name = func_name(call);
        if name.is_empty() {
            return;
        }
        if self.exec {
            match is_side_effecting_function(&name) {
                Some(Operation::Session) => {
                    // set_config(setting, value, is_local): SET in disguise.
                    let first = call.field("args").and_then(|a| a.items().first());
                    let privileged = match first.and_then(string_constant) {
                        Some(setting) => is_privileged_setting(&setting),
                        None => true,
                    };
                    self.facts.ops.insert(if privileged {
                        Operation::Privileged
                    } else {
                        Operation::Session
                    });
                }
                Some(op) => {
                    self.facts.ops.insert(op);
                }
                None => {}
            }
        }
        if let Some(view) = view_of_function(&name) {
            self.facts.read.insert(view.to_owned());
            self.facts.ops.insert(Operation::Read);
        }
        self.facts.functions.insert(name);
    }
}

/// `schema.relation` or `relation` as written; the parser has already folded unquoted names.
/// A database part (`db.schema.relation`) is dropped: PostgreSQL rejects any database but the
/// current one, so it names the same table as `schema.relation`.
pub(crate) fn relation_name(rv: &Tree) -> Option<String> {
    let part = |k: &str| rv.field(k).and_then(Tree::as_str).unwrap_or("");
    let rel = part("relname");
    if rel.is_empty() {
        return None;
    }
    let parts: Vec<&str> = [part("schemaname"), rel]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    Some(parts.join("."))
}

/// The name of a `FuncCall`: `schema.function` or `function` (a database part is dropped,
/// see [`qualified`]). Calls written in SQL syntax (`EXTRACT(… FROM …)`,
/// `SUBSTRING(… FROM …)`) are shown without the `pg_catalog.` the parser adds.
fn func_name(call: &Tree) -> String {
    // A quoted part holding a dot (`"pg_catalog.now"()`, a function of that name in the
    // search path) would read as schema-qualified once joined: it is kept quoted, so it
    // matches no rule and no catalog entry (unknown: fail closed).
    let parts = call.field("funcname").map(Tree::items).unwrap_or(&[]);
    let dotted = parts
        .iter()
        .filter_map(|n| n.field("sval").and_then(Tree::as_str))
        .any(|p| p.contains('.'));
    if dotted {
        let quoted: Vec<String> = parts
            .iter()
            .filter_map(|n| n.field("sval").and_then(Tree::as_str))
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect();
        return quoted[quoted.len().saturating_sub(2)..].join(".");
    }
    let name = qualified(call.field("funcname"));
    let sql_syntax =
        matches!(call.field("funcformat"), Some(Tree::Int(n)) if *n == COERCE_SQL_SYNTAX);
    match name.strip_prefix("pg_catalog.") {
        Some(rest) if sql_syntax => rest.to_owned(),
        _ => name,
    }
}

const COERCE_SQL_SYNTAX: i64 = pg_query::protobuf::CoercionForm::CoerceSqlSyntax as i64;

/// Joins the last two of a list of `String` nodes with dots (`["pg_catalog", "now"]` →
/// `pg_catalog.now`), dropping a database part: `db.schema.object` → `schema.object`.
/// PostgreSQL accepts a database part only when it names the current database (and more than
/// three parts never), so the object is the same as `schema.object`'s.
pub(crate) fn qualified(list: Option<&Tree>) -> String {
    let parts: Vec<&str> = list
        .map(Tree::items)
        .unwrap_or(&[])
        .iter()
        .filter_map(|n| n.field("sval").and_then(Tree::as_str))
        .collect();
    parts[parts.len().saturating_sub(2)..].join(".")
}

/// The value of a string constant (`'role'`, possibly behind a cast), if `expr` is one.
fn string_constant(expr: &Tree) -> Option<String> {
    match expr {
        Tree::Msg("AConst", _) => expr
            .field("val")
            .and_then(|v| v.field("sval"))
            .and_then(Tree::as_str)
            .map(str::to_owned),
        Tree::Msg("TypeCast", _) => expr.field("arg").and_then(string_constant),
        _ => None,
    }
}
