//! Tables read and written by queries and DML.

use super::*;

// ---- reads ----

#[test]
fn joins_subqueries_and_unions_read_every_table() {
    check(
        "SELECT u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id \
         LEFT JOIN public.refunds r USING (id) \
         WHERE u.id IN (SELECT user_id FROM vip) AND EXISTS (SELECT 1 FROM flags f WHERE f.u = u.id)",
        &[Read],
        &["users", "orders", "public.refunds", "vip", "flags"],
        &[],
    );
    check(
        "SELECT a FROM t1 UNION SELECT b FROM t2 INTERSECT SELECT c FROM (SELECT c FROM t3) s",
        &[Read],
        &["t1", "t2", "t3"],
        &[],
    );
    check(
        "SELECT (SELECT max(x) FROM t4), * FROM LATERAL (SELECT 1) l, t5 ORDER BY (SELECT 1 FROM t6) LIMIT (SELECT 1 FROM t7)",
        &[Read],
        &["t4", "t5", "t6", "t7"],
        &[],
    );
}

#[test]
fn cte_names_are_not_tables_but_shadowing_is_resolved() {
    check(
        "WITH recent AS (SELECT * FROM orders) SELECT * FROM recent",
        &[Read],
        &["orders"],
        &[],
    );
    // The CTE's own body sees the real table, not itself.
    check(
        "WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets",
        &[Read],
        &["secrets"],
        &[],
    );
    // A later CTE is not visible in an earlier one (non-recursive).
    check(
        "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b",
        &[Read],
        &["b"],
        &[],
    );
    check(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT * FROM n",
        &[Read],
        &[],
        &[],
    );
    // A schema-qualified name is always a table.
    check(
        "WITH users AS (SELECT 1) SELECT * FROM public.users, users",
        &[Read],
        &["public.users"],
        &[],
    );
    // Scopes nest and end.
    check(
        "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x",
        &[Read],
        &["x"],
        &[],
    );
}

#[test]
fn select_for_update_is_a_read() {
    check(
        "SELECT * FROM jobs FOR UPDATE SKIP LOCKED",
        &[Read],
        &["jobs"],
        &[],
    );
}

// ---- writes ----

#[test]
fn data_modifying_cte_is_a_write() {
    let s = one("WITH d AS (DELETE FROM t WHERE old RETURNING *) SELECT * FROM d");
    assert_eq!(s.kind, "SelectStmt");
    assert_eq!(s.operations, ops(&[Read, Write]));
    assert_eq!(s.tables_written, set(&["t"]));
    check(
        "WITH u AS (UPDATE accounts SET bal = 0 RETURNING id) INSERT INTO log SELECT id FROM u",
        &[Read, Write],
        &["accounts"],
        &["accounts", "log"],
    );
    check(
        "WITH x AS (INSERT INTO t VALUES (1)) SELECT 1",
        &[Read, Write],
        &[],
        &["t"],
    );
}

#[test]
fn update_from_separates_written_and_read() {
    check(
        "UPDATE orders o SET status = 'x' FROM customers c WHERE c.id = o.cid AND c.region IN (SELECT r FROM regions)",
        &[Read, Write],
        &["customers", "regions"],
        &["orders"],
    );
    check("UPDATE t SET a = 1 WHERE id = 2", &[Write], &[], &["t"]);
    check(
        "DELETE FROM t USING u WHERE t.id = u.id",
        &[Read, Write],
        &["u"],
        &["t"],
    );
    // RETURNING reads the target.
    check("DELETE FROM t RETURNING *", &[Read, Write], &["t"], &["t"]);
}

#[test]
fn insert_select() {
    check(
        "INSERT INTO archive (id, body) SELECT id, body FROM posts WHERE created < now()",
        &[Read, Write],
        &["posts"],
        &["archive"],
    );
    check("INSERT INTO t VALUES (1), (2)", &[Write], &[], &["t"]);
    check(
        "INSERT INTO t (k, v) VALUES (1, 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        &[Write],
        &[],
        &["t"],
    );
}

#[test]
fn merge() {
    let s = one("MERGE INTO stock s USING incoming i ON s.id = i.id \
         WHEN MATCHED THEN UPDATE SET qty = s.qty + i.qty \
         WHEN NOT MATCHED THEN INSERT VALUES (i.id, i.qty)");
    assert_eq!(s.kind, "MergeStmt");
    assert_eq!(s.operations, ops(&[Read, Write]));
    assert_eq!(s.tables_read, set(&["incoming"]));
    assert_eq!(s.tables_written, set(&["stock"]));
}

#[test]
fn select_into_and_create_table_as() {
    check(
        "SELECT * INTO copy FROM src",
        &[Read, Write, Ddl],
        &["src"],
        &["copy"],
    );
    let s = one("CREATE TABLE t2 AS SELECT * FROM t1");
    assert_eq!(s.kind, "CreateTableAsStmt");
    assert_eq!(s.operations, ops(&[Read, Write, Ddl]));
    assert_eq!(s.tables_read, set(&["t1"]));
    assert_eq!(s.tables_written, set(&["t2"]));
    check(
        "CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM big",
        &[Read, Write, Ddl],
        &["big"],
        &["mv"],
    );
}

#[test]
fn truncate_and_call_are_writes() {
    check("TRUNCATE a, s.b", &[Write], &[], &["a", "s.b"]);
    let s = one("CALL archive_old(30)");
    assert_eq!(s.operations, ops(&[Write]));
    assert_eq!(s.functions, set(&["archive_old"]));
    check("NOTIFY jobs, 'x'", &[Write], &[], &[]);
}
