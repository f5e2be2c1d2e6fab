//! PREPARE / EXECUTE / DEALLOCATE and cursors.

use super::*;

#[test]
fn prepare_is_classified_by_its_statement() {
    let s = one("PREPARE del(int) AS DELETE FROM t WHERE id = $1");
    assert_eq!(s.kind, "PrepareStmt");
    assert_eq!(s.operations, ops(&[Session, Write]));
    assert_eq!(s.tables_written, set(&["t"]));
    assert_eq!(s.prepared_name.as_deref(), Some("del"));
    let s = one("PREPARE q AS SELECT pg_read_file('/etc/passwd')");
    assert_eq!(s.operations, ops(&[Session, Read, Privileged]));
    check(
        "PREPARE r AS SELECT * FROM users",
        &[Session, Read],
        &["users"],
        &[],
    );
}

#[test]
fn execute_names_the_prepared_statement() {
    let s = one("EXECUTE del(42)");
    assert_eq!(s.kind, "ExecuteStmt");
    assert_eq!(s.operations, ops(&[Session]));
    assert_eq!(s.prepared_name.as_deref(), Some("del"));
    // Parameters are expressions and are walked.
    let s = one("EXECUTE q(pg_terminate_backend(7))");
    assert_eq!(s.operations, ops(&[Session, Privileged]));
    let s = one("EXPLAIN ANALYZE EXECUTE del(1)");
    assert_eq!(s.prepared_name.as_deref(), Some("del"));
    assert_eq!(s.operations, ops(&[Read, Session]));
    let s = one("DEALLOCATE del");
    assert_eq!(
        (s.operations, s.prepared_name.as_deref()),
        (ops(&[Session]), Some("del"))
    );
    assert_eq!(one("DEALLOCATE ALL").prepared_name, None);
    assert_eq!(one("SELECT 1").prepared_name, None);
}

#[test]
fn cursors() {
    check(
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM big",
        &[Session, Read],
        &["big"],
        &[],
    );
    check("FETCH 100 FROM c", &[Read], &[], &[]);
    check("MOVE ABSOLUTE 0 IN c", &[Read], &[], &[]);
    check("CLOSE c", &[Session], &[], &[]);
}
