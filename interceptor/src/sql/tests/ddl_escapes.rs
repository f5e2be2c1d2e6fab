//! DDL that would let an agent allowed `ddl` get around table and function rules: code that
//! runs later unseen (function bodies given as strings, triggers, operators), and renames
//! that change what a rule's name means.

use super::*;

#[test]
fn function_bodies_given_as_strings_are_privileged() {
    for sql in [
        "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql AS $$SELECT password FROM credentials$$",
        "CREATE OR REPLACE FUNCTION leak() RETURNS SETOF text AS 'SELECT password FROM credentials' LANGUAGE sql",
        "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT password FROM ' || 'credentials'; END $$",
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM credentials; END $$",
        "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'DELETE FROM credentials'",
        "CREATE FUNCTION f(int) RETURNS int LANGUAGE c AS 'evil.so', 'f'",
        "CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO credentials VALUES (NEW.*); RETURN NEW; END $$",
    ] {
        let s = one(sql);
        assert!(s.operations.contains(&Privileged), "{sql}");
        assert!(s.operations.contains(&Ddl), "{sql}");
        // The string is not parsed: none of its tables are seen.
        assert!(s.tables_read.is_empty() && s.tables_written.is_empty(), "{sql}");
    }
}

#[test]
fn sql_standard_bodies_are_walked_not_privileged() {
    // Parsed by PostgreSQL (and here): their tables are seen, so table rules apply.
    check(
        "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql BEGIN ATOMIC SELECT password FROM credentials; END",
        &[Ddl, Read],
        &["credentials"],
        &[],
    );
    check(
        "CREATE FUNCTION leak() RETURNS text LANGUAGE sql RETURN (SELECT password FROM public.credentials LIMIT 1)",
        &[Ddl, Read],
        &["public.credentials"],
        &[],
    );
    check(
        "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO credentials SELECT * FROM staging; END",
        &[Ddl, Read, Write],
        &["staging"],
        &["credentials"],
    );
    check(
        "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql IMMUTABLE SECURITY INVOKER RETURN a + 1",
        &[Ddl],
        &[],
        &[],
    );
    // Calls in the body are seen too.
    let s = one("CREATE FUNCTION f() RETURNS text LANGUAGE sql RETURN pg_read_file('/etc/passwd')");
    assert!(s.operations.contains(&Privileged));
}

#[test]
fn functions_running_as_their_owner_or_with_a_search_path_are_privileged() {
    for sql in [
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER RETURN 1",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = secret BEGIN ATOMIC SELECT 1; END",
        "ALTER FUNCTION f() SECURITY DEFINER",
        "ALTER FUNCTION f() EXTERNAL SECURITY DEFINER",
        "ALTER PROCEDURE p() SET search_path = secret",
        "ALTER ROUTINE f SET search_path FROM CURRENT",
    ] {
        assert_eq!(one(sql).operations, ops(&[Ddl, Privileged]), "{sql}");
    }
    for sql in [
        "ALTER FUNCTION f() SECURITY INVOKER",
        "ALTER FUNCTION f() SET statement_timeout = '1s'",
        "ALTER FUNCTION f() IMMUTABLE",
    ] {
        assert_eq!(one(sql).operations, ops(&[Ddl]), "{sql}");
    }
}

