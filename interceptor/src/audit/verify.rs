//! `interceptor audit verify`: re-checks a chain directory from disk and names the first
//! record that is not what the daemon wrote (file, line, seq).
//!
//! What it proves: every record hashes to its `hash`, each `prev` is the hash before it,
//! `seq` runs 1, 2, 3… across segments without gaps, and every closed segment matches its
//! signed checkpoint (record count, last hash, size, sha256 of the file). What it cannot
//! prove alone: that records were not cut off the *end* of the newest, still-open segment at
//! a line boundary, or that the newest segments were not deleted whole (nothing follows
//! them); the PostgreSQL sink (a copy elsewhere) and exported checkpoints cover that.

use std::{
    fs,
    path::{Path, PathBuf},
};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::{
    chain::{self, hex, GENESIS},
    checkpoint,
    segment::{list_segments, summarize},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A record's content does not match its hash (or it is not a record at all).
    Edited,
    /// Records or whole segments are missing.
    Deleted,
    /// A record that the chain does not link to (forged, duplicated or replaced).
    Inserted,
    /// Records out of order.
    Reordered,
    /// A segment is shorter than its checkpoint, or ends in a torn line it must not have.
    Truncated,
    /// A checkpoint is missing, unsigned or signed by another key, or disagrees.
    Checkpoint,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: Kind,
    pub file: PathBuf,
    /// 1-based line in `file` (0: the file as a whole).
    pub line: u64,
    pub seq: Option<u64>,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} at {}:{}",
            self.kind,
            self.file.display(),
            self.line
        )?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub dir: PathBuf,
    pub segments: u64,
    pub records: u64,
    pub last_seq: u64,
    pub checkpoints: u64,
    pub problem: Option<Problem>,
    pub warnings: Vec<String>,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The chain directories under `dir`: `dir` itself if it holds segments, else its
/// subdirectories that do.
pub fn chain_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !list_segments(dir)?.is_empty() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && list_segments(p).map(|s| !s.is_empty()).unwrap_or(false))
        .collect();
    out.sort();
    Ok(out)
}

/// The public key next to the chain (`signing.pub` in it or its parent).
pub fn find_key(chain_dir: &Path) -> Option<(VerifyingKey, PathBuf)> {
    [chain_dir.join(checkpoint::PUB_FILE)]
        .into_iter()
        .chain(chain_dir.parent().map(|p| p.join(checkpoint::PUB_FILE)))
        .find_map(|p| {
            let k = checkpoint::parse_public(&fs::read_to_string(&p).ok()?)?;
            Some((k, p))
        })
}

struct Line {
    no: u64,
    opened: Result<chain::Opened, String>,
}

pub fn verify_chain(dir: &Path, key: Option<&VerifyingKey>) -> ChainReport {
    let mut r = ChainReport {
        dir: dir.to_path_buf(),
        segments: 0,
        records: 0,
        last_seq: 0,
        checkpoints: 0,
        problem: None,
        warnings: Vec::new(),
    };
    if let Err(p) = walk(dir, key, &mut r) {
        r.problem = Some(p);
    }
    r
}

fn problem(kind: Kind, file: &Path, line: u64, seq: Option<u64>, detail: String) -> Problem {
    Problem {
        kind,
        file: file.to_path_buf(),
        line,
        seq,
        detail,
    }
}

