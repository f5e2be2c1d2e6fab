//! Functions defined in the database: one written there (any volatility — a STABLE one may
//! call a volatile one) or a volatile one of an extension may change data, so calling it is
//! a `write` (a read-only agent's `SELECT purge_orders()` is denied); built-ins, an
//! extension's immutable functions and `read_only_functions` stay reads; an unknown one
//! counts as a write.

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
           AS 'SELECT md5(random()::text)'; \
         CREATE FUNCTION tidy() RETURNS int LANGUAGE sql STABLE AS 'SELECT purge_orders()'; \
         CREATE EXTENSION pgcrypto",
    );
    let env = Env::new();
    let extra =
        "      tls: disable\n      read_only_functions: [\"public.new_token\", \"order_total\"]\n";
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
        "SELECT tidy()",
        "SELECT gen_salt('bf') IS NOT NULL",
        "SELECT encode(digest('x', 'sha256'), 'hex') IS NOT NULL",
        "SELECT count(*) FROM orders",
    ]);
    assert_eq!(s.pg.count("orders"), 50, "nothing was purged: {out}\n{err}");
    assert_eq!(
        err.matches("42501").count(),
        5,
        "two purges, the unknown function, the STABLE tidy() that purges and the \
         extension's volatile gen_salt denied: {err}"
    );
    assert!(
        err.contains("public.purge_orders() is defined in the database"),
        "the denial says why: {err}"
    );
    assert!(
        err.contains("public.tidy() is defined in the database"),
        "{err}"
    );
    assert!(
        err.contains("public.gen_salt() is a volatile function"),
        "{err}"
    );
    assert!(err.contains("not_defined_anywhere"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["50", "t", "abc", "t", "50"], "{out}");

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
