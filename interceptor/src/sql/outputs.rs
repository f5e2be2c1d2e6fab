//! Columns a statement's output *computes on*: referenced inside an output expression
//! (`upper(name)`, `name || ''`, `row_to_json(u)`, `(SELECT name …)` as a value), in any
//! branch of a set operation (`… UNION SELECT name …`), in a function in `FROM`, or in a
//! `RETURNING` expression. PostgreSQL describes such output columns without their table
//! column, so a masking rule on the column cannot recognise them: the proxy refuses them
//! on resources with column rules (see `protocols::postgres::enforce`). Plain column
//! outputs (`name`, `u.name`, `*`, `u.*`) keep their origin and are masked as usual.

use std::collections::BTreeMap;

use super::tree::Tree;

/// A column reference met in a computed output: qualifier as written (`u` of `u.name`,
/// `None` for a bare name) and column (`*` for a whole row, `u.*`). A bare name may also
/// be a whole-row reference to a table or alias of that name (`row_to_json(u)`).
pub type ColumnUse = (Option<String>, String);

/// What the walk collects for [`ColumnUse`]s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outputs {
    pub computed: Vec<ColumnUse>,
    /// Plain outputs of one bare name (`SELECT u FROM users u`): a whole row when the name
    /// is a table or alias.
    pub bare: Vec<String>,
    /// Alias → relation (`""` for a subquery or function alias).
    pub aliases: BTreeMap<String, String>,
}

impl Outputs {
    /// A `SelectStmt`: its target list's computed entries; for a set operation, every
    /// column its branches output.
    pub(crate) fn select(&mut self, select: &Tree) {
        if select.field("larg").is_some() {
            for branch in ["larg", "rarg"] {
                if let Some(b) = select.field(branch) {
                    self.branch(b);
                }
            }
            return;
        }
        if let Some(targets) = select.field("target_list") {
            self.targets(targets);
        }
    }

    /// A set operation's branch: all its output columns lose their origin.
    fn branch(&mut self, select: &Tree) {
        if select.field("larg").is_some() {
            self.select(select);
            return;
        }
        if let Some(targets) = select.field("target_list") {
            for t in targets.items() {
                if let Some(v) = t.field("val") {
                    self.refs(v);
                }
            }
        }
    }

    /// Output entries (`ResTarget`s) other than plain column references.
    pub(crate) fn targets(&mut self, list: &Tree) {
        for t in list.items() {
            match t.field("val") {
                Some(v) if plain_column(v) => {
                    if let Some((None, name)) = column_use(v) {
                        self.bare.push(name);
                    }
                }
                Some(v) => self.refs(v),
                None => {}
            }
        }
    }

    /// Every column reference inside `tree`.
    pub(crate) fn refs(&mut self, tree: &Tree) {
        match tree {
            Tree::Msg("ColumnRef", _) => self.computed.extend(column_use(tree)),
            // count(x) shows how many, never a value.
            Tree::Msg("FuncCall", _) if is_count(tree) => {}
            Tree::Msg(_, fields) => fields.iter().for_each(|(_, v)| self.refs(v)),
            Tree::List(items) => items.iter().for_each(|v| self.refs(v)),
            _ => {}
        }
    }

    /// Records `holder`'s alias (or, with `named`, its own name when it has no alias) as
    /// standing for `relation`.
    pub(crate) fn alias(&mut self, holder: &Tree, named: Option<&str>, relation: &str) {
        let name = holder
            .field("alias")
            .and_then(|a| a.field("aliasname"))
            .and_then(Tree::as_str)
            .or(named);
        if let Some(a) = name {
            self.aliases.insert(a.to_owned(), relation.to_owned());
        }
    }
}

/// `name`, `t.name`, `s.t.name`, `*`, `t.*`: output as a table column (or columns).
fn plain_column(v: &Tree) -> bool {
    matches!(v, Tree::Msg("ColumnRef", _))
}

fn column_use(c: &Tree) -> Option<ColumnUse> {
    let fields = c.field("fields")?.items();
    let part = |t: &Tree| match t {
        Tree::Msg("AStar", _) => Some("*".to_owned()),
        _ => t.field("sval").and_then(Tree::as_str).map(str::to_owned),
    };
    let parts: Vec<String> = fields.iter().filter_map(part).collect();
    let (last, rest) = parts.split_last()?;
    Some((rest.last().cloned(), last.clone()))
}

fn is_count(call: &Tree) -> bool {
    let name = super::walk::qualified(call.field("funcname"));
    name == "count" || name == "pg_catalog.count"
}
