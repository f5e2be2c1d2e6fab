//! Realistic queries an AI agent sends (schema discovery, analytics, app maintenance, admin
//! slips), each with the operations it must be classified as.

use super::tests::{c, ops};
use super::Operation::{Ddl, Privileged, Read, Session, Transaction, Utility, Write};

#[test]
fn agent_query_corpus() {
    let corpus: &[(&str, &[super::Operation])] = &[
        // Discovery.
        ("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2", &[Read]),
        ("SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 'orders'", &[Read]),
        ("SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 20", &[Read]),
        ("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users'", &[Read]),
        ("SELECT version()", &[Read]),
        ("SHOW server_version", &[Read]),
        ("SELECT current_database(), current_user, now()", &[Read]),
        ("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.orders'::regclass", &[Read]),
        // Analytics.
        ("SELECT date_trunc('day', created_at) AS d, count(*) FROM orders WHERE created_at > now() - interval '30 days' GROUP BY 1 ORDER BY 1", &[Read]),
        ("SELECT u.email, sum(o.total) AS spent FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.email HAVING sum(o.total) > 1000 ORDER BY spent DESC LIMIT 10", &[Read]),
        ("WITH monthly AS (SELECT date_trunc('month', created_at) m, sum(total) s FROM orders GROUP BY 1) SELECT m, s, lag(s) OVER (ORDER BY m) FROM monthly", &[Read]),
        ("SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM requests WHERE ts > now() - interval '1 hour'", &[Read]),
        ("SELECT p.name, jsonb_agg(t.tag) FROM products p LEFT JOIN LATERAL (SELECT tag FROM tags WHERE tags.pid = p.id LIMIT 5) t ON true GROUP BY p.name", &[Read]),
        ("SELECT count(*) FILTER (WHERE status = 'failed') * 100.0 / count(*) FROM jobs", &[Read]),
        ("SELECT * FROM events WHERE payload @> '{\"type\": \"signup\"}' ORDER BY id DESC LIMIT 50", &[Read]),
        ("EXPLAIN SELECT * FROM orders WHERE user_id = 42", &[Read]),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM orders WHERE user_id = 42", &[Read]),
        ("SELECT * FROM orders WHERE id = $1", &[Read]),
        // Application writes.
        ("INSERT INTO users (email, name) VALUES ('a@example.com', 'A') RETURNING id", &[Read, Write]),
        ("INSERT INTO page_views (path) VALUES ($1)", &[Write]),
        ("UPDATE users SET last_login = now() WHERE id = 42", &[Write]),
        ("UPDATE orders SET status = 'shipped' WHERE id IN (SELECT order_id FROM shipments WHERE shipped_at IS NOT NULL)", &[Read, Write]),
        ("DELETE FROM sessions WHERE expires_at < now()", &[Write]),
        ("INSERT INTO kv (k, v) VALUES ('a', '1') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", &[Write]),
        ("INSERT INTO orders_archive SELECT * FROM orders WHERE created_at < '2020-01-01'", &[Read, Write]),
        ("WITH moved AS (DELETE FROM queue WHERE id = (SELECT id FROM queue ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *) INSERT INTO processing SELECT * FROM moved", &[Read, Write]),
        ("COPY users (id, email) FROM STDIN WITH (FORMAT csv, HEADER true)", &[Write]),
        ("COPY (SELECT * FROM orders WHERE created_at > '2024-01-01') TO STDOUT WITH CSV HEADER", &[Read]),
        // Transactions and session.
        ("BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; UPDATE accounts SET balance = balance + 10 WHERE id = 2; COMMIT;", &[Transaction, Write]),
        ("SET statement_timeout = '30s'", &[Session]),
        // Moves what unqualified table names are: privileged (see is_privileged_setting).
        ("SET search_path TO analytics, public", &[Privileged]),
        // Schema changes.
        ("CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL, created_at timestamptz DEFAULT now())", &[Ddl]),
        ("ALTER TABLE users ADD COLUMN IF NOT EXISTS phone text", &[Ddl]),
        ("CREATE INDEX IF NOT EXISTS orders_user_id_idx ON orders (user_id)", &[Ddl]),
        ("DROP TABLE IF EXISTS tmp_import", &[Ddl]),
        ("CREATE TEMP TABLE scratch AS SELECT id FROM users WHERE active", &[Read, Write, Ddl]),
        ("CREATE OR REPLACE VIEW active_users AS SELECT * FROM users WHERE active", &[Read, Ddl]),
        // Maintenance.
        ("VACUUM (VERBOSE, ANALYZE) orders", &[Utility]),
        ("ANALYZE users", &[Utility]),
        // Admin slips an agent must not make silently.
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction'", &[Read, Privileged]),
        ("SELECT pg_reload_conf()", &[Read, Privileged]),
        ("ALTER SYSTEM SET max_connections = 500", &[Privileged]),
        ("GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO agent", &[Privileged]),
        ("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", &[Ddl, Privileged]),
        ("TRUNCATE TABLE audit_log", &[Write]),
        ("SELECT setval('orders_id_seq', (SELECT max(id) FROM orders))", &[Read, Write]),
    ];
    let mut failures = Vec::new();
    for (sql, want) in corpus {
        let got = c(sql).operations();
        if got != ops(want) {
            failures.push(format!("{sql}\n  want {:?}\n  got  {:?}", ops(want), got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(corpus.len() >= 40);
}
