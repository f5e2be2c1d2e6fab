//! `interceptor audit verify`: re-checks a chain directory from disk and names every
//! record that is not what the daemon wrote (file, line, seq): after a problem it picks the
//! chain up again at the next record, so one problem does not hide the ones after it.
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
    /// Records or checkpoints of another chain (another daemon instance) in this one.
    Foreign,
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
    /// The first problem (the first of `problems`).
    pub problem: Option<Problem>,
    /// Every problem found, in chain order (at most `MAX_PROBLEMS`).
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn push(&mut self, p: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else if self.problems.len() == MAX_PROBLEMS {
            self.warnings.push(format!(
                "more than {MAX_PROBLEMS} problems: only the first are listed"
            ));
            self.problems.push(p);
        }
    }
}

/// Problems listed per chain (the count goes on).
pub const MAX_PROBLEMS: usize = 1000;

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
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    walk(dir, key, &mut r);
    r.problems.truncate(MAX_PROBLEMS);
    r.problem = r.problems.first().cloned();
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

fn walk(dir: &Path, key: Option<&VerifyingKey>, r: &mut ChainReport) {
    let segs = match list_segments(dir) {
        Ok(s) => s,
        Err(e) => {
            return r.push(problem(
                Kind::Deleted,
                dir,
                0,
                None,
                format!("cannot list: {e}"),
            ));
        }
    };
    // The chain's name: its directory's (the daemon names it after its instance).
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut seq, mut prev, mut want_n) = (1u64, GENESIS, 1u64);
    for (i, (n, path)) in segs.iter().enumerate() {
        let newest = i + 1 == segs.len();
        if *n != want_n {
            r.push(problem(
                Kind::Deleted,
                path,
                0,
                Some(seq),
                format!("segment(s) {want_n}..{} are missing", n - 1),
            ));
        }
        want_n = n + 1;
        r.segments += 1;
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                r.push(problem(
                    Kind::Deleted,
                    path,
                    0,
                    None,
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
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
        // After a line that is not a record, the next record is taken as it comes.
        let mut lost = false;
        let mut foreign = false;
        for (j, l) in lines.iter().enumerate() {
            count += 1;
            let o = match &l.opened {
                Ok(o) => o,
                Err(e) => {
                    r.push(problem(
                        Kind::Edited,
                        path,
                        l.no,
                        Some(seq),
                        format!("not a chained record: {e}"),
                    ));
                    (seq, lost) = (seq + 1, true);
                    continue;
                }
            };
            if !o.hash_ok {
                r.push(problem(
                    Kind::Edited,
                    path,
                    l.no,
                    Some(o.seq),
                    "the record's content does not match its hash".into(),
                ));
            }
            if !foreign && o.owner.as_ref().is_some_and(|w| *w != name) {
                foreign = true;
                r.push(problem(
                    Kind::Foreign,
                    path,
                    l.no,
                    Some(o.seq),
                    format!(
                        "the record belongs to chain {:?}, not {name:?} (segments copied from another instance?)",
                        o.owner.as_deref().unwrap_or("")
                    ),
                ));
            }
            let later = |s: u64| {
                lines[j + 1..]
                    .iter()
                    .any(|x| matches!(&x.opened, Ok(y) if y.seq == s))
            };
            if lost {
                lost = false;
            } else if o.seq > seq {
                let kind = if later(seq) {
                    Kind::Reordered
                } else {
                    Kind::Deleted
                };
                r.push(problem(
                    kind,
                    path,
                    l.no,
                    Some(o.seq),
                    format!("expected seq {seq} here, found {}", o.seq),
                ));
            } else if o.seq < seq {
                // A seq seen before: a duplicate or a forged record in front of the original
                // (records moved back are caught above, at the gap they leave).
                r.push(problem(
                    Kind::Inserted,
                    path,
                    l.no,
                    Some(o.seq),
                    format!("expected seq {seq} here, found {} again", o.seq),
                ));
            } else if o.prev != prev {
                r.push(problem(Kind::Inserted, path, l.no, Some(o.seq), "the record does not link to the one before it (prev hash differs): it replaced or was put in front of the original".into()));
            }
            // Go on from what this record claims.
            seq = o.seq + 1;
            prev = o.hash;
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
                r.push(problem(
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
            } else {
                r.push(problem(
                    Kind::Checkpoint,
                    &cp_path,
                    0,
                    None,
                    format!("closed segment {n} has no checkpoint (deleted?)"),
                ));
            }
            continue;
        }
        let seg = Seg {
            path,
            n: *n,
            name: &name,
            first_prev: seg_first_prev,
            count,
            data: &data,
        };
        match check_checkpoint(&cp_path, &seg, key) {
            Ok(cp) => {
                r.checkpoints += 1;
                if cp.body.signed_at_recovery {
                    r.warnings.push(format!("{}: signed by a restarted daemon when it recovered the segment after a crash or a failed signing ({}): it vouches for the file as found then, not for what the daemon wrote before; compare with the sink's copy", path.display(), cp.body.closed_at));
                }
            }
            Err(p) => r.push(p),
        }
    }
}

/// A segment as read, for its checkpoint.
struct Seg<'a> {
    path: &'a Path,
    n: u64,
    name: &'a str,
    first_prev: [u8; 32],
    count: u64,
    data: &'a [u8],
}

fn check_checkpoint(
    cp_path: &Path,
    seg: &Seg<'_>,
    key: Option<&VerifyingKey>,
) -> Result<checkpoint::Checkpoint, Problem> {
    let (n, count, data) = (seg.n, seg.count, seg.data);
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
    if b.chain != seg.name {
        return Err(problem(
            Kind::Foreign,
            cp_path,
            0,
            None,
            format!(
                "the checkpoint is for chain {:?}, not {:?} (segments copied from another instance? a chain directory keeps its instance's name)",
                b.chain, seg.name
            ),
        ));
    }
    if b.segment != n {
        return Err(bad(format!(
            "checkpoint is for segment {}, not {n}",
            b.segment
        )));
    }
    if count < b.records || (data.len() as u64) < b.bytes {
        let s = summarize(seg.path).ok();
        return Err(problem(
            Kind::Truncated,
            seg.path,
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
            seg.path,
            b.records + 1,
            Some(b.last_seq + 1),
            format!("records after the {} the checkpoint vouches for", b.records),
        ));
    }
    let sha: [u8; 32] =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(data)).into();
    if b.first_prev != hex(&seg.first_prev)
        || b.file_sha256 != hex(&sha)
        || b.bytes != data.len() as u64
    {
        return Err(problem(Kind::Edited, seg.path, 0, None, "the segment differs from what its checkpoint vouches for (a whole chain rewritten after the fact, or changed on disk while the daemon had it open?)".into()));
    }
    Ok(cp)
}
