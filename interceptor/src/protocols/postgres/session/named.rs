//! What the client side knows of the session's named things: statements it parsed,
//! portals it bound (and what an Execute of one runs), SQL prepared statements, and the
//! database's functions its statements call.

use super::decide::{self, Decisions};
use super::*;

/// The decision for `sql`, after looking up the database's functions it calls and the
/// relations it computes on when the caches do not know them (on a pooled connection; a
/// failed lookup makes functions unknown, i.e. `write`, and refuses computing on the
/// relations). Relations are looked up first, then functions: a few rounds at most.
pub(super) async fn decide_text(
    c: &Common<'_>,
    decisions: &mut Decisions,
    sql: &str,
    enforcer: &Enforcer<'_>,
    prepared: &HashMap<String, Statement>,
) -> Arc<decide::Decided> {
    let scs = c.st().scs;
    let mut rounds = 0;
    loop {
        let look_up = rounds < 3;
        rounds += 1;
        match decisions.decide(sql, scs, enforcer, prepared, look_up) {
            Ok(d) => return d,
            Err(missing) => {
                if !missing.functions.is_empty() {
                    look_up_routines(c, &missing.functions).await;
                }
                if !missing.relations.is_empty() {
                    look_up_relations(c, &missing.relations).await;
                }
            }
        }
    }
}

pub(super) async fn look_up_routines(c: &Common<'_>, names: &[String]) {
    let routines = &c.routines;
    let _turn = routines.fill_turn().await;
    // Another session may have looked them up meanwhile.
    let names = routines.stale(names.iter().map(String::as_str));
    if names.is_empty() {
        return;
    }
    let r = match c.side_connection().await {
        Ok(mut conn) => {
            let r = routines.fill(&names, &mut conn).await;
            c.give_back(conn).await;
            r
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(session = %c.ctx.session, error = %e, "looking up the database's functions failed; calls of them count as write");
        routines.failed(&names, &e.to_string());
    }
}

/// Looks relation names up (are they views of ruled columns? `relations.rs`); a failed
/// lookup is remembered, and statements computing on those relations are refused.
async fn look_up_relations(c: &Common<'_>, names: &[String]) {
    let catalog = &c.catalog;
    let _turn = catalog.fill_turn().await;
    let names = catalog.names_missing(names);
    if names.is_empty() {
        return;
    }
    let r = match c.side_connection().await {
        Ok(mut conn) => {
            let r = catalog.fill_names(&names, &mut conn).await;
            c.give_back(conn).await;
            r
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(session = %c.ctx.session, error = %e, "looking up the database's relations failed; statements computing on them are refused");
        catalog.names_failed(&names, &e.to_string());
    }
}

/// A statement that may have created, replaced or dropped functions: the cache of the
/// database's functions starts over.
pub(super) fn forget_routines_after_ddl(c: &Common<'_>, stmts: &[Statement]) {
    if stmts
        .iter()
        .any(|s| s.operations.contains(&crate::sql::Operation::Ddl))
    {
        c.routines.forget();
        c.catalog.forget_names();
    }
}

/// What an Execute runs, as far as the proxy knows before deciding.
pub(super) enum Run {
    /// Decided at Parse: its statements, row limit, and whether it is a COPY that writes.
    Known(Vec<StmtCtx>, Option<u64>, bool),
    /// To decide now, as this text.
    Decide(String),
    /// Refused: why.
    Refuse(String),
}

/// What a portal was bound from: the statement's name, what the session parsed under it
/// (`None`: not parsed through the proxy, e.g. SQL `PREPARE`), and `State::requests` then.
pub(super) struct Bound {
    pub(super) statement: String,
    pub(super) from: Option<Arc<Parsed>>,
    /// The bound values as shown to approvers (statements a rule holds only).
    pub(super) params: Option<String>,
    pub(super) epoch: u64,
}

/// A statement the session parsed: its text, its audit facts and row limit as decided,
/// and the policy that decided them.
pub(super) struct Parsed {
    pub(super) text: String,
    pub(super) stmts: Vec<StmtCtx>,
    pub(super) limit: Option<u64>,
    pub(super) policy: Arc<Policy>,
    pub(super) copy_from: bool,
    /// It calls functions defined in the database, which can change meanwhile.
    pub(super) user_routines: bool,
    /// A rule holds it: every Execute asks for approval.
    pub(super) held: bool,
}

/// A statement or portal name as the server keys it: at most 63 bytes (NAMEDATALEN - 1);
/// longer names are the same name to it.
pub(super) fn pg_name(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_owned();
    }
    if name.is_char_boundary(MAX) {
        return name[..MAX].to_owned();
    }
    // Cut inside a character: the server keys the raw bytes. They are kept as hex behind a
    // NUL, which no real name holds, so two such names never collide.
    let hex: String = name.as_bytes()[..MAX]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\0{hex}")
}

/// An Execute is refused: audited, and replaced by a failing unnamed Parse (the server
/// then skips the rest of the pipeline, and drops the unnamed statement as a Parse does).
pub(super) fn refuse_execute(
    c: &Common<'_>,
    denied: &StmtCtx,
    statements: &mut HashMap<String, Arc<Parsed>>,
) {
    c.audit_stmt("extended", denied, None, None);
    statements.remove("");
    c.st().pending.push_back(Pending::Parse {
        name: String::new(),
        new: true,
    });
}

/// Whether these statements include a COPY that writes (`COPY … FROM STDIN`): the server
/// may answer it by reading copy data.
pub(super) fn copies_in(stmts: &[Statement]) -> bool {
    stmts
        .iter()
        .any(|s| s.kind == "CopyStmt" && s.operations.contains(&crate::sql::Operation::Write))
}

pub(super) fn remember_prepared(stmts: &[Statement], prepared: &mut HashMap<String, Statement>) {
    for s in stmts {
        match (s.kind.as_str(), &s.prepared_name) {
            ("PrepareStmt", Some(n)) => {
                prepared.insert(n.clone(), s.clone());
            }
            ("DeallocateStmt", Some(n)) => {
                prepared.remove(n);
            }
            ("DeallocateStmt", None) => prepared.clear(),
            _ => {}
        }
    }
}
