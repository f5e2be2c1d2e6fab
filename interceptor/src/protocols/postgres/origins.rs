//! Where the columns of views, materialized views, partitions and child tables come from.
//!
//! PostgreSQL describes such a column as the relation's own: `SELECT * FROM active_users`
//! names `active_users.name`, `SELECT * FROM events_2024` names `events_2024.ssn`. A rule on
//! `users.name` or `events.ssn` must mask them too, so the catalog lookup also finds, per
//! column, the columns it comes from ([`Origin`]s):
//!
//! - a partition's or child table's column comes from the same column of every ancestor
//!   (`pg_inherits`);
//! - a view's plain column comes from the column PostgreSQL itself names when the view's
//!   definition is described (Parse/Describe of `SELECT * FROM (<definition>)`, nothing
//!   runs), and from that column's own origins (views over views);
//! - a view's computed column (`upper(name)`, `u` as a whole row) may come from any column
//!   the view's rule depends on (`pg_depend`, through nested views): all of them count, so
//!   a rule on any of them masks it (masking more rather than less).
//!
//! The composition ([`compose`]) is pure; [`look_up`] runs the catalog queries.

use std::collections::HashMap;

use super::error::Result;
use super::upstream::Upstream;
use crate::masking::Origin;

/// Nesting followed (views over views, ancestors of ancestors).
pub const MAX_DEPTH: usize = 16;

/// What one relation looked up says of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raw {
    /// "schema.table".
    pub qualified: String,
    /// `pg_class.relkind`.
    pub kind: u8,
    pub columns: HashMap<i16, String>,
    /// A view's columns in order: the (table OID, column number) PostgreSQL names for each,
    /// `(0, 0)` for a computed one. Empty when not a view or when it could not be described
    /// (then every column counts as computed).
    pub described: Vec<(u32, i16)>,
    /// Ancestors (partitioned parents, inheritance parents), nearest first.
    pub ancestors: Vec<String>,
    /// A view's base-table columns (through nested views); `None`: the whole row.
    pub depends: Vec<Origin>,
}

impl Raw {
    pub fn is_view(&self) -> bool {
        matches!(self.kind, b'v' | b'm')
    }
}

/// The origins of every column of `oid`, from the relations looked up (`raws`) and what is
/// already known of others (`known(oid, column)`: their columns' names and origins).
pub fn compose(
    oid: u32,
    raws: &HashMap<u32, Raw>,
    known: &dyn Fn(u32, i16) -> Option<(String, String, Vec<Origin>)>,
) -> HashMap<i16, Vec<Origin>> {
    let Some(raw) = raws.get(&oid) else {
        return HashMap::new();
    };
    raw.columns
        .iter()
        .filter_map(|(&n, name)| {
            let o = column_origins(raw, n, name, raws, known, 0);
            (!o.is_empty()).then_some((n, o))
        })
        .collect()
}

fn column_origins(
    raw: &Raw,
    n: i16,
    name: &str,
    raws: &HashMap<u32, Raw>,
    known: &dyn Fn(u32, i16) -> Option<(String, String, Vec<Origin>)>,
    depth: usize,
) -> Vec<Origin> {
    let mut out: Vec<Origin> = raw
        .ancestors
        .iter()
        .map(|a| Origin {
            table: a.clone(),
            column: Some(name.to_owned()),
        })
        .collect();
    if raw.is_view() {
        let plain = usize::try_from(n - 1)
            .ok()
            .and_then(|i| raw.described.get(i))
            .filter(|(t, c)| *t != 0 && *c > 0);
        match plain {
            Some(&(t, c)) if depth < MAX_DEPTH => match raws.get(&t) {
                Some(src) => {
                    if let Some(col) = src.columns.get(&c) {
                        out.push(Origin {
                            table: src.qualified.clone(),
                            column: Some(col.clone()),
                        });
                        out.extend(column_origins(src, c, col, raws, known, depth + 1));
                    } else {
                        out.extend(raw.depends.iter().cloned());
                    }
                }
                None => match known(t, c) {
                    Some((table, col, more)) => {
                        out.push(Origin {
                            table,
                            column: Some(col),
                        });
                        out.extend(more);
                    }
                    None => out.extend(raw.depends.iter().cloned()),
                },
            },
            _ => out.extend(raw.depends.iter().cloned()),
        }
    }
    out.sort_by(|a, b| (&a.table, &a.column).cmp(&(&b.table, &b.column)));
    out.dedup();
    out
}