fn walk(dir: &Path, key: Option<&VerifyingKey>, r: &mut ChainReport) -> Result<(), Problem> {
    let segs = list_segments(dir)
        .map_err(|e| problem(Kind::Deleted, dir, 0, None, format!("cannot list: {e}")))?;
    let (mut seq, mut prev, mut want_n) = (1u64, GENESIS, 1u64);
    for (i, (n, path)) in segs.iter().enumerate() {
        let newest = i + 1 == segs.len();
        if *n != want_n {
            return Err(problem(
                Kind::Deleted,
                path,
                0,
                Some(seq),
                format!("segment(s) {want_n}..{} are missing", n - 1),
            ));
        }
        want_n = n + 1;
        r.segments += 1;
        let data = fs::read(path)
            .map_err(|e| problem(Kind::Deleted, path, 0, None, format!("cannot read: {e}")))?;
        let valid = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&data[..valid]);
        let lines: Vec<Line> = text
            .lines()
            .enumerate()
            .map(|(i, l)| Line {
                no: i as u64 + 1,
                opened: chain::open(l),
            })
            .collect();
        let (seg_first_prev, mut count) = (prev, 0u64);
        for (j, l) in lines.iter().enumerate() {
            let o = l.opened.as_ref().map_err(|e| {
                problem(
                    Kind::Edited,
                    path,
                    l.no,
                    Some(seq),
                    format!("not a chained record: {e}"),
                )
            })?;
            if !o.hash_ok {
                return Err(problem(
                    Kind::Edited,
                    path,
                    l.no,
                    Some(o.seq),
                    "the record's content does not match its hash".into(),
                ));
            }
            let later = |s: u64| {
                lines[j + 1..]
                    .iter()
                    .any(|x| matches!(&x.opened, Ok(y) if y.seq == s))
            };
            if o.seq > seq {
                let kind = if later(seq) {
                    Kind::Reordered
                } else {
                    Kind::Deleted
                };
                return Err(problem(
                    kind,
                    path,
                    l.no,
                    Some(o.seq),
                    format!("expected seq {seq} here, found {}", o.seq),
                ));
            }
            if o.seq < seq {
                // A seq seen before: a duplicate or a forged record in front of the original
                // (records moved back are caught above, at the gap they leave).
                return Err(problem(
                    Kind::Inserted,
                    path,
                    l.no,
                    Some(o.seq),
                    format!("expected seq {seq} here, found {} again", o.seq),
                ));
            }
            if o.prev != prev {
                return Err(problem(Kind::Inserted, path, l.no, Some(o.seq), "the record does not link to the one before it (prev hash differs): it replaced or was put in front of the original".into()));
            }
            seq += 1;
            prev = o.hash;
            count += 1;
        }
        r.records += count;
        r.last_seq = seq - 1;
        let torn = data.len() - valid;
        let cp_path = checkpoint::path_for(path);
        let has_cp = cp_path.exists();
        if torn > 0 {
            if newest && !has_cp {
                r.warnings.push(format!("{}: a torn last line ({torn} bytes) follows seq {}: the daemon died while writing it, so it was never acknowledged and its command never forwarded (a restarted daemon cuts it off and records that)", path.display(), seq - 1));
            } else {
                return Err(problem(
                    Kind::Truncated,
                    path,
                    count + 1,
                    Some(seq),
                    format!("a torn line ({torn} bytes) in a segment that was closed"),
                ));
            }
        }
        if !has_cp {
            if newest {
                r.warnings.push(format!("{}: newest segment, still open (no checkpoint yet): records cut off its end at a line boundary cannot be detected here", path.display()));
                continue;
            }
            return Err(problem(
                Kind::Checkpoint,
                &cp_path,
                0,
                None,
                format!("closed segment {n} has no checkpoint (deleted?)"),
            ));
        }
        check_checkpoint(&cp_path, path, *n, seg_first_prev, count, key, &data)?;
        r.checkpoints += 1;
    }
    Ok(())
}

fn check_checkpoint(
    cp_path: &Path,
    seg: &Path,
    n: u64,
    first_prev: [u8; 32],
    count: u64,
    key: Option<&VerifyingKey>,
    data: &[u8],
) -> Result<(), Problem> {
    let bad = |detail: String| problem(Kind::Checkpoint, cp_path, 0, None, detail);
    let cp = checkpoint::read(cp_path).map_err(bad)?;
    let key = key.ok_or_else(|| bad("no public key to check signatures with (pass --key or put signing.pub next to the chain)".into()))?;
    checkpoint::check_signature(&cp, key).map_err(|e| {
        bad(format!(
            "{e} (not signed by key {})",
            checkpoint::public_hex(key)
        ))
    })?;
    let b = &cp.body;
    if b.segment != n {
        return Err(bad(format!(
            "checkpoint is for segment {}, not {n}",
            b.segment
        )));
    }
    if count < b.records || (data.len() as u64) < b.bytes {
        let s = summarize(seg).ok();
        return Err(problem(
            Kind::Truncated,
            seg,
            count + 1,
            Some(s.map_or(b.last_seq, |s| s.last_seq + 1)),
            format!(
                "the checkpoint vouches for {} records ({} bytes), the file has {count} ({} bytes)",
                b.records,
                b.bytes,
                data.len()
            ),
        ));
    }
    if count > b.records {
        return Err(problem(
            Kind::Inserted,
            seg,
            b.records + 1,
            Some(b.last_seq + 1),
            format!("records after the {} the checkpoint vouches for", b.records),
        ));
    }
    let sha: [u8; 32] =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(data)).into();
    if b.first_prev != hex(&first_prev)
        || b.file_sha256 != hex(&sha)
        || b.bytes != data.len() as u64
    {
        return Err(problem(Kind::Edited, seg, 0, None, "the segment differs from what its checkpoint vouches for (a whole chain rewritten after the fact?)".into()));
    }
    Ok(())
}
