//! The state both pumps of a session share, and what a request carries to its response.

use super::*;

/// Statement facts carried from request to response, for audit.
#[derive(Debug, Clone)]
pub(super) struct StmtCtx {
    pub(super) text: String,
    pub(super) summary: Arc<str>,
    pub(super) decision: Arc<SqlDecision>,
}

impl StmtCtx {
    pub(super) fn new(text: String, summary: &str, decision: &SqlDecision) -> StmtCtx {
        StmtCtx {
            text,
            summary: summary.into(),
            decision: Arc::new(decision.clone()),
        }
    }
}

#[derive(Debug)]
pub(super) struct Unit {
    pub(super) simple: bool,
    pub(super) denied: bool,
    pub(super) stmts: VecDeque<StmtCtx>,
    pub(super) row_limit: Option<u64>,
    pub(super) portal: String,
    /// It runs a `COPY … FROM STDIN` (or another COPY that writes): the server may switch
    /// to copy-in mode.
    pub(super) copy_from: bool,
    /// Descriptions that stop being true once this simple query ran (its statements
    /// declare or close cursors, prepare or deallocate statements).
    pub(super) invalidates: Invalidate,
    pub(super) fields: Option<Vec<Field>>,
    pub(super) mask: Option<Arc<ResultMask>>,
    pub(super) rows: u64,
    pub(super) withheld: u64,
    pub(super) masked: u64,
    pub(super) started: Instant,
}

impl Unit {
    pub(super) fn new(simple: bool, stmts: Vec<StmtCtx>, row_limit: Option<u64>) -> Unit {
        Unit {
            simple,
            denied: false,
            stmts: stmts.into(),
            row_limit,
            portal: String::new(),
            copy_from: false,
            invalidates: Invalidate::default(),
            fields: None,
            mask: None,
            rows: 0,
            withheld: 0,
            masked: 0,
            started: Instant::now(),
        }
    }
}

/// Row descriptions a simple query makes stale: the result of an Execute must never be
/// masked by the description of another statement or portal of the same name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Invalidate {
    /// Statements prepared or deallocated by name (SQL `PREPARE`/`DEALLOCATE` share the
    /// protocol's namespace).
    pub(super) statements: Vec<String>,
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    pub(super) all_statements: bool,
    /// `DECLARE`/`CLOSE` of cursors (their names are not reported: all portals).
    pub(super) portals: bool,
}

impl Invalidate {
    pub(super) fn of(stmts: &[Statement]) -> Invalidate {
        let mut inv = Invalidate::default();
        for s in stmts {
            match (s.kind.as_str(), &s.prepared_name) {
                ("PrepareStmt" | "DeallocateStmt", Some(n)) => inv.statements.push(n.clone()),
                ("DeallocateStmt", None) => inv.all_statements = true,
                ("DeclareCursorStmt" | "ClosePortalStmt", _) => inv.portals = true,
                ("DiscardStmt", _) => (inv.all_statements, inv.portals) = (true, true),
                _ => {}
            }
        }
        inv
    }

    pub(super) fn apply(&self, st: &mut State) {
        if self.all_statements {
            st.forget_all_statements();
        }
        for n in &self.statements {
            st.forget_statement(n);
        }
        if self.portals {
            st.portal_fields.clear();
            st.bound.clear();
        }
    }
}

#[derive(Debug)]
pub(super) enum Pending {
    /// A Parse of this statement name: its old description is void once the server
    /// answers (or skips) it. `new`: the proxy recorded it as a new statement, so if the
    /// server refuses or skips it, that record must go (`State::parse_failed`).
    Parse {
        name: String,
        new: bool,
    },
    /// A Bind of `portal` from `statement`, with the result formats asked for.
    Bind {
        portal: String,
        statement: String,
        formats: Vec<i16>,
    },
    /// A Close of a statement (`b'S'`) or portal, by name.
    Close {
        kind: u8,
        name: String,
    },
    DescribeStatement(String),
    DescribePortal(String),
    Sync,
    Exec(Box<Unit>),
}

