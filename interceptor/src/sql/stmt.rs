//! Statement-level mapping: which operations a top-level statement kind performs, and how its
//! own tables are used. The mapping table is in the documentation of [`crate::sql`].

use pg_query::protobuf::{self, ObjectType};
use pg_query::NodeEnum as N;

use super::functions::is_privileged_setting;
use super::tree::{to_tree, variant_name, Tree};
use super::walk::{qualified, Facts, Mode, Walker};
use super::{Operation as Op, SqlError};

/// Classifies one statement into `facts`. `exec` is false under a plain `EXPLAIN`.
pub(crate) fn classify_stmt(node: &N, facts: &mut Facts, exec: bool) -> Result<(), SqlError> {
    use Mode::{Read, Target};
    use Op::{Ddl, Privileged, Session, Transaction, Utility, Write};
    let simple = |facts: &mut Facts, ops: &[Op], mode: Mode| {
        facts.ops.extend(ops.iter().copied());
        walk(node, facts, exec, mode);
        Ok(())
    };
    match node {
        // Queries and reads. The walker adds Write for DML found anywhere (CTEs included).
        N::SelectStmt(_) | N::VariableShowStmt(_) | N::FetchStmt(_) => {
            simple(facts, &[Op::Read], Read)
        }
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) | N::MergeStmt(_) => {
            simple(facts, &[], Read)
        }
        N::TruncateStmt(_) | N::NotifyStmt(_) | N::RefreshMatViewStmt(_) => {
            simple(facts, &[Write], Target)
        }
        N::CallStmt(_) => simple(facts, &[Write], Read),
        N::CopyStmt(c) => copy(c, facts, exec),
        N::ExplainStmt(e) => {
            facts.ops.insert(Op::Read);
            let inner = inner(e.query.as_deref(), "ExplainStmt")?;
            if explain_analyze(&e.options) {
                classify_stmt(inner, facts, exec)
            } else {
                walk(inner, facts, false, Read);
                Ok(())
            }
        }

        // Transactions and sessions.
        N::TransactionStmt(_) | N::ConstraintsSetStmt(_) => simple(facts, &[Transaction], Read),
        N::VariableSetStmt(v) => {
            let op = if is_privileged_setting(&v.name) {
                Privileged
            } else if v.name == "TRANSACTION" {
                Transaction
            } else {
                Session
            };
            simple(facts, &[op], Read)
        }
        N::DiscardStmt(d) => {
            // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT and RESET ROLE.
            let all = d.target == protobuf::DiscardMode::DiscardAll as i32;
            simple(facts, &[if all { Privileged } else { Session }], Read)
        }
        N::ListenStmt(_) | N::UnlistenStmt(_) | N::ClosePortalStmt(_) => {
            simple(facts, &[Session], Read)
        }
        N::PrepareStmt(p) => {
            facts.ops.insert(Session);
            facts.prepared_name = Some(p.name.clone());
            classify_stmt(inner(p.query.as_deref(), "PrepareStmt")?, facts, exec)
        }
        N::ExecuteStmt(e) => {
            facts.prepared_name = Some(e.name.clone());
            simple(facts, &[Session], Read)
        }
        N::DeallocateStmt(d) => {
            if !d.isall && !d.name.is_empty() {
                facts.prepared_name = Some(d.name.clone());
            }
            simple(facts, &[Session], Read)
        }
        N::DeclareCursorStmt(d) => {
            facts.ops.insert(Session);
            classify_stmt(inner(d.query.as_deref(), "DeclareCursorStmt")?, facts, exec)
        }

        // Maintenance.
        N::VacuumStmt(_) | N::ClusterStmt(_) | N::LockStmt(_) => simple(facts, &[Utility], Target),

        // Privileged: can act as someone else, reach the server's files or run arbitrary code.
        N::DoStmt(_)
        | N::LoadStmt(_)
        | N::CheckPointStmt(_)
        | N::AlterSystemStmt(_)
        | N::GrantStmt(_)
        | N::GrantRoleStmt(_)
        | N::AlterDefaultPrivilegesStmt(_)
        | N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::DropRoleStmt(_)
        | N::ReassignOwnedStmt(_) => simple(facts, &[Privileged], Target),
        N::DropOwnedStmt(_)
        | N::AlterOwnerStmt(_)
        | N::SecLabelStmt(_)
        | N::CreateExtensionStmt(_)
        | N::AlterExtensionStmt(_)
        | N::AlterExtensionContentsStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreateFdwStmt(_)
        | N::AlterFdwStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::AlterUserMappingStmt(_)
        | N::DropUserMappingStmt(_)
        | N::CreateTableSpaceStmt(_)
        | N::DropTableSpaceStmt(_)
        | N::AlterTableSpaceOptionsStmt(_)
        | N::AlterDatabaseSetStmt(_)
        | N::CreatePublicationStmt(_)
        | N::AlterPublicationStmt(_)
        | N::CreateSubscriptionStmt(_)
        | N::AlterSubscriptionStmt(_)
        | N::DropSubscriptionStmt(_) => simple(facts, &[Ddl, Privileged], Target),
        N::CreateEventTrigStmt(t) => {
            facts.functions.insert(names(&t.funcname));
            simple(facts, &[Ddl, Privileged], Target)
        }
        N::AlterEventTrigStmt(_) => simple(facts, &[Ddl, Privileged], Target),
        // A trigger runs its function on other statements: what the function does is
        // invisible to the statements' table rules.
        N::CreateTrigStmt(t) => {
            facts.functions.insert(names(&t.funcname));
            simple(facts, &[Ddl, Privileged], Target)
        }
        // A body given as a string (any language) runs later, unparsed here: its tables and
        // calls escape every rule. A SQL-standard body (`BEGIN ATOMIC …`, `RETURN …`) is
        // parsed: walked as if it ran.
        N::CreateFunctionStmt(f) => {
            if f.options
                .iter()
                .any(|o| defines_code(o) || runs_as_other(o))
            {
                facts.ops.insert(Privileged);
            }
            simple(facts, &[Ddl], Target)
        }
        N::AlterFunctionStmt(f) => {
            if f.actions.iter().any(runs_as_other) {
                facts.ops.insert(Privileged);
            }
            simple(facts, &[Ddl], Target)
        }
        // Operators, aggregates, casts and base types call a named function implicitly
        // (`SELECT !! '/etc/passwd'`): neither listed nor escalated there.
        N::DefineStmt(d) if calls_functions_implicitly(d) => {
            simple(facts, &[Ddl, Privileged], Target)
        }
        N::CreateCastStmt(c) if c.func.is_some() => simple(facts, &[Ddl, Privileged], Target),
        // Renaming or moving a schema, relation or function changes what every rule naming
        // it (or naming its new name) means.
        N::RenameStmt(r) => {
            if renames_ruled_object(r.rename_type) {
                facts.ops.insert(Privileged);
                if let Some(rel) = &r.relation {
                    facts.written.insert(join(&rel.schemaname, &r.newname));
                }
            }
            simple(facts, &[Ddl], Target)
        }
        N::AlterObjectSchemaStmt(a) => {
            let extension = a.object_type == ObjectType::ObjectExtension as i32;
            if extension || renames_ruled_object(a.object_type) {
                facts.ops.insert(Privileged);
                if let Some(rel) = &a.relation {
                    facts.written.insert(join(&a.newschema, &rel.relname));
                }
            }
            simple(facts, &[Ddl], Target)
        }

        // DDL.
        N::CreateTableAsStmt(_) => simple(facts, &[Ddl, Write], Target),
        N::CreateSchemaStmt(s) => {
            facts.ops.insert(Ddl);
            for elt in &s.schema_elts {
                classify_stmt(inner(Some(elt), "CreateSchemaStmt")?, facts, exec)?;
            }
            Ok(())
        }
        N::DropStmt(d) => {
            for o in &d.objects {
                relation_object(d.remove_type, o, false, facts);
            }
            simple(facts, &[Ddl], Target)
        }
        N::CommentStmt(c) => {
            if let Some(o) = c.object.as_deref() {
                relation_object(c.objtype, o, true, facts);
            }
            simple(facts, &[Ddl], Target)
        }
        N::AlterTableStmt(a) => {
            if a.cmds.iter().any(weakens_security) {
                facts.ops.insert(Privileged);
            }
            simple(facts, &[Ddl], Target)
        }
        N::CreateStmt(_)
        | N::CreateForeignTableStmt(_)
        | N::AlterTableMoveAllStmt(_)
        | N::IndexStmt(_)
        | N::ReindexStmt(_)
        | N::ViewStmt(_)
        | N::RuleStmt(_)
        | N::CreateSeqStmt(_)
        | N::AlterSeqStmt(_)
        | N::AlterObjectDependsStmt(_)
        | N::DefineStmt(_)
        | N::CreateCastStmt(_)
        | N::CompositeTypeStmt(_)
        | N::CreateEnumStmt(_)
        | N::CreateRangeStmt(_)
        | N::AlterEnumStmt(_)
        | N::AlterTypeStmt(_)
        | N::CreateDomainStmt(_)
        | N::AlterDomainStmt(_)
        | N::AlterCollationStmt(_)
        | N::AlterOperatorStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreateAmStmt(_)
        | N::CreatePolicyStmt(_)
        | N::AlterPolicyStmt(_)
        | N::CreateStatsStmt(_)
        | N::AlterStatsStmt(_)
        | N::AlterTsdictionaryStmt(_)
        | N::AlterTsconfigurationStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CreatedbStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::AlterDatabaseRefreshCollStmt(_)
        | N::DropdbStmt(_) => simple(facts, &[Ddl], Target),

        other => Err(SqlError::Unknown {
            kind: variant_name(other).to_owned(),
            detail: "statement type not mapped".to_owned(),
        }),
    }
}

