//! Finding the line of a problem in the policy text, for errors found after parsing.
//!
//! Most errors get their location from serde_yaml, because we validate inside
//! deserialization (see `de.rs`). Cross-references, such as a rule naming an
//! identity that is not defined, can only be checked once the whole document
//! is parsed, and serde_yaml does not expose the positions of parsed values.
//! For those we search the source text:
//!
//! 1. a rule is found by its `name: <rule name>` entry (rule names are unique
//!    and restricted to `[a-z0-9_.-]`, which is checked before, so the text is
//!    unambiguous), searching from the top-level `rules:` key;
//! 2. the extent of that rule's mapping is derived from indentation (up to
//!    its list item's "- " line, down to the first line indented less than
//!    its keys; a flow mapping `{...}` is assumed to be on one line);
//! 3. inside it, the offending value (e.g. the unknown identity name) is
//!    searched as a whole word in the value of the `identity` key (rest of
//!    the key's line and the lines indented below it).
//!
//! serde also reports a duplicated field at the start of its mapping; we move
//! such errors to the second occurrence of the key at the mapping's column.
//!
//! Comments are skipped. The search is a best effort: when the text cannot be
//! found (unusual layouts), we fall back to the rule's line, and then to no
//! location at all. It never affects whether a policy is valid.

/// 1-based (line, column).
pub(crate) type Pos = (usize, usize);

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The line without its comment (a `#` at the start or after whitespace).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Byte offsets of whole-word occurrences of `word` in `line`.
fn word_positions<'a>(line: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    line.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}

/// Byte offset just after `key:` in `line`, if `line` has that key.
fn after_key(line: &str, key: &str) -> Option<usize> {
    word_positions(line, key).find_map(|i| {
        let rest = &line[i + key.len()..];
        let trimmed = rest.trim_start_matches([' ', '\t', '"', '\'']);
        let skipped = rest.len() - trimmed.len();
        trimmed
            .starts_with(':')
            .then_some(i + key.len() + skipped + 1)
    })
}

fn col(line: &str, byte: usize) -> usize {
    line[..byte].chars().count() + 1
}

