//! What the PostgreSQL sink (`sink_pg.rs`) copies: records read back from the local
//! segments, checked to be one unbroken chain, and made storable as jsonb.

use std::{borrow::Cow, path::Path};

use super::{
    chain::{self, GENESIS},
    checkpoint,
    segment::list_segments,
};

/// One local record, as the sink copies it.
pub struct Row {
    pub segment: i64,
    pub seq: i64,
    pub kind: String,
    pub session: String,
    pub hash: String,
    /// The line, with `\u0000` escapes replaced (see [`jsonb_safe`]).
    pub record: String,
    pub prev: [u8; 32],
    pub hash_raw: [u8; 32],
    pub hash_ok: bool,
}

/// Records with `from <= seq <= upto` from the local segments (lines that are not records
/// are skipped: the linkage check notices the gap).
pub fn read_range(dir: &Path, from: u64, upto: u64) -> std::io::Result<Vec<Row>> {
    let mut out = Vec::new();
    for (n, path) in list_segments(dir)? {
        // Skip whole segments that a checkpoint shows to be before `from`.
        if let Ok(cp) = checkpoint::read(&checkpoint::path_for(&path)) {
            if cp.body.last_seq < from {
                continue;
            }
        }
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines() {
            let Ok(o) = chain::open(line) else { continue };
            if o.seq < from || o.seq > upto {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            out.push(Row {
                segment: n as i64,
                seq: o.seq as i64,
                kind: s("type"),
                session: s("session"),
                hash: chain::hex(&o.hash),
                record: jsonb_safe(line).into_owned(),
                prev: o.prev,
                hash_ok: o.hash_ok,
                hash_raw: o.hash,
            });
        }
        if out.last().is_some_and(|r| r.seq as u64 >= upto) {
            break;
        }
    }
    Ok(out)
}

/// How many of `rows` (records after `after`, whose hash is `anchor`) form an unbroken
/// chain: each the next seq, linked to the one before, its hash matching its content.
/// The rest (from the first break) must not be copied; `Err` says why.
pub fn linked_prefix(after: u64, anchor: [u8; 32], rows: &[Row]) -> (usize, Option<String>) {
    let (mut seq, mut prev) = (after + 1, if after == 0 { GENESIS } else { anchor });
    for (i, r) in rows.iter().enumerate() {
        let why = if r.seq as u64 != seq {
            Some(format!("seq {seq} is missing (found {})", r.seq))
        } else if r.prev != prev {
            Some(format!(
                "seq {seq} does not link to the record before it (replaced or forged)"
            ))
        } else if !r.hash_ok {
            Some(format!(
                "seq {seq}'s content does not match its hash (edited)"
            ))
        } else {
            None
        };
        if why.is_some() {
            return (i, why);
        }
        seq += 1;
        prev = r.hash_raw;
    }
    (rows.len(), None)
}

/// PostgreSQL's jsonb cannot hold U+0000, and one such record would make every insert of
/// its batch fail for ever: each `\u0000` escape becomes `\ufffd` and the record gets a
/// `"sink_nul_replaced":true` member (the local segment and the `hash` column keep the
/// original). Other records are returned as they are.
pub fn jsonb_safe(line: &str) -> Cow<'_, str> {
    const NUL: &str = "\\u0000";
    if !line.contains(NUL) {
        return Cow::Borrowed(line);
    }
    let b = line.as_bytes();
    let (mut out, mut i, mut from, mut replaced) = (String::new(), 0, 0, false);
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
        } else if line[i..].starts_with(NUL) {
            out.push_str(&line[from..i]);
            out.push_str("\\ufffd");
            i += NUL.len();
            from = i;
            replaced = true;
        } else {
            i += 2; // an escape such as \\ or \": never the start of \u0000
        }
    }
    out.push_str(&line[from..]);
    if !replaced {
        return Cow::Borrowed(line);
    }
    if out.ends_with('}') {
        out.pop();
        out.push_str(",\"sink_nul_replaced\":true}");
    }
    Cow::Owned(out)
}