fn walk(node: &N, facts: &mut Facts, exec: bool, mode: Mode) {
    Walker::new(facts, exec).walk(&to_tree(node), mode);
}

/// The statement inside a PREPARE, EXPLAIN, DECLARE or CREATE SCHEMA.
fn inner<'a>(node: Option<&'a pg_query::Node>, outer: &str) -> Result<&'a N, SqlError> {
    node.and_then(|n| n.node.as_ref())
        .ok_or_else(|| SqlError::Unknown {
            kind: outer.to_owned(),
            detail: "no inner statement".to_owned(),
        })
}

fn copy(c: &protobuf::CopyStmt, facts: &mut Facts, exec: bool) -> Result<(), SqlError> {
    if c.is_program || !c.filename.is_empty() {
        // Runs a shell command or touches the server's file system.
        facts.ops.insert(Op::Privileged);
    }
    if let Some(query) = c.query.as_deref() {
        // COPY (query) TO …: the query decides (COPY (DELETE … RETURNING *) TO STDOUT writes).
        facts.ops.insert(Op::Read);
        classify_stmt(inner(Some(query), "CopyStmt")?, facts, exec)?;
    }
    let mode = if c.is_from {
        facts.ops.insert(Op::Write);
        Mode::Target
    } else {
        facts.ops.insert(Op::Read);
        Mode::Read
    };
    let mut walker = Walker::new(facts, exec);
    if let Some(rel) = &c.relation {
        walker.walk(&to_tree(rel), mode);
    }
    if let Some(w) = c.where_clause.as_deref() {
        walker.walk(&to_tree(w), Mode::Read);
    }
    walker.walk(&to_tree(&c.options), Mode::Read);
    Ok(())
}

