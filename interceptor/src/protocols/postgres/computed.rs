//! Outputs masking cannot follow. PostgreSQL describes a computed output column
//! (`upper(name)`, `row_to_json(u)`, a `UNION` branch's column) without the table column
//! it came from, so a column rule on `users.name` would not recognise it and only the
//! detectors would look at the value. On a resource with column rules such statements are
//! refused, naming the rule; plain column outputs (`name`, `u.*`, `*`) are masked as usual.

use crate::masking::Masker;
use crate::sql::Statement;

/// Why `s` cannot be masked under `masker`'s column rules, if it cannot.
pub fn unmaskable(masker: &Masker, s: &Statement) -> Option<String> {
    let out = &s.outputs;
    if !masker.has_column_rules() || (out.computed.is_empty() && out.bare.is_empty()) {
        return None;
    }
    let resolve = |q: &str| -> Option<String> {
        match out.aliases.get(q) {
            Some(t) if t.is_empty() => None,
            Some(t) => Some(t.clone()),
            None => Some(q.to_owned()),
        }
    };
    // A table is a row of ruled columns if any column rule can apply to it; a subquery,
    // CTE or function row (`None`) may hold any of them.
    let ruled_row = |table: Option<&str>| match table {
        Some(t) => masker.rules_cover_table(t),
        None => s.tables_read.iter().any(|t| masker.rules_cover_table(t)),
    };
    let names_a_row = |name: &str| {
        out.aliases.contains_key(name)
            || s.tables_read
                .iter()
                .any(|t| t == name || t.rsplit_once('.').is_some_and(|(_, l)| l == name))
    };
    let refused = |what: String| {
        Some(format!(
            "{what}; masking cannot follow a computed output (PostgreSQL does not say which column it came from): select the column plainly, or ask for a rule without masking"
        ))
    };
    for name in &out.bare {
        if names_a_row(name) && ruled_row(resolve(name).as_deref()) {
            return refused(format!(
                "the whole row {name} holds columns with masking rules"
            ));
        }
    }
    for (q, c) in &out.computed {
        let table = q.as_deref().and_then(resolve);
        if c == "*" {
            if ruled_row(table.as_deref()) {
                let row = q.as_deref().unwrap_or("*");
                return refused(format!(
                    "the whole row {row} is used in an expression and holds columns with masking rules"
                ));
            }
            continue;
        }
        let rule = match (q, &table) {
            (Some(_), Some(t)) => masker.column_rule(Some(t), c),
            // A subquery's or CTE's column: whichever table it came from.
            (Some(_), None) => masker.column_rule(None, c),
            (None, _) => s
                .tables_read
                .iter()
                .find_map(|t| masker.column_rule(Some(t), c)),
        };
        if let Some(rule) = rule {
            return refused(format!(
                "column {c} (masking rule {rule}) is used in an expression, a UNION branch or a function in FROM"
            ));
        }
        if q.is_none() && names_a_row(c) && ruled_row(resolve(c).as_deref()) {
            return refused(format!(
                "the whole row {c} is used in an expression and holds columns with masking rules"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::MaskingDoc;

    fn masker() -> Masker {
        let doc: MaskingDoc = serde_yaml::from_str(
            "columns:\n  - {match: users.name, strategy: redact}\n  - {match: '*.ssn', strategy: redact}\n",
        )
        .unwrap();
        Masker::new(&doc, vec![7; 32]).unwrap()
    }

    fn refused(sql: &str) -> Option<String> {
        let m = masker();
        let c = crate::sql::classify(sql).unwrap();
        c.statements.iter().find_map(|s| unmaskable(&m, s))
    }

    #[test]
    fn computed_outputs_of_ruled_columns_are_refused() {
        for sql in [
            "SELECT upper(name) FROM users",
            "SELECT concat(name, ' <', email, '>') FROM users",
            "SELECT name::text FROM users",
            "SELECT row_to_json(u) FROM users u",
            "SELECT to_jsonb(u.*) FROM users u",
            "SELECT u FROM users u",
            "SELECT json_agg(users) FROM users",
            "SELECT 'x' AS n UNION ALL SELECT name FROM users",
            "SELECT n FROM (SELECT upper(name) AS n FROM users) s",
            "WITH x AS (SELECT name FROM users) SELECT lower(x.name) FROM x",
            "SELECT row_to_json(s) FROM (SELECT name FROM users) s",
            "SELECT (SELECT name FROM users LIMIT 1)",
            "SELECT x FROM users, LATERAL upper(users.name) x",
            "SELECT reverse(ssn) FROM customers",
            "SELECT max(p.ssn) FROM people p",
            "UPDATE users SET id = id RETURNING upper(name)",
            "INSERT INTO copy_of SELECT upper(name) FROM users",
        ] {
            let why = refused(sql).unwrap_or_else(|| panic!("not refused: {sql}"));
            assert!(why.contains("select the column plainly"), "{sql}: {why}");
        }
    }

    #[test]
    fn plain_outputs_and_other_columns_pass() {
        for sql in [
            "SELECT name, ssn FROM users",
            "SELECT u.name, u.* FROM users u WHERE upper(u.name) LIKE 'A%' ORDER BY name",
            "SELECT * FROM users",
            "SELECT n FROM (SELECT name AS n FROM users) s",
            "SELECT count(name), count(*) FROM users",
            "SELECT upper(name) FROM products",
            "SELECT id + 1, lower(email) FROM users",
            "SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id",
            "SELECT name FROM products UNION SELECT title FROM books",
            "UPDATE users SET name = 'x' WHERE id = 1 RETURNING id, name",
        ] {
            assert_eq!(refused(sql), None, "{sql}");
        }
    }
}
