//! Side-effecting functions called from queries.

use super::*;

#[test]
fn side_effecting_functions_in_select() {
    let s = one("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'x'");
    assert_eq!(s.operations, ops(&[Read, Privileged]));
    assert_eq!(s.tables_read, set(&["pg_stat_activity"]));
    assert_eq!(s.functions, set(&["pg_terminate_backend"]));
    check(
        "SELECT lo_export(1234, '/tmp/x')",
        &[Read, Privileged],
        &[],
        &[],
    );
    check(
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        &[Read, Privileged],
        &[],
        &[],
    );
    check(
        "SELECT * FROM pg_ls_dir('.')",
        &[Read, Privileged],
        &[],
        &[],
    );
    check(
        "SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)",
        &[Read, Privileged],
        &[],
        &[],
    );
    check("SELECT nextval('orders_id_seq')", &[Read, Write], &[], &[]);
    check("SELECT setval('s', 1)", &[Read, Write], &[], &[]);
    check(
        "SELECT set_config('search_path', 'x', false)",
        &[Read, Privileged],
        &[],
        &[],
    );
    check(
        "SELECT set_config('ROLE', 'admin', false)",
        &[Read, Privileged],
        &[],
        &[],
    );
    check(
        "SELECT set_config(name, 'x', false) FROM settings",
        &[Read, Privileged],
        &["settings"],
        &[],
    );
    check("SELECT pg_advisory_lock(1)", &[Read, Utility], &[], &[]);
    check(
        "SELECT query_to_xml('SELECT * FROM secrets', true, false, '')",
        &[Read, Privileged],
        &[],
        &[],
    );
    // Deep inside expressions and in a CASE.
    check(
        "SELECT CASE WHEN x > 0 THEN coalesce(pg_cancel_backend(x), false) END FROM t",
        &[Read, Privileged],
        &["t"],
        &[],
    );
    // pg_sleep is listed, not escalated; unknown functions are only listed.
    let s = one("SELECT pg_sleep(10), my_func(1), extract(year FROM now())");
    assert_eq!(s.operations, ops(&[Read]));
    assert_eq!(s.functions, set(&["pg_sleep", "my_func", "extract", "now"]));
    let s = one(r#"SELECT app."Fn"(1), Public.LOWER('A')"#);
    assert_eq!(s.functions, set(&["app.Fn", "public.lower"]));
}

#[test]
fn side_effecting_function_list() {
    assert_eq!(
        is_side_effecting_function("pg_terminate_backend"),
        Some(Privileged)
    );
    assert_eq!(
        is_side_effecting_function("PG_CATALOG.PG_RELOAD_CONF"),
        Some(Privileged)
    );
    assert_eq!(is_side_effecting_function("dblink_exec"), Some(Privileged));
    assert_eq!(is_side_effecting_function("pg_ls_waldir"), Some(Privileged));
    assert_eq!(
        is_side_effecting_function("pg_create_logical_replication_slot"),
        Some(Privileged)
    );
    assert_eq!(is_side_effecting_function("nextval"), Some(Write));
    assert_eq!(is_side_effecting_function("set_config"), Some(Session));
    assert_eq!(
        is_side_effecting_function("pg_try_advisory_xact_lock"),
        Some(Utility)
    );
    assert_eq!(is_side_effecting_function("pg_sleep"), None);
    assert_eq!(is_side_effecting_function("lower"), None);
    // Reading a large object: no table rule covers it, the masking does not see it.
    assert_eq!(is_side_effecting_function("lo_get"), Some(Privileged));
}

#[test]
fn functions_running_query_strings_are_privileged() {
    // The query in the string is invisible to table extraction: like query_to_xml.
    for sql in [
        "SELECT * FROM ts_rewrite('a'::tsquery, 'select ''a''::tsquery, quote_literal(key)::tsquery from api_keys')",
        "SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)",
        "SELECT word FROM ts_stat('select to_tsvector(''simple'', key) from api_keys')",
        "SELECT * FROM pg_catalog.ts_stat('select v from api_keys', 'ab')",
        "SELECT * FROM crosstab('select a, b, c from api_keys order by 1') AS t(a text, b text)",
        "SELECT * FROM crosstab('select 1', 'select 2') AS t(a text, b text)",
        "SELECT * FROM public.crosstab2('select a, b, c from api_keys')",
        "SELECT * FROM crosstab3('select a, b, c from api_keys')",
        "SELECT * FROM crosstab4('select a, b, c from api_keys')",
        "SELECT * FROM connectby('api_keys', 'id', 'parent', '1', 0) AS t(id text, parent text, level int)",
        "SELECT * FROM xpath_table('id', 'doc', 'api_keys', '/a', 'true') AS t(id int, a text)",
        "SELECT * FROM get_raw_page('api_keys', 0)",
        "SELECT * FROM bt_page_items('api_keys_pkey', 1)",
        "SELECT * FROM run_command_on_workers('select * from api_keys')",
        "SELECT pg_background_launch('delete from api_keys')",
    ] {
        let s = one(sql);
        assert_eq!(s.operations, ops(&[Read, Privileged]), "{sql}");
        assert!(s.tables_read.is_empty(), "{sql}");
    }
    for name in [
        "ts_stat",
        "ts_rewrite",
        "crosstab",
        "crosstab2",
        "crosstab3",
        "crosstab4",
        "connectby",
        "xpath_table",
        "get_raw_page",
        "bt_page_items",
        "pg_catalog.TS_STAT",
    ] {
        assert_eq!(is_side_effecting_function(name), Some(Privileged), "{name}");
    }
    // Text-search functions that only take values are not escalated.
    check(
        "SELECT to_tsvector('simple', body) @@ to_tsquery('a') FROM docs",
        &[Read],
        &["docs"],
        &[],
    );
}

#[test]
fn functions_behind_system_views_read_the_views() {
    // Table rules on pg_stat_activity / pg_settings also cover the functions they show.
    let s = one("SELECT query FROM pg_stat_get_activity(NULL)");
    assert_eq!(s.tables_read, set(&["pg_catalog.pg_stat_activity"]));
    assert!(s.operations.contains(&Read));
    let s = one("SELECT name, setting FROM pg_catalog.pg_show_all_settings()");
    assert_eq!(s.tables_read, set(&["pg_catalog.pg_settings"]));
    let s = one("SELECT * FROM pg_stat_statements(true)");
    assert_eq!(s.tables_read, set(&["public.pg_stat_statements"]));
    // Large objects are outside every table rule.
    for sql in [
        "SELECT lo_get(16400)",
        "SELECT loread(lo_open(16400, 262144), 100)",
    ] {
        assert!(one(sql).operations.contains(&Privileged), "{sql}");
    }
}
