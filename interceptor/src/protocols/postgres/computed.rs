//! Outputs masking cannot follow. PostgreSQL describes a computed output column
//! (`upper(name)`, `row_to_json(u)`, a `UNION` branch's column) without the table column
//! it came from, so a column rule on `users.name` would not recognise it and only the
//! detectors would look at the value. On a resource with column rules such statements are
//! refused, naming the rule; plain column outputs (`name`, `u.*`, `*`) are masked as usual.

use crate::masking::{Masker, Origin};
use crate::sql::Statement;

/// Where the columns of a relation named so come from (`relations.rs`): `(table,
/// Some(column))` for one column, `(table, None)` for any; empty for a plain table; `Err`
/// when it is not known (why).
pub type Origins<'a> = dyn Fn(&str, Option<&str>) -> Result<Vec<Origin>, String> + 'a;

/// No relation is a view: for statements judged without the catalog.
pub fn no_origins(_: &str, _: Option<&str>) -> Result<Vec<Origin>, String> {
    Ok(Vec::new())
}

/// The rule that masks one of `origins`, if any.
fn ruled_origin(masker: &Masker, origins: &[Origin]) -> Option<String> {
    origins.iter().find_map(|o| match &o.column {
        Some(c) => masker
            .column_rule(Some(&o.table), c)
            .map(|r| format!("{r}, on {}.{c}", o.table)),
        None => masker
            .rules_cover_table(&o.table)
            .then(|| format!("the rules on {}", o.table)),
    })
}

