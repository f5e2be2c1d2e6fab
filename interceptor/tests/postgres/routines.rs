//! Functions defined in the database: a volatile one may change data, so calling it is a
//! `write` (a read-only agent's `SELECT purge_orders()` is denied); stable ones, built-ins
//! and `read_only_functions` stay reads; an unknown one counts as a write.

use super::*;

#[test]
fn pg_volatile_functions_defined_in_the_database_count_as_writes() {
    if !root_or_skip("pg_volatile_functions_defined_in_the_database_count_as_writes") {
        return;
    }
    let pg = Pg::start();
    pg.sql(
        "app",
        "CREATE FUNCTION purge_orders() RETURNS int LANGUAGE plpgsql VOLATILE \
           AS $$ BEGIN DELETE FROM orders; RETURN 1; END $$; \
         CREATE FUNCTION order_total() RETURNS bigint LANGUAGE sql STABLE \
           AS 'SELECT count(*) FROM orders'; \
         CREATE FUNCTION new_token() RETURNS text LANGUAGE sql VOLATILE \
           AS 'SELECT md5(random()::text)'",
    );
    let env = Env::new();
    let extra = "      tls: disable\n      read_only_functions: [\"public.new_token\"]\n";
    let yaml = policy_yaml_with(&pg, &env, "app", APP_PASSWORD, extra, READ_ONLY);
    let policy = env.policy("pg.yaml", &yaml);
    let s = Setup { pg, env, policy };
    let (out, err) = s.psql(&[
        "SELECT purge_orders()",
        "SELECT * FROM public.purge_orders()",
        "SELECT order_total()",
        "SELECT new_token() IS NOT NULL AS got",
        "SELECT lower('ABC')",
        "SELECT not_defined_anywhere()",
        "SELECT count(*) FROM orders",
    ]);
    assert_eq!(s.pg.count("orders"), 50, "nothing was purged: {out}\n{err}");
    assert_eq!(
        err.matches("42501").count(),
        3,
        "two purges and the unknown function denied: {err}"
    );
    assert!(
        err.contains("public.purge_orders() is a volatile function"),
        "the denial says why: {err}"
    );
    assert!(err.contains("not_defined_anywhere"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["50", "t", "abc", "50"], "{out}");

    let stmts = s.records("statement");
    let purge = stmts
        .iter()
        .find(|r| r["statement"] == "SELECT purge_orders()")
        .expect("audit of the purge");
    assert_eq!(purge["decision"], "deny", "{purge}");
    assert!(
        purge["classification"]
            .as_str()
            .is_some_and(|c| c.contains("write")),
        "{purge}"
    );
    let total = stmts
        .iter()
        .find(|r| r["statement"] == "SELECT order_total()")
        .expect("audit of the stable call");
    assert_eq!(total["decision"], "allow", "{total}");
}