/// State both pumps touch (short critical sections, never across an await).
#[derive(Default)]
pub(super) struct State {
    pub(super) pending: VecDeque<Pending>,
    pub(super) denials: HashMap<String, Frame>,
    /// Requests that end with ReadyForQuery (Query, Sync, FunctionCall) not yet answered.
    pub(super) outstanding: i64,
    pub(super) tx: u8,
    pub(super) scs: bool,
    pub(super) stmt_fields: HashMap<String, Vec<Field>>,
    pub(super) portal_fields: HashMap<String, Vec<Field>>,
    /// What each portal's rows look like, fixed when the server confirmed its Bind: a
    /// statement re-parsed under the same name later must not describe them.
    pub(super) bound: HashMap<String, BoundRows>,
    /// Ticks at every change of a statement's meaning; `touched[name]` / `touched_all`:
    /// the tick of the last change of that statement / of all.
    pub(super) clock: u64,
    pub(super) touched: HashMap<String, u64>,
    pub(super) touched_all: u64,
    /// New statements the server refused or skipped: the client side drops its records.
    pub(super) parse_failed: Vec<String>,
    /// The server answered a `COPY … FROM STDIN` with CopyInResponse: it reads copy data
    /// (and ignores Sync and Flush) until the client's CopyDone or CopyFail.
    pub(super) copy_in: bool,
    /// Requests sent that end with ReadyForQuery, those answered (or skipped), and how many
    /// were answered when the server last said it is idle (no transaction): a portal bound
    /// before request n + 1 is gone once `idle_answered` > n.
    pub(super) requests: u64,
    pub(super) answered: u64,
    pub(super) idle_answered: u64,
}

/// The description a portal's rows were bound with.
#[derive(Debug)]
pub(super) enum BoundRows {
    /// Its statement's description and the result formats.
    Described(Vec<Field>, Vec<i16>),
    /// Its statement was not described yet: a description that arrives later is its own
    /// only while the statement has not changed since the Bind (tick `at`).
    Later {
        statement: String,
        at: u64,
        formats: Vec<i16>,
    },
}

impl State {
    /// A request that ends with ReadyForQuery was sent.
    pub(super) fn owe(&mut self) {
        self.outstanding += 1;
        self.requests += 1;
    }

    /// The statement of this name means something else from now on (parsed, closed,
    /// prepared or deallocated, or skipped after an error).
    pub(super) fn forget_statement(&mut self, name: &str) {
        self.stmt_fields.remove(name);
        self.clock += 1;
        self.touched.insert(name.to_owned(), self.clock);
    }

    pub(super) fn forget_all_statements(&mut self) {
        self.stmt_fields.clear();
        self.touched.clear();
        self.clock += 1;
        self.touched_all = self.clock;
    }

    /// The server confirmed a Bind: fix what the portal's rows look like.
    pub(super) fn bind_complete(&mut self, portal: String, statement: String, formats: Vec<i16>) {
        self.portal_fields.remove(&portal);
        let b = match self.stmt_fields.get(&statement) {
            Some(f) => BoundRows::Described(f.clone(), formats),
            None => BoundRows::Later {
                statement,
                at: self.clock,
                formats,
            },
        };
        self.bound.insert(portal, b);
    }

    /// The description and result formats of the rows of `portal`; empty when nothing
    /// describes them for sure (then every value is withheld).
    pub(super) fn portal_rows(&self, portal: &str) -> (Vec<Field>, Vec<i16>) {
        if let Some(f) = self.portal_fields.get(portal) {
            return (f.clone(), Vec::new());
        }
        match self.bound.get(portal) {
            Some(BoundRows::Described(f, formats)) => (f.clone(), formats.clone()),
            Some(BoundRows::Later {
                statement,
                at,
                formats,
            }) => {
                let changed =
                    self.touched_all > *at || self.touched.get(statement).is_some_and(|t| t > at);
                match self.stmt_fields.get(statement) {
                    Some(f) if !changed => (f.clone(), formats.clone()),
                    _ => (Vec::new(), Vec::new()),
                }
            }
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Portals end with their transaction (the server said it is idle).
    pub(super) fn transaction_ended(&mut self) {
        self.bound.clear();
        self.portal_fields.clear();
    }
}
