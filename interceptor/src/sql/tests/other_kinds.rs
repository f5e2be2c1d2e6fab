//! Transactions, DDL and utility statements.

use super::*;

#[test]
fn transactions() {
    for sql in [
        "BEGIN",
        "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
        "START TRANSACTION",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT a",
        "RELEASE SAVEPOINT a",
        "ROLLBACK TO SAVEPOINT a",
        "PREPARE TRANSACTION 'g1'",
        "COMMIT PREPARED 'g1'",
        "ROLLBACK PREPARED 'g1'",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET CONSTRAINTS ALL DEFERRED",
    ] {
        assert_eq!(one(sql).operations, ops(&[Transaction]), "{sql}");
    }
}

#[test]
fn ddl() {
    check(
        "CREATE TABLE t (id serial PRIMARY KEY, u int REFERENCES users)",
        &[Ddl],
        &[],
        &["t", "users"],
    );
    // LIKE reads the definition of t.
    check(
        "CREATE TABLE t2 (LIKE t INCLUDING ALL)",
        &[Ddl, Read],
        &["t"],
        &["t2"],
    );
    check("ALTER TABLE t ADD COLUMN c text", &[Ddl], &[], &["t"]);
    check(
        "DROP TABLE IF EXISTS a, s.b CASCADE",
        &[Ddl],
        &[],
        &["a", "s.b"],
    );
    check("DROP VIEW v", &[Ddl], &[], &["v"]);
    check("DROP FUNCTION f(int)", &[Ddl], &[], &[]);
    check(
        "CREATE INDEX CONCURRENTLY i ON t (lower(name))",
        &[Ddl],
        &[],
        &["t"],
    );
    check("REINDEX TABLE t", &[Ddl], &[], &["t"]);
    check("COMMENT ON TABLE s.t IS 'x'", &[Ddl], &[], &["s.t"]);
    check("COMMENT ON COLUMN s.t.c IS 'x'", &[Ddl], &[], &["s.t"]);
    check(
        "CREATE VIEW v AS SELECT * FROM secrets",
        &[Ddl, Read],
        &["secrets"],
        &["v"],
    );
    // Renaming a table changes what the rules naming it mean: see ddl_escapes.rs.
    check(
        "ALTER TABLE a RENAME TO b",
        &[Ddl, Privileged],
        &[],
        &["a", "b"],
    );
    check("ALTER TABLE a RENAME COLUMN c TO d", &[Ddl], &[], &["a"]);
    check("CREATE SCHEMA s", &[Ddl], &[], &[]);
    check(
        "CREATE SCHEMA s CREATE TABLE x (a int) GRANT SELECT ON x TO bob",
        &[Ddl, Privileged],
        &[],
        &["x"],
    );
    let s = one("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION audit()");
    assert_eq!(s.operations, ops(&[Ddl, Privileged]));
    assert_eq!(s.functions, set(&["audit"]));
    // A body given as a string is not parsed: see ddl_escapes.rs.
    check(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        &[Ddl, Privileged],
        &[],
        &[],
    );
    // Bodies that are parsed are classified as if they ran.
    check(
        "CREATE FUNCTION g() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
        &[Ddl, Write],
        &[],
        &["t"],
    );
    check("CREATE DATABASE d", &[Ddl], &[], &[]);
}

#[test]
fn utility() {
    check("VACUUM ANALYZE t", &[Utility], &[], &["t"]);
    check("ANALYZE", &[Utility], &[], &[]);
    check("CLUSTER t USING i", &[Utility], &[], &["t"]);
    check(
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
        &[Utility],
        &[],
        &["t"],
    );
    check("REFRESH MATERIALIZED VIEW mv", &[Write], &[], &["mv"]);
    check("SHOW search_path", &[Read], &[], &[]);
    check("LISTEN ch", &[Session], &[], &[]);
    check("UNLISTEN *", &[Session], &[], &[]);
}
