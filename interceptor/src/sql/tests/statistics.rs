//! The planner's statistics (`pg_stats`, `pg_statistic`, …) hold sample values of every
//! table, named only by a string: reading them is privileged wherever the table appears.

use super::*;

#[test]
fn reading_statistics_is_privileged_anywhere() {
    for sql in [
        "SELECT histogram_bounds, most_common_vals FROM pg_stats WHERE tablename = 'credentials'",
        "SELECT * FROM pg_catalog.pg_stats",
        r#"SELECT * FROM "pg_catalog"."pg_stats""#,
        "SELECT * FROM crm.pg_catalog.pg_stats",
        "SELECT * FROM PG_STATS",
        "TABLE pg_stats",
        "SELECT * FROM pg_stats_ext",
        "SELECT * FROM pg_catalog.pg_stats_ext_exprs",
        "SELECT stavalues1 FROM pg_statistic",
        "SELECT * FROM pg_catalog.pg_statistic_ext",
        "SELECT stxdmcv FROM pg_statistic_ext_data",
        "SELECT u.id FROM users u JOIN pg_stats s ON s.tablename = u.name",
        "SELECT * FROM users WHERE name IN (SELECT tablename FROM pg_stats)",
        "SELECT * FROM users u, LATERAL (SELECT * FROM pg_stats WHERE tablename = u.name) s",
        "SELECT 1 UNION SELECT null_frac FROM pg_stats",
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic)",
        "WITH s AS (SELECT * FROM pg_stats) SELECT * FROM s",
        "WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT 1 FROM pg_stats, r) SELECT * FROM r",
        // A CTE of another name does not hide the catalog.
        "WITH pg_stat AS (SELECT 1) SELECT * FROM pg_stats",
        "INSERT INTO t SELECT most_common_vals::text FROM pg_stats",
        "DELETE FROM t USING pg_stats WHERE t.a = pg_stats.attname",
        "UPDATE t SET a = (SELECT histogram_bounds::text FROM pg_stats LIMIT 1)",
        "COPY (SELECT * FROM pg_stats) TO STDOUT",
        "COPY pg_statistic TO STDOUT",
        "DECLARE c CURSOR FOR SELECT * FROM pg_stats",
        "PREPARE p AS SELECT * FROM pg_stats WHERE tablename = $1",
        "EXPLAIN ANALYZE SELECT * FROM pg_stats",
        "CREATE VIEW v AS SELECT * FROM pg_stats",
        "CREATE TABLE t2 AS SELECT * FROM pg_stats",
        "CREATE FUNCTION f() RETURNS SETOF pg_stats LANGUAGE sql BEGIN ATOMIC SELECT * FROM pg_stats; END",
    ] {
        let s = one(sql);
        assert!(
            s.operations.contains(&Privileged),
            "{sql}: {}",
            c(sql).summary()
        );
    }
    // The table is still reported, so table rules apply to it as before.
    check(
        "SELECT most_common_vals FROM pg_stats WHERE tablename = 'credentials'",
        &[Read, Privileged],
        &["pg_stats"],
        &[],
    );
    check(
        "SELECT * FROM pg_catalog.pg_statistic_ext_data",
        &[Read, Privileged],
        &["pg_catalog.pg_statistic_ext_data"],
        &[],
    );
}

#[test]
fn writing_statistics_is_privileged() {
    for sql in [
        "DELETE FROM pg_statistic",
        "UPDATE pg_catalog.pg_statistic SET stanullfrac = 0",
        "LOCK pg_statistic",
        "SELECT pg_restore_attribute_stats('relation', 't'::regclass, 'attname', 'a'::name)",
        "SELECT pg_catalog.pg_restore_relation_stats('relation', 't'::regclass)",
        "SELECT pg_clear_relation_stats('public', 't')",
        "SELECT pg_clear_attribute_stats('public', 't', 'a', false)",
    ] {
        assert!(one(sql).operations.contains(&Privileged), "{sql}");
    }
}

#[test]
fn statistics_functions_are_privileged() {
    // Decodes the most common values kept in pg_statistic_ext_data.
    let sql = "SELECT m.* FROM pg_statistic_ext_data d, pg_mcv_list_items(d.stxdmcv) m";
    assert_eq!(one(sql).operations, ops(&[Read, Privileged]), "{sql}");
    for name in [
        "pg_mcv_list_items",
        "pg_catalog.pg_mcv_list_items",
        "pg_restore_relation_stats",
        "pg_restore_attribute_stats",
        "pg_clear_relation_stats",
        "pg_clear_attribute_stats",
    ] {
        assert_eq!(is_side_effecting_function(name), Some(Privileged), "{name}");
    }
}

#[test]
fn look_alikes_of_the_statistics_are_not_privileged() {
    // A CTE of that name is not the catalog; a table in another schema is a plain table.
    check(
        "WITH pg_stats AS (SELECT 1 AS a) SELECT * FROM pg_stats",
        &[Read],
        &[],
        &[],
    );
    check(
        "SELECT * FROM public.pg_stats",
        &[Read],
        &["public.pg_stats"],
        &[],
    );
    // Activity counters hold no column values.
    check(
        "SELECT relname, n_live_tup FROM pg_stat_user_tables",
        &[Read],
        &["pg_stat_user_tables"],
        &[],
    );
    // A plain EXPLAIN reads nothing: nothing is escalated.
    check(
        "EXPLAIN SELECT * FROM pg_stats",
        &[Read],
        &["pg_stats"],
        &[],
    );
}