#[test]
fn triggers_and_code_run_implicitly_are_privileged() {
    for sql in [
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION leak_to_credentials()",
        "CREATE OR REPLACE TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW EXECUTE PROCEDURE f()",
        "CREATE CONSTRAINT TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "CREATE SCHEMA s CREATE TABLE t (a int) CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION f()",
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
        "ALTER EVENT TRIGGER e ENABLE ALWAYS",
        "ALTER TABLE t ENABLE TRIGGER tr",
        "ALTER TABLE t ENABLE ALWAYS TRIGGER tr",
        "ALTER TABLE t DISABLE TRIGGER ALL",
        "ALTER TABLE t DISABLE TRIGGER USER",
        "ALTER TABLE t DISABLE RULE r",
        "ALTER TABLE t ENABLE REPLICA RULE r",
        // An operator, aggregate or cast calls its function without a call in the query:
        // `SELECT !!! '/etc/passwd'` would read a file unseen.
        "CREATE OPERATOR !!! (RIGHTARG = text, FUNCTION = pg_read_file)",
        "CREATE AGGREGATE agg(text) (SFUNC = textcat, STYPE = text)",
        "CREATE CAST (mytype AS text) WITH FUNCTION f(mytype)",
        "CREATE TYPE t (INPUT = t_in, OUTPUT = t_out)",
    ] {
        let s = one(sql);
        assert!(s.operations.contains(&Privileged), "{sql}");
        assert!(s.operations.contains(&Ddl), "{sql}");
    }
    let s = one("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION audit()");
    assert_eq!(s.tables_written, set(&["t"]));
    assert_eq!(s.functions, set(&["audit"]));
    for sql in [
        "CREATE TYPE t",
        "CREATE TYPE t AS (a int)",
        "CREATE CAST (a AS b) WITHOUT FUNCTION",
        "DROP TRIGGER tr ON t",
    ] {
        assert_eq!(one(sql).operations, ops(&[Ddl]), "{sql}");
    }
}

#[test]
fn renames_that_change_what_rules_name_are_privileged() {
    // `pub2.api_keys` would escape a deny on `public.api_keys`.
    check(
        "ALTER SCHEMA public RENAME TO pub2",
        &[Ddl, Privileged],
        &[],
        &[],
    );
    check(
        "ALTER SCHEMA public OWNER TO bob",
        &[Ddl, Privileged],
        &[],
        &[],
    );
    check(
        "ALTER TABLE credentials RENAME TO c2",
        &[Ddl, Privileged],
        &[],
        &["credentials", "c2"],
    );
    check(
        "ALTER TABLE IF EXISTS crm.public.credentials RENAME TO c2",
        &[Ddl, Privileged],
        &[],
        &["public.credentials", "public.c2"],
    );
    check(
        "ALTER VIEW s.v RENAME TO w",
        &[Ddl, Privileged],
        &[],
        &["s.v", "s.w"],
    );
    check(
        "ALTER MATERIALIZED VIEW mv RENAME TO mv2",
        &[Ddl, Privileged],
        &[],
        &["mv", "mv2"],
    );
    check(
        "ALTER TABLE credentials SET SCHEMA other",
        &[Ddl, Privileged],
        &[],
        &["credentials", "other.credentials"],
    );
    // A function rule names the function.
    for sql in [
        "ALTER FUNCTION purge() RENAME TO harmless",
        "ALTER PROCEDURE p() SET SCHEMA s",
        "ALTER AGGREGATE agg(int) RENAME TO agg2",
        "ALTER EXTENSION pg_stat_statements SET SCHEMA s",
    ] {
        assert_eq!(one(sql).operations, ops(&[Ddl, Privileged]), "{sql}");
    }
    // The rows of one table read under another's name.
    check(
        "ALTER TABLE events ATTACH PARTITION credentials FOR VALUES IN (1)",
        &[Ddl, Privileged],
        &[],
        &["events", "credentials"],
    );
    check(
        "ALTER TABLE credentials INHERIT events",
        &[Ddl, Privileged],
        &[],
        &["credentials", "events"],
    );
    // Names no table or function rule matches.
    for sql in [
        "ALTER TABLE t RENAME COLUMN a TO b",
        "ALTER TABLE t RENAME CONSTRAINT c TO d",
        "ALTER INDEX i RENAME TO j",
        "ALTER TRIGGER tr ON t RENAME TO tr2",
        "ALTER TYPE ty RENAME TO ty2",
        "ALTER TABLE events DETACH PARTITION p",
    ] {
        assert_eq!(one(sql).operations, ops(&[Ddl]), "{sql}");
    }
}

#[test]
fn rules_are_walked_not_privileged() {
    // A rule's action is parsed: its tables are seen (as if it ran), so table rules apply.
    check(
        "CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM credentials",
        &[Ddl, Write],
        &[],
        &["t", "credentials"],
    );
    check(
        "CREATE OR REPLACE RULE r AS ON UPDATE TO t DO INSTEAD SELECT password FROM credentials",
        &[Ddl, Read],
        &["credentials"],
        &["t"],
    );
}
