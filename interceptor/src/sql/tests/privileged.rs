//! Privileged statements: DO blocks, role switching, grants and system settings.

use super::*;

#[test]
fn do_blocks_are_privileged() {
    let s = one("DO $$ BEGIN EXECUTE 'DROP TABLE x'; END $$");
    assert_eq!(s.kind, "DoStmt");
    assert_eq!(s.operations, ops(&[Privileged]));
    check(
        "DO LANGUAGE plpgsql 'BEGIN NULL; END'",
        &[Privileged],
        &[],
        &[],
    );
}

#[test]
fn role_switching_is_privileged() {
    for sql in [
        "SET ROLE admin",
        "SET LOCAL ROLE admin",
        "SET SESSION ROLE admin",
        "SET role TO admin",
        "SET ROLE NONE",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET SESSION AUTHORIZATION",
        "SET session_replication_role = replica",
        "DISCARD ALL",
        // Table rules read unqualified names under the default search path.
        "SET search_path = app, public",
        "SET LOCAL search_path TO secret",
        "RESET search_path",
    ] {
        assert_eq!(one(sql).operations, ops(&[Privileged]), "{sql}");
    }
    for sql in [
        "SET statement_timeout TO '5s'",
        "RESET ALL",
        "SET TIME ZONE 'UTC'",
        "DISCARD TEMP",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    ] {
        assert_eq!(one(sql).operations, ops(&[Session]), "{sql}");
    }
}

#[test]
fn grants_roles_and_system_are_privileged() {
    check("GRANT SELECT ON t TO bob", &[Privileged], &[], &["t"]);
    check("REVOKE ALL ON SCHEMA s FROM bob", &[Privileged], &[], &[]);
    check("GRANT admin TO agent", &[Privileged], &[], &[]);
    check("CREATE ROLE x LOGIN SUPERUSER", &[Privileged], &[], &[]);
    check("ALTER USER agent WITH SUPERUSER", &[Privileged], &[], &[]);
    check(
        "ALTER ROLE agent SET role = 'admin'",
        &[Privileged],
        &[],
        &[],
    );
    check(
        "ALTER SYSTEM SET log_statement = 'none'",
        &[Privileged],
        &[],
        &[],
    );
    check("CHECKPOINT", &[Privileged], &[], &[]);
    check("LOAD 'evil.so'", &[Privileged], &[], &[]);
    check("CREATE EXTENSION dblink", &[Ddl, Privileged], &[], &[]);
    check(
        "ALTER TABLE t OWNER TO bob",
        &[Ddl, Privileged],
        &[],
        &["t"],
    );
    check(
        "ALTER TABLE t DISABLE ROW LEVEL SECURITY",
        &[Ddl, Privileged],
        &[],
        &["t"],
    );
    check(
        "ALTER FUNCTION f() OWNER TO bob",
        &[Ddl, Privileged],
        &[],
        &[],
    );
    check(
        "CREATE USER MAPPING FOR bob SERVER s OPTIONS (password 'x')",
        &[Ddl, Privileged],
        &[],
        &[],
    );
}
