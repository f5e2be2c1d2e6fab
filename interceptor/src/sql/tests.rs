//! Unit tests of the classifier: every evasion class, table and function extraction, errors,
//! the cache. The table of realistic agent queries is in `tests_corpus.rs`.

use std::collections::BTreeSet;

use super::Operation::{self, Ddl, Privileged, Read, Session, Transaction, Utility, Write};
use super::*;

pub(super) fn c(sql: &str) -> Classification {
    classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub(super) fn ops(list: &[Operation]) -> BTreeSet<Operation> {
    list.iter().copied().collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn one(sql: &str) -> Statement {
    let mut cl = c(sql);
    assert_eq!(cl.statements.len(), 1, "{sql}: {}", cl.summary());
    cl.statements.remove(0)
}

#[track_caller]
fn check(sql: &str, want_ops: &[Operation], read: &[&str], written: &[&str]) {
    let s = one(sql);
    assert_eq!(
        s.operations,
        ops(want_ops),
        "ops of {sql}: {}",
        c(sql).summary()
    );
    assert_eq!(s.tables_read, set(read), "read of {sql}");
    assert_eq!(s.tables_written, set(written), "written of {sql}");
}

mod boundaries;
mod classifier_cache;
mod copy_explain;
mod ddl_escapes;
mod errors;
mod other_kinds;
mod prepared;
mod privileged;
mod qualified_names;
mod reads_writes;
mod side_effects;
mod statistics;
