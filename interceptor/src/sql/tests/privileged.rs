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
fn settings_that_change_how_text_is_parsed_are_privileged() {
    // With client_encoding = SJIS or standard_conforming_strings = off the server would split
    // the following text differently from the classifier.
    for sql in [
        "SET client_encoding = 'SJIS'",
        "SET client_encoding TO DEFAULT",
        "SET CLIENT_ENCODING TO 'SJIS'",
        r#"SET "client_encoding" TO 'SJIS'"#,
        "SET LOCAL client_encoding TO 'SJIS'",
        "SET SESSION client_encoding TO 'SJIS'",
        "SET NAMES 'SJIS'",
        "SET NAMES DEFAULT",
        "RESET client_encoding",
        "SET standard_conforming_strings = off",
        "SET LOCAL standard_conforming_strings TO off",
        "SET SESSION standard_conforming_strings TO 'off'",
        "RESET standard_conforming_strings",
        "RESET Standard_Conforming_Strings",
    ] {
        assert_eq!(one(sql).operations, ops(&[Privileged]), "{sql}");
    }
    for sql in [
        "SELECT set_config('client_encoding', 'SJIS', false)",
        "SELECT set_config('Client_Encoding'::text, 'SJIS', true)",
        "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config(setting_name => 'application_name', new_value => 'x', is_local => false)",
    ] {
        assert_eq!(one(sql).operations, ops(&[Read, Privileged]), "{sql}");
    }
    // pg_settings' update rule calls set_config with any setting: privileged.
    for sql in [
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "UPDATE pg_catalog.pg_settings SET setting = 'admin' WHERE name = 'role'",
        "WITH x AS (UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding' RETURNING 1) SELECT 1",
    ] {
        assert!(one(sql).operations.contains(&Privileged), "{sql}");
    }
    check(
        "UPDATE public.pg_settings SET setting = 'x'",
        &[Write],
        &[],
        &["public.pg_settings"],
    );
    check("SELECT * FROM pg_settings", &[Read], &["pg_settings"], &[]);
    // Already privileged: per-role and per-database defaults.
    for sql in [
        "ALTER ROLE agent SET client_encoding = 'SJIS'",
        "ALTER DATABASE app SET standard_conforming_strings = off",
    ] {
        assert!(one(sql).operations.contains(&Privileged), "{sql}");
    }
    // Other settings stay session.
    for sql in [
        "SET application_name = 'x'",
        "SELECT set_config('statement_timeout', '5s', false)",
    ] {
        assert!(!one(sql).operations.contains(&Privileged), "{sql}");
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
