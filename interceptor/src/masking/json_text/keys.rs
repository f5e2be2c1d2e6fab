//! Masked object keys that meet another key of their object get `#2`, `#3`…, so two
//! members never merge.

use std::collections::{HashMap, HashSet};

use super::{JsonTextError, Walker};

/// A key of the object being walked that the detectors masked.
pub(super) struct Renamed {
    /// Which member of the object (0-based).
    pub member: usize,
    /// The key as it came (decoded) and as masked.
    pub key: String,
    pub masked: String,
    /// Where in the output its closing quote is (for a `#n` suffix).
    pub quote_at: usize,
}

impl Walker<'_> {
    /// Adds `#2`, `#3`… to masked keys of the object at `open` (walked already) that meet
    /// another key: the keys kept as they came are taken first, then the masked ones get
    /// their names in the order of their original text (as a sorted map had them); the
    /// occurrences of one duplicated key keep one name.
    pub(super) fn suffix_collisions(
        &mut self,
        open: usize,
        mut renamed: Vec<Renamed>,
    ) -> Result<(), JsonTextError> {
        let masked_members: HashSet<usize> = renamed.iter().map(|r| r.member).collect();
        let mut taken: HashSet<String> = self
            .keys_of(open)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !masked_members.contains(i))
            .map(|(_, k)| k)
            .collect();
        renamed.sort_by(|a, b| a.key.cmp(&b.key));
        let mut named: HashMap<&str, String> = HashMap::new();
        // Per masked text, the next `#n` to try: the ones before are taken (linear, not
        // quadratic, in keys that mask to one text).
        let mut next_n: HashMap<&str, usize> = HashMap::new();
        let mut suffixes: Vec<(usize, String)> = Vec::new();
        for r in &renamed {
            let name = match named.get(r.key.as_str()) {
                Some(name) => name.clone(),
                None => {
                    let mut name = r.masked.clone();
                    let n = next_n.entry(&r.masked).or_insert(2);
                    while taken.contains(&name) {
                        name = format!("{}#{n}", r.masked);
                        *n += 1;
                    }
                    taken.insert(name.clone());
                    named.insert(&r.key, name.clone());
                    name
                }
            };
            if let Some(suffix) = name.get(r.masked.len()..).filter(|s| !s.is_empty()) {
                suffixes.push((r.quote_at, suffix.to_owned()));
            }
        }
        self.insert(suffixes);
        Ok(())
    }

    /// Inserts each `(at, text)` into the output at `at`, in one pass.
    fn insert(&mut self, mut at: Vec<(usize, String)>) {
        at.sort_by_key(|&(i, _)| i);
        let Some(&(first, _)) = at.first() else {
            return;
        };
        let tail = self.out.split_off(first.min(self.out.len()));
        let mut last = 0;
        for (i, text) in at {
            let i = i.saturating_sub(first).min(tail.len());
            self.out
                .extend_from_slice(tail.get(last..i).unwrap_or_default());
            self.out.extend_from_slice(text.as_bytes());
            last = i;
        }
        self.out
            .extend_from_slice(tail.get(last..).unwrap_or_default());
    }

    /// The keys (decoded) of the object at `open`, which was walked already.
    fn keys_of(&self, open: usize) -> Result<Vec<String>, JsonTextError> {
        let mut w = Walker::new(self.src, None);
        w.pos = open;
        w.depth = self.depth;
        w.enter()?;
        let mut keys = Vec::new();
        while w.peek() == Some(b'"') {
            keys.push(w.string()?.into_owned());
            w.ws();
            w.pos += 1; // the `:`
            w.ws();
            w.value(None, &[], false)?;
            w.ws();
            w.pos += 1; // `,` or `}`
            w.ws();
        }
        Ok(keys)
    }
}
