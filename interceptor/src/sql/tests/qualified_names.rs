//! Database- and schema-qualified names: `db.schema.table` and `schema.function(…)` are
//! reported so that policy rules on `schema.table` and on function names still apply.

use super::*;

#[test]
fn database_qualified_tables_are_reported_without_the_database() {
    // PostgreSQL only accepts the current database's name there: it names the same table as
    // `public.api_keys`, so it must be reported (and matched by rules) as that.
    check(
        "SELECT * FROM crm.public.api_keys",
        &[Read],
        &["public.api_keys"],
        &[],
    );
    check(
        r#"SELECT * FROM "crm"."public"."api_keys" k JOIN crm.app.users u ON true"#,
        &[Read],
        &["public.api_keys", "app.users"],
        &[],
    );
    check(
        "INSERT INTO crm.public.api_keys VALUES (1)",
        &[Write],
        &[],
        &["public.api_keys"],
    );
    check(
        "UPDATE crm.public.api_keys SET key = 'x' RETURNING key",
        &[Read, Write],
        &["public.api_keys"],
        &["public.api_keys"],
    );
    check(
        "DELETE FROM crm.public.api_keys USING crm.s.other WHERE true",
        &[Read, Write],
        &["s.other"],
        &["public.api_keys"],
    );
    check(
        "MERGE INTO crm.public.api_keys k USING crm.s.src s ON k.id = s.id \
         WHEN MATCHED THEN DELETE",
        &[Read, Write],
        &["s.src"],
        &["public.api_keys"],
    );
    check(
        "COPY crm.public.api_keys TO STDOUT",
        &[Read],
        &["public.api_keys"],
        &[],
    );
    check(
        "COPY crm.public.api_keys FROM STDIN",
        &[Write],
        &[],
        &["public.api_keys"],
    );
    check(
        "COPY (SELECT * FROM crm.public.api_keys) TO STDOUT",
        &[Read],
        &["public.api_keys"],
        &[],
    );
    check(
        "TRUNCATE crm.public.api_keys",
        &[Write],
        &[],
        &["public.api_keys"],
    );
    check(
        "WITH api_keys AS (SELECT 1) SELECT * FROM crm.public.api_keys",
        &[Read],
        &["public.api_keys"],
        &[],
    );
}

#[test]
fn database_qualified_ddl_objects_are_reported_without_the_database() {
    check(
        "DROP TABLE crm.public.api_keys, crm.s.t2",
        &[Ddl],
        &[],
        &["public.api_keys", "s.t2"],
    );
    check(
        "COMMENT ON COLUMN crm.public.api_keys.key IS 'x'",
        &[Ddl],
        &[],
        &["public.api_keys"],
    );
    check(
        "COMMENT ON TABLE crm.public.api_keys IS 'x'",
        &[Ddl],
        &[],
        &["public.api_keys"],
    );
    check(
        "ALTER TABLE crm.public.api_keys ADD COLUMN c int",
        &[Ddl],
        &[],
        &["public.api_keys"],
    );
    check(
        "GRANT SELECT ON crm.public.api_keys TO bob",
        &[Privileged],
        &[],
        &["public.api_keys"],
    );
    check(
        "LOCK TABLE crm.public.api_keys",
        &[Utility],
        &[],
        &["public.api_keys"],
    );
}

#[test]
fn qualified_side_effecting_calls_are_escalated() {
    for (sql, op) in [
        ("SELECT pg_catalog.pg_read_file('/etc/passwd')", Privileged),
        (
            r#"SELECT "pg_catalog"."pg_read_file"('/etc/passwd')"#,
            Privileged,
        ),
        (
            "SELECT crm.pg_catalog.pg_read_file('/etc/passwd')",
            Privileged,
        ),
        ("SELECT pg_catalog.lo_import('/etc/passwd')", Privileged),
        (
            "SELECT * FROM public.dblink('host=x', 'SELECT 1') AS t(a int)",
            Privileged,
        ),
        (
            "SELECT pg_catalog.set_config('role', 'x', false)",
            Privileged,
        ),
        (
            r#"SELECT "pg_catalog"."set_config"('search_path', 'x', false)"#,
            Privileged,
        ),
        ("SELECT PG_CATALOG.NEXTVAL('s')", Write),
        ("SELECT pg_catalog.pg_advisory_lock(1)", Utility),
    ] {
        assert_eq!(one(sql).operations, ops(&[Read, op]), "{sql}");
    }
}

#[test]
fn qualified_function_names_keep_their_schema_but_not_the_database() {
    let s = one(r#"SELECT "pg_catalog"."pg_sleep"(1), pg_catalog.pg_sleep(0.1)"#);
    assert_eq!(s.operations, ops(&[Read]));
    assert_eq!(s.functions, set(&["pg_catalog.pg_sleep"]));
    let s = one("SELECT crm.pg_catalog.pg_sleep(1), crm.app.f()");
    assert_eq!(s.functions, set(&["pg_catalog.pg_sleep", "app.f"]));
    let s = one("CALL crm.app.archive(1)");
    assert_eq!(s.functions, set(&["app.archive"]));
}
