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
    assert_eq!(is_side_effecting_function("lo_get"), None);
}