pub(crate) struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Locator {
            lines: src.lines().map(strip_comment).collect(),
        }
    }

    /// 0-based index of the first line after the top-level `rules:` key.
    fn rules_start(&self) -> usize {
        self.section_start("rules")
    }

    /// 0-based index of the first line after the top-level `section:` key.
    fn section_start(&self, section: &str) -> usize {
        self.lines
            .iter()
            .position(|l| l.starts_with(section) && after_key(l, section).is_some())
            .map_or(0, |i| i + 1)
    }

    /// Position of a top-level `section:` key.
    pub(crate) fn section(&self, section: &str) -> Option<Pos> {
        let line = self.section_start(section);
        (line > 0).then_some((line, 1))
    }

    /// Position of a top-level `key:` (line, column 1).
    pub(crate) fn top_key(&self, key: &str) -> Option<Pos> {
        self.lines
            .iter()
            .position(|l| l.starts_with(key) && after_key(l, key).is_some())
            .map(|i| (i + 1, 1))
    }

    /// Position of the value of rule `name`'s `name:` entry.
    pub(crate) fn rule(&self, name: &str) -> Option<Pos> {
        let (line, _, value_at) = self.rule_line(name)?;
        Some((line + 1, col(self.lines[line], value_at)))
    }

    /// (0-based line, byte offset of the `name` key, byte offset of the value)
    /// of rule `name`'s `name:` entry.
    fn rule_line(&self, name: &str) -> Option<(usize, usize, usize)> {
        self.item_line(self.rules_start(), name)
    }

    /// Like `rule_line`, for the list item named `name` after line `from`.
    fn item_line(&self, from: usize, name: &str) -> Option<(usize, usize, usize)> {
        (from..self.lines.len()).find_map(|i| {
            let l = self.lines[i];
            let start = after_key(l, "name")?;
            let value_at = start + word_positions(&l[start..], name).next()?;
            let key_at = l[..start].rfind("name")?;
            // Only whitespace and quotes between the colon and the name.
            l[start..value_at]
                .chars()
                .all(|c| c.is_whitespace() || c == '"' || c == '\'')
                .then_some((i, key_at, value_at))
        })
    }

    /// Lines [start, end) of the mapping holding the key at (`line`, `key_col`).
    fn mapping_extent(&self, line: usize, key_col: usize) -> (usize, usize) {
        let prefix = &self.lines[line][..key_col];
        if prefix.contains('{') {
            // Flow mapping: assume it is on this line.
            return (line, line + 1);
        }
        let indent_of = |l: &str| -> Option<(usize, bool)> {
            let body = l.trim_start();
            (!body.is_empty()).then(|| (l.len() - body.len(), body.starts_with('-')))
        };
        let mut start = line;
        if !prefix.trim_start().starts_with('-') {
            // Block mapping whose first key is above: walk up over sibling
            // keys and deeper lines to the list item's "- " line.
            let mut i = line;
            while i > 0 {
                i -= 1;
                match indent_of(self.lines[i]) {
                    None => continue,
                    Some((indent, _)) if indent >= key_col => start = i,
                    Some((_, true)) => {
                        start = i;
                        break;
                    }
                    Some(_) => break,
                }
            }
        }
        let end = (line + 1..self.lines.len())
            .find(|&i| indent_of(self.lines[i]).is_some_and(|(indent, _)| indent < key_col))
            .unwrap_or(self.lines.len());
        (start, end)
    }

    /// Position of the second `key:` of the block mapping whose first key is
    /// at (`line`, `col`) (serde reports duplicate fields at the mapping).
    pub(crate) fn duplicate_key(&self, (line, col): Pos, key: &str) -> Option<Pos> {
        let (first, key_col) = (line.checked_sub(1)?, col.checked_sub(1)?);
        let mut seen = 0;
        for i in first..self.lines.len() {
            let l = self.lines[i];
            let body = l.trim_start();
            if body.is_empty() {
                continue;
            }
            if i > first && l.len() - body.len() < key_col {
                break;
            }
            let at_key = l
                .get(key_col..)
                .is_some_and(|rest| after_key(rest, key).is_some() && rest.starts_with(key));
            if at_key {
                seen += 1;
                if seen == 2 {
                    return Some((i + 1, col));
                }
            }
        }
        None
    }

    /// Position of `value` under `key` in the rule named `rule`, falling back
    /// to the rule's `name:` entry.
    pub(crate) fn in_rule(&self, rule: &str, key: &str, value: &str) -> Option<Pos> {
        let (line, key_col, _) = self.rule_line(rule)?;
        let (start, end) = self.mapping_extent(line, key_col);
        self.search(start, end, key, value)
            .or_else(|| self.rule(rule))
    }

    /// `in_rule` for an item of another top-level list, e.g. `sql_rules`.
    pub(crate) fn in_item(&self, section: &str, item: &str, key: &str, value: &str) -> Option<Pos> {
        let (line, key_col, value_at) = self.item_line(self.section_start(section), item)?;
        let (start, end) = self.mapping_extent(line, key_col);
        self.search(start, end, key, value)
            .or(Some((line + 1, col(self.lines[line], value_at))))
    }

    /// Finds a `key:` in lines [from, to) whose value holds `value` as a
    /// whole word; returns the position of that word.
    fn search(&self, from: usize, to: usize, key: &str, value: &str) -> Option<Pos> {
        let to = to.min(self.lines.len());
        (from..to).find_map(|i| {
            let key_end = after_key(self.lines[i], key)?;
            self.search_value(i, key_end, to, key, value)
        })
    }

    /// Searches `value` in the value of the key ending at (`key_line`,
    /// `key_end`): the rest of the key's line and the following lines
    /// indented deeper than the key (or at its column and starting with
    /// "- ", YAML's compact list form).
    fn search_value(
        &self,
        key_line: usize,
        key_end: usize,
        to: usize,
        key: &str,
        value: &str,
    ) -> Option<Pos> {
        let text = self.lines[key_line];
        if let Some(b) = word_positions(&text[key_end..], value).next() {
            return Some((key_line + 1, col(text, key_end + b)));
        }
        let key_col = text[..key_end].rfind(key).unwrap_or(0);
        for i in key_line + 1..to {
            let l = self.lines[i];
            let body = l.trim_start();
            if body.is_empty() {
                continue;
            }
            let indent = l.len() - body.len();
            if indent < key_col || (indent == key_col && !body.starts_with("- ")) {
                break;
            }
            if let Some(b) = word_positions(l, value).next() {
                return Some((i + 1, col(l, b)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
version: 1
identities:
  name: {}      # an identity called `name`, must not confuse the search
rules:
  - name: first
    identity: agent   # comment with bogus
    action: allow
    to: [{any: true}]
  - identity:
      - agent
      - bogus
    name: \"second\"
    action: deny
    to: [{any: true}]
  - {name: third, identity: [x, bogus], action: deny, to: [{any: true}]}
";

    #[test]
    fn finds_rules() {
        let l = Locator::new(SRC);
        assert_eq!(l.rule("first"), Some((5, 11)));
        assert_eq!(l.rule("second"), Some((12, 12)));
        assert_eq!(l.rule("third"), Some((15, 12)));
        assert_eq!(l.rule("missing"), None);
    }

    #[test]
    fn finds_duplicate_keys() {
        let src = "version: 1\nrules:\n  - name: a\n    action: allow\n    to: []\n    action: deny\nversion: 1\n";
        let l = Locator::new(src);
        assert_eq!(l.duplicate_key((1, 1), "version"), Some((7, 1)));
        assert_eq!(l.duplicate_key((3, 5), "action"), Some((6, 5)));
        assert_eq!(l.duplicate_key((3, 5), "name"), None);
    }

    #[test]
    fn finds_values_in_rules() {
        let l = Locator::new(SRC);
        assert_eq!(l.in_rule("first", "identity", "agent"), Some((6, 15)));
        // comment text is ignored, and the next rule is not searched: falls
        // back to the rule line
        assert_eq!(l.in_rule("first", "identity", "bogus"), Some((5, 11)));
        // key before `name:`
        assert_eq!(l.in_rule("second", "identity", "bogus"), Some((11, 9)));
        assert_eq!(l.in_rule("second", "identity", "agent"), Some((10, 9)));
        // flow style
        assert_eq!(l.in_rule("third", "identity", "bogus"), Some((15, 33)));
        assert_eq!(l.in_rule("third", "identity", "nothere"), Some((15, 12)));
        assert_eq!(l.in_rule("missing", "identity", "agent"), None);
    }
}