/// Whether EXPLAIN's options ask to execute the statement. Anything but an explicit false
/// counts as true (PostgreSQL rejects other values anyway). A number always counts as true,
/// `ANALYZE 0` included: what a statement does must never depend on a number's value (the
/// proxy classifies shapes with every number replaced by `0`).
fn explain_analyze(options: &[pg_query::Node]) -> bool {
    let mut analyze = false;
    for opt in options {
        let Some(N::DefElem(d)) = opt.node.as_ref() else {
            continue;
        };
        if !d.defname.eq_ignore_ascii_case("analyze") {
            continue;
        }
        analyze = match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
            None => true,
            Some(N::Boolean(b)) => b.boolval,
            Some(N::Integer(_)) => true,
            Some(N::String(s)) => !matches!(
                s.sval.to_ascii_lowercase().as_str(),
                "false" | "off" | "no" | "n" | "f" | "0" | "of"
            ),
            Some(_) => true,
        };
    }
    analyze
}

/// `DROP TABLE a, s.b` and `COMMENT ON TABLE|COLUMN …` name relations as lists of strings,
/// not `RangeVar`s: record the relation as written (without a database part, like
/// `RangeVar`s).
fn relation_object(objtype: i32, object: &pg_query::Node, columns: bool, facts: &mut Facts) {
    let relation_like = [
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
        ObjectType::ObjectIndex,
        ObjectType::ObjectSequence,
        ObjectType::ObjectForeignTable,
    ];
    let is_relation = relation_like.iter().any(|t| *t as i32 == objtype);
    let is_column = columns && objtype == ObjectType::ObjectColumn as i32;
    if !is_relation && !is_column {
        return;
    }
    let Tree::List(mut parts) = to_tree(object)
        .field("items")
        .cloned()
        .unwrap_or(Tree::Null)
    else {
        return;
    };
    if is_column {
        parts.pop();
    }
    let name = qualified(Some(&Tree::List(parts)));
    if !name.is_empty() {
        facts.written.insert(name);
    }
}