/// Why `s` cannot be masked under `masker`'s column rules, if it cannot. `origins` tells
/// which tables are views (or child tables) of ruled columns.
pub fn unmaskable(masker: &Masker, s: &Statement, origins: &Origins<'_>) -> Option<String> {
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
    // What a view's (or child table's) columns come from, or why that is not known.
    let via = |t: &str, c: Option<&str>| -> Result<Option<String>, String> {
        Ok(ruled_origin(masker, &origins(t, c)?))
    };
    let refused = |what: String| {
        Some(format!(
            "{what}; masking cannot follow a computed output (PostgreSQL does not say which column it came from): select the column plainly, or ask for a rule without masking"
        ))
    };
    let unknown = |t: &str, why: String| {
        Some(format!(
            "whether {t} is a view of columns with masking rules is not known ({why}), and the statement computes on its columns; try again, or select the columns plainly"
        ))
    };
    // A table is a row of ruled columns if any column rule can apply to it or to a column
    // it comes from; a subquery, CTE or function row (`None`) may hold any of them.
    let ruled_row = |table: Option<&str>| -> Result<bool, (String, String)> {
        let one = |t: &str| -> Result<bool, (String, String)> {
            Ok(masker.rules_cover_table(t)
                || via(t, None).map_err(|e| (t.to_owned(), e))?.is_some())
        };
        match table {
            Some(t) => one(t),
            None => {
                for t in &s.tables_read {
                    if one(t)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    };
    let names_a_row = |name: &str| {
        out.aliases.contains_key(name)
            || s.tables_read
                .iter()
                .any(|t| t == name || t.rsplit_once('.').is_some_and(|(_, l)| l == name))
    };
    let rule_of = |t: &str, c: &str| -> Result<Option<String>, (String, String)> {
        match masker.column_rule(Some(t), c) {
            Some(r) => Ok(Some(r.to_owned())),
            None => via(t, Some(c)).map_err(|e| (t.to_owned(), e)),
        }
    };
    let judged = (|| -> Result<Option<String>, (String, String)> {
        for name in &out.bare {
            if names_a_row(name) && ruled_row(resolve(name).as_deref())? {
                return Ok(refused(format!(
                    "the whole row {name} holds columns with masking rules"
                )));
            }
        }
        for (q, c) in &out.computed {
            let table = q.as_deref().and_then(resolve);
            if c == "*" {
                if ruled_row(table.as_deref())? {
                    let row = q.as_deref().unwrap_or("*");
                    return Ok(refused(format!(
                        "the whole row {row} is used in an expression and holds columns with masking rules"
                    )));
                }
                continue;
            }
            let rule = match (q, &table) {
                (Some(_), Some(t)) => rule_of(t, c)?,
                // A subquery's or CTE's column may be any column of the tables read, under
                // any name (`(SELECT ssn AS n FROM users) s`): refused when one has rules.
                (Some(_), None) => match masker.column_rule(None, c) {
                    Some(r) => Some(r.to_owned()),
                    None if ruled_row(None)? => {
                        Some("on a table this statement reads; a subquery's or CTE's column may be any of its columns".to_owned())
                    }
                    None => None,
                },
                (None, _) => {
                    let mut found = None;
                    for t in &s.tables_read {
                        if let Some(r) = rule_of(t, c)? {
                            found = Some(r);
                            break;
                        }
                    }
                    found
                }
            };
            if let Some(rule) = rule {
                return Ok(refused(format!(
                    "column {c} (masking rule {rule}) is used in an expression, a UNION branch or a function in FROM"
                )));
            }
            if q.is_none() && names_a_row(c) && ruled_row(resolve(c).as_deref())? {
                return Ok(refused(format!(
                    "the whole row {c} is used in an expression and holds columns with masking rules"
                )));
            }
        }
        Ok(None)
    })();
    judged.unwrap_or_else(|(t, why)| unknown(&t, why))
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
        c.statements
            .iter()
            .find_map(|s| unmaskable(&m, s, &no_origins))
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
            "SELECT upper(s.n) FROM (SELECT name AS n FROM users) s",
            "WITH x(n) AS (SELECT ssn FROM people) SELECT lower(x.n) FROM x",
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

    #[test]
    fn computed_outputs_of_views_of_ruled_columns_are_refused() {
        let m = masker();
        // tax_ids(id, tax_id) is a view of users(id, ssn); archive a child table of users.
        let origins = |t: &str, c: Option<&str>| -> Result<Vec<Origin>, String> {
            let o = |col: &str| Origin {
                table: "public.users".into(),
                column: Some(col.into()),
            };
            match (crate::protocols::postgres::relations::relname(t), c) {
                ("tax_ids", Some("tax_id")) => Ok(vec![o("ssn")]),
                ("tax_ids", Some("id")) => Ok(vec![o("id")]),
                ("tax_ids", None) => Ok(vec![o("ssn"), o("id")]),
                ("archive", Some(c)) => Ok(vec![o(c)]),
                ("archive", None) => Ok(vec![o("ssn")]),
                ("mystery", _) => Err("the lookup failed".into()),
                _ => Ok(Vec::new()),
            }
        };
        let judge = |sql: &str| {
            let c = crate::sql::classify(sql).unwrap();
            c.statements
                .iter()
                .find_map(|s| unmaskable(&m, s, &origins))
        };
        for sql in [
            "SELECT upper(tax_id) FROM tax_ids",
            "SELECT t.tax_id || '' FROM public.tax_ids t",
            "SELECT upper(s.c) FROM (SELECT tax_id AS c FROM tax_ids) s",
            "SELECT row_to_json(t) FROM tax_ids t",
            "SELECT lower(ssn) FROM archive",
        ] {
            let why = judge(sql).unwrap_or_else(|| panic!("not refused: {sql}"));
            assert!(why.contains("select the column plainly"), "{sql}: {why}");
        }
        let why = judge("SELECT upper(x) FROM mystery").unwrap();
        assert!(why.contains("the lookup failed"), "{why}");
        for sql in [
            "SELECT tax_id, id FROM tax_ids",
            "SELECT id + 1 FROM tax_ids",
            "SELECT upper(note) FROM plain_table",
        ] {
            assert_eq!(judge(sql), None, "{sql}");
        }
    }
}