fn list(oids: impl IntoIterator<Item = u32>) -> String {
    oids.into_iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Fills in `described`, `ancestors` and `depends` of the relations in `raws`, and returns
/// the OIDs of relations views' columns come from that are neither in `raws` nor
/// `cached(oid)`: the caller looks them up too.
pub async fn look_up(
    raws: &mut HashMap<u32, Raw>,
    fresh: &[u32],
    cached: &(dyn Fn(u32) -> bool + Sync),
    conn: &mut Upstream,
) -> Result<Vec<u32>> {
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = Vec::new();
    for (child, parent) in two_columns(conn, &ancestors_sql(fresh)).await? {
        if let Some(r) = raws.get_mut(&child) {
            r.ancestors.push(parent);
        }
    }
    let views: Vec<u32> = fresh
        .iter()
        .copied()
        .filter(|o| raws.get(o).is_some_and(Raw::is_view))
        .collect();
    if views.is_empty() {
        return Ok(next);
    }
    for row in conn.side_query(&depends_sql(&views)).await? {
        let (Some(Some(view)), Some(Some(table))) = (row.first(), row.get(1)) else {
            continue;
        };
        let (Ok(view), column) = (view.parse::<u32>(), row.get(2).cloned().flatten()) else {
            continue;
        };
        if let Some(r) = raws.get_mut(&view) {
            r.depends.push(Origin {
                table: table.clone(),
                column,
            });
        }
    }
    for (view, def) in two_columns(conn, &definitions_sql(&views)).await? {
        let def = def.trim_end().trim_end_matches(';');
        // Nothing runs: Parse and Describe only. A view that cannot be described this way
        // keeps every column computed (its dependencies all count).
        let Ok(fields) = conn
            .side_describe(&format!("SELECT * FROM ({def}) AS interceptor_view"))
            .await
        else {
            continue;
        };
        let described: Vec<(u32, i16)> = fields.iter().map(|f| (f.table_oid, f.column)).collect();
        for &(t, _) in &described {
            if t != 0 && !raws.contains_key(&t) && !cached(t) {
                next.push(t);
            }
        }
        if let Some(r) = raws.get_mut(&view) {
            r.described = described;
        }
    }
    next.sort_unstable();
    next.dedup();
    Ok(next)
}

/// Rows of (OID, text) from `sql`.
async fn two_columns(conn: &mut Upstream, sql: &str) -> Result<Vec<(u32, String)>> {
    Ok(conn
        .side_query(sql)
        .await?
        .into_iter()
        .filter_map(|r| match (r.first(), r.get(1)) {
            (Some(Some(o)), Some(Some(t))) => Some((o.parse().ok()?, t.clone())),
            _ => None,
        })
        .collect())
}

fn ancestors_sql(oids: &[u32]) -> String {
    format!(
        "WITH RECURSIVE a(child, parent, depth) AS (\
           SELECT inhrelid, inhparent, 1 FROM pg_catalog.pg_inherits WHERE inhrelid IN ({}) \
           UNION ALL SELECT a.child, i.inhparent, a.depth + 1 FROM a \
           JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.parent WHERE a.depth < {MAX_DEPTH}) \
         SELECT a.child::int8, n.nspname || '.' || c.relname FROM a \
         JOIN pg_catalog.pg_class c ON c.oid = a.parent \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY a.child, a.depth",
        list(oids.iter().copied())
    )
}

fn depends_sql(views: &[u32]) -> String {
    let dep =
        "JOIN pg_catalog.pg_depend p ON p.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
               AND p.objid = r.oid AND p.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND p.refobjid <> r.ev_class";
    // UNION (not UNION ALL): each (view, relation, column) once, so a stack of views costs
    // rows in proportion to its columns, not to the product of every level's columns.
    format!(
        "WITH RECURSIVE d(view, rel, att) AS (\
           SELECT r.ev_class, p.refobjid, p.refobjsubid FROM pg_catalog.pg_rewrite r {dep} \
           WHERE r.ev_class IN ({}) \
           UNION SELECT d.view, p.refobjid, p.refobjsubid FROM d \
           JOIN pg_catalog.pg_rewrite r ON r.ev_class = d.rel {dep}) \
         SELECT DISTINCT d.view::int8, n.nspname || '.' || c.relname, a.attname FROM d \
         JOIN pg_catalog.pg_class c ON c.oid = d.rel AND c.relkind NOT IN ('v', 'm') \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = d.rel AND a.attnum = d.att AND d.att > 0",
        list(views.iter().copied())
    )
}

fn definitions_sql(views: &[u32]) -> String {
    format!(
        "SELECT c.oid::int8, pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c \
         WHERE c.oid IN ({})",
        list(views.iter().copied())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(q: &str, kind: u8, cols: &[(i16, &str)]) -> Raw {
        Raw {
            qualified: q.into(),
            kind,
            columns: cols.iter().map(|&(n, c)| (n, c.to_owned())).collect(),
            ..Raw::default()
        }
    }

    fn o(t: &str, c: Option<&str>) -> Origin {
        Origin {
            table: t.into(),
            column: c.map(str::to_owned),
        }
    }

    fn none(_: u32, _: i16) -> Option<(String, String, Vec<Origin>)> {
        None
    }

    #[test]
    fn view_columns_come_from_their_base_columns() {
        let mut raws = HashMap::new();
        raws.insert(1, raw("public.users", b'r', &[(1, "id"), (2, "name")]));
        let mut v1 = raw(
            "public.v1",
            b'v',
            &[(1, "id"), (2, "customer"), (3, "shout")],
        );
        v1.described = vec![(1, 1), (1, 2), (0, 0)];
        v1.depends = vec![
            o("public.users", Some("id")),
            o("public.users", Some("name")),
        ];
        raws.insert(2, v1);
        let mut v3 = raw("public.v3", b'v', &[(1, "customer")]);
        v3.described = vec![(2, 2)];
        v3.depends = vec![o("public.users", Some("name"))];
        raws.insert(3, v3);
        let v1 = compose(2, &raws, &none);
        assert_eq!(v1[&1], vec![o("public.users", Some("id"))]);
        assert_eq!(v1[&2], vec![o("public.users", Some("name"))]);
        // Computed: every dependency.
        assert_eq!(
            v1[&3],
            vec![
                o("public.users", Some("id")),
                o("public.users", Some("name"))
            ]
        );
        // A view over a view: both levels.
        assert_eq!(
            compose(3, &raws, &none)[&1],
            vec![
                o("public.users", Some("name")),
                o("public.v1", Some("customer"))
            ]
        );
        // A plain table has none.
        assert!(compose(1, &raws, &none).is_empty());
    }

    #[test]
    fn undescribed_views_and_known_sources() {
        let mut raws = HashMap::new();
        let mut v = raw("s.v", b'm', &[(1, "a"), (2, "b")]);
        v.depends = vec![o("s.t", None)];
        raws.insert(5, v.clone());
        // Not described: all columns count as computed.
        let c = compose(5, &raws, &none);
        assert_eq!(c[&1], vec![o("s.t", None)]);
        assert_eq!(c[&2], vec![o("s.t", None)]);
        // Described from a relation cached earlier.
        v.described = vec![(9, 4), (0, 0)];
        raws.insert(5, v);
        let known = |t: u32, c: i16| {
            (t == 9 && c == 4).then(|| {
                (
                    "s.t".to_owned(),
                    "ssn".to_owned(),
                    vec![o("s.p", Some("ssn"))],
                )
            })
        };
        let c = compose(5, &raws, &known);
        assert_eq!(c[&1], vec![o("s.p", Some("ssn")), o("s.t", Some("ssn"))]);
    }

    #[test]
    fn partitions_come_from_their_ancestors() {
        let mut raws = HashMap::new();
        let mut p = raw("public.events_2024", b'r', &[(1, "id"), (2, "ssn")]);
        p.ancestors = vec!["public.events".into(), "archive.all_events".into()];
        raws.insert(7, p);
        let c = compose(7, &raws, &none);
        assert_eq!(
            c[&2],
            vec![
                o("archive.all_events", Some("ssn")),
                o("public.events", Some("ssn"))
            ]
        );
    }
}