/// `ALTER TABLE … OWNER TO`, `… DISABLE ROW LEVEL SECURITY`, `… NO FORCE ROW LEVEL SECURITY`:
/// privilege changes spelled as table alterations. `… ENABLE/DISABLE [REPLICA|ALWAYS]
/// TRIGGER|RULE`: switches code run on other statements on or off (like
/// `session_replication_role`). `… ATTACH PARTITION p`, `… INHERIT parent`: the rows of one
/// table become rows of another, read and written under its name and rules.
fn weakens_security(cmd: &pg_query::Node) -> bool {
    use protobuf::AlterTableType as T;
    let Some(N::AlterTableCmd(c)) = cmd.node.as_ref() else {
        return false;
    };
    [
        T::AtChangeOwner,
        T::AtDisableRowSecurity,
        T::AtNoForceRowSecurity,
        T::AtEnableTrig,
        T::AtEnableAlwaysTrig,
        T::AtEnableReplicaTrig,
        T::AtDisableTrig,
        T::AtEnableTrigAll,
        T::AtDisableTrigAll,
        T::AtEnableTrigUser,
        T::AtDisableTrigUser,
        T::AtEnableRule,
        T::AtEnableAlwaysRule,
        T::AtEnableReplicaRule,
        T::AtDisableRule,
        T::AtAttachPartition,
        T::AtAddInherit,
    ]
    .iter()
    .any(|t| *t as i32 == c.subtype)
}

/// The option `AS '…'` of `CREATE FUNCTION`/`PROCEDURE`: a body (or object file) given as a
/// string, which is never parsed here.
fn defines_code(option: &pg_query::Node) -> bool {
    matches!(option.node.as_ref(), Some(N::DefElem(d)) if d.defname == "as")
}

/// `SECURITY DEFINER` (the function runs as its owner) or `SET` of a privileged setting
/// (`SET search_path = …`: what its unqualified names mean) on a function.
fn runs_as_other(option: &pg_query::Node) -> bool {
    let Some(N::DefElem(d)) = option.node.as_ref() else {
        return false;
    };
    match (
        d.defname.as_str(),
        d.arg.as_deref().and_then(|a| a.node.as_ref()),
    ) {
        ("security", Some(N::Boolean(b))) => b.boolval,
        ("security", _) => true,
        ("set", Some(N::VariableSetStmt(v))) => is_privileged_setting(&v.name),
        _ => false,
    }
}

/// `CREATE OPERATOR`, `CREATE AGGREGATE` and `CREATE TYPE … (INPUT = …)`: their functions
/// run when the operator, aggregate or type is used, without a call in the query.
fn calls_functions_implicitly(d: &protobuf::DefineStmt) -> bool {
    let kinds = [ObjectType::ObjectOperator, ObjectType::ObjectAggregate];
    let base_type = d.kind == ObjectType::ObjectType as i32 && !d.definition.is_empty();
    base_type || kinds.iter().any(|k| *k as i32 == d.kind)
}

/// Objects whose name table, function or other SQL rules match: renaming one (or moving it
/// to another schema) is privileged.
fn renames_ruled_object(object_type: i32) -> bool {
    [
        ObjectType::ObjectSchema,
        ObjectType::ObjectTable,
        ObjectType::ObjectView,
        ObjectType::ObjectMatview,
        ObjectType::ObjectForeignTable,
        ObjectType::ObjectSequence,
        ObjectType::ObjectFunction,
        ObjectType::ObjectProcedure,
        ObjectType::ObjectRoutine,
        ObjectType::ObjectAggregate,
    ]
    .iter()
    .any(|t| *t as i32 == object_type)
}

/// `schema.name`, or `name` when `schema` is empty.
fn join(schema: &str, name: &str) -> String {
    if schema.is_empty() {
        name.to_owned()
    } else {
        format!("{schema}.{name}")
    }
}

fn names(list: &[pg_query::Node]) -> String {
    qualified(Some(&to_tree(list)))
}
