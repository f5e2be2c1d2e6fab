//! Masking of bodies that are streams of records — newline-delimited JSON and server-sent
//! events (`text/event-stream`, the streaming answers of LLM APIs). Each record is masked
//! and handed on as soon as it is complete, so the agent keeps a stream instead of waiting
//! for the end of a body that may never end. Pure: bytes in, bytes out.

use super::mask::MaskError;
use crate::masking::{FieldRule, Masker};

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// One JSON value per line; a blank line passes as it is.
    JsonLines,
    /// Server-sent events: lines up to a blank line. The `data` of an event is masked as
    /// JSON when it parses as JSON (field rules and detectors), else by the detectors; the
    /// other fields (`event`, `id`, comments) by the detectors.
    Events,
}

/// Cuts a stream into records and masks each one. At most `limit` bytes of an unfinished
/// record are kept; a longer record cannot be masked.
#[derive(Debug)]
pub struct RecordMasker {
    kind: Records,
    limit: usize,
    /// The start of the unfinished record.
    pending: Vec<u8>,
    /// Where in `pending` to go on looking for the record's end (a line start for events).
    scan: usize,
    /// Records seen so far, for error messages.
    seen: u64,
    /// The record that could not be masked: nothing more is handed on.
    failed: Option<MaskError>,
    /// The last record was rewritten and ended with a CR that was the last byte so far: an
    /// LF next is the rest of its CRLF, already replaced by the rewrite's own line end.
    lf_owed: bool,
}

impl RecordMasker {
    pub fn new(kind: Records, limit: u64) -> Self {
        RecordMasker {
            kind,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            pending: Vec::new(),
            scan: 0,
            seen: 0,
            failed: None,
            lf_owed: false,
        }
    }

    /// The longest record it takes (`max_mask_bytes`).
    pub fn max_record(&self) -> u64 {
        self.limit as u64
    }

    /// Takes the next bytes of the body; hands on every record they complete, masked.
    pub fn push(&mut self, m: &Masker, fields: &[FieldRule], data: &[u8]) -> Masked {
        let mut done = Masked::default();
        if let Some(e) = &self.failed {
            done.error = Some(e.clone());
            return done;
        }
        let mut data = data;
        if self.lf_owed && !data.is_empty() {
            self.lf_owed = false;
            data = data.strip_prefix(b"\n").unwrap_or(data);
        }
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Ok(len) = record_end(self.kind, &self.pending[start..], self.scan)
            .map_err(|resume| self.scan = resume)
        {
            self.seen += 1;
            self.scan = 0;
            let record = &self.pending[start..start + len];
            match mask_record(self.kind, m, fields, record, self.seen, &mut done) {
                Ok(rewritten) => {
                    // Only a CR that is the last byte so far may be half a CRLF.
                    self.lf_owed =
                        rewritten && record.ends_with(b"\r") && start + len == self.pending.len();
                    start += len;
                }
                Err(e) => {
                    done.error = Some(e);
                    break;
                }
            }
        }
        self.pending.drain(..start);
        if done.error.is_none() && self.pending.len() > self.limit {
            done.error = Some(MaskError::TooLarge(self.limit as u64));
        }
        self.failed.clone_from(&done.error);
        done
    }

    /// The end of the body: the unfinished record, if any, is masked as the last one.
    pub fn finish(&mut self, m: &Masker, fields: &[FieldRule]) -> Masked {
        let mut done = Masked::default();
        if let Some(e) = self.failed.take() {
            done.error = Some(e);
        } else if !self.pending.is_empty() {
            self.seen += 1;
            let record = std::mem::take(&mut self.pending);
            if let Err(e) = mask_record(self.kind, m, fields, &record, self.seen, &mut done) {
                done.error = Some(e);
            }
        }
        done
    }
}

/// What `push` and `finish` hand on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Masked {
    /// The records completed so far, masked, up to the first one that cannot be.
    pub out: Vec<u8>,
    /// Values masked in `out`.
    pub fields: u64,
    /// A record that cannot be masked: the stream must end after `out`.
    pub error: Option<MaskError>,
}

impl Masked {
    /// `self`, then `next` (which the caller made only if `self` has no error).
    pub fn then(mut self, next: Masked) -> Masked {
        self.out.extend_from_slice(&next.out);
        self.fields += next.fields;
        self.error = next.error;
        self
    }

    pub fn into_result(self) -> Result<(Vec<u8>, u64), MaskError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.out, self.fields)),
        }
    }
}

/// `Ok(length of the first record of buf)`, or `Err(where to resume)` when it is not
/// complete yet; `from` is where an earlier look stopped.
fn record_end(kind: Records, buf: &[u8], from: usize) -> Result<usize, usize> {
    match kind {
        Records::JsonLines => match buf[from..].iter().position(|&c| c == b'\n') {
            Some(i) => Ok(from + i + 1),
            None => Err(buf.len()),
        },
        Records::Events => {
            // Lines end with LF, CRLF or CR; an event ends with an empty line.
            let mut line = from;
            let mut i = from;
            while i < buf.len() {
                let end = match buf[i] {
                    b'\n' => i + 1,
                    // A CR last: maybe half a CRLF, so the line may not be over — unless it
                    // is empty, then the event is (an LF after it ends an empty event).
                    b'\r' if i + 1 == buf.len() && i > line => return Err(line),
                    b'\r' if i + 1 == buf.len() => i + 1,
                    b'\r' if buf[i + 1] == b'\n' => i + 2,
                    b'\r' => i + 1,
                    _ => {
                        i += 1;
                        continue;
                    }
                };
                if i == line {
                    return Ok(end);
                }
                line = end;
                i = end;
            }
            Err(line)
        }
    }
}

/// Masks one record into `done`; `Ok(true)` when it was rewritten.
fn mask_record(
    kind: Records,
    m: &Masker,
    fields: &[FieldRule],
    record: &[u8],
    nth: u64,
    done: &mut Masked,
) -> Result<bool, MaskError> {
    // A byte order mark opening the stream is not part of the first record (clients drop
    // it): masked without it, and passed on.
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let record = match record.strip_prefix(BOM).filter(|_| nth == 1) {
        Some(rest) => {
            done.out.extend_from_slice(BOM);
            rest
        }
        None => record,
    };
    let masked = match kind {
        Records::JsonLines => mask_line(m, fields, record, nth)?,
        Records::Events => mask_event(m, fields, record),
    };
    Ok(match masked {
        Some((bytes, n)) => {
            done.out.extend_from_slice(&bytes);
            done.fields += n;
            true
        }
        None => {
            done.out.extend_from_slice(record);
            false
        }
    })
}

/// One NDJSON line (with its `\n`, if any), masked in place; `None`: it goes on as it came
/// (nothing masked).
fn mask_line(
    m: &Masker,
    fields: &[FieldRule],
    line: &[u8],
    nth: u64,
) -> Result<Option<(Vec<u8>, u64)>, MaskError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let masked = m
        .mask_json_text(line, fields)
        .map_err(|e| MaskError::BadJson(format!("line {nth}: {e}")))?;
    Ok(masked.map(|(out, n)| (out, n as u64)))
}

/// One server-sent event, its blank line included. `None`: it goes on as it came (nothing
/// masked).
fn mask_event(m: &Masker, fields: &[FieldRule], event: &[u8]) -> Option<(Vec<u8>, u64)> {
    let text = String::from_utf8_lossy(event);
    // Each non-empty line with its `data` value, if it is a data line.
    let lines: Vec<(&str, Option<&str>)> = split_lines(&text)
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| (l, data_value(l)))
        .collect();
    let mut n = 0;
    let mut rewrite = false;
    let data: Vec<&str> = lines.iter().filter_map(|(_, d)| *d).collect();
    let data = (!data.is_empty())
        .then(|| masked_data(m, fields, &data.join("\n")))
        .flatten()
        .map(|(d, k)| {
            n += k;
            rewrite = true;
            d
        });
    let others: Vec<Option<String>> = lines
        .iter()
        .map(|(l, d)| {
            d.is_none().then(|| m.mask_text(l)).flatten().map(|(s, k)| {
                n += k as u64;
                s
            })
        })
        .collect();
    if n == 0 && !rewrite {
        return None;
    }
    let mut out = String::with_capacity(event.len());
    let mut data_written = false;
    for ((line, d), masked) in lines.iter().zip(&others) {
        match (d, &data) {
            // The masked data takes the place of the event's data lines, at the first.
            (Some(_), Some(new)) => {
                if !std::mem::replace(&mut data_written, true) {
                    for l in new.split('\n') {
                        out.push_str("data: ");
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
            _ => {
                out.push_str(masked.as_deref().unwrap_or(line));
                out.push('\n');
            }
        }
    }
    out.push('\n');
    Some((out.into_bytes(), n))
}

/// The data of an event masked: as JSON (in place) when it is JSON, else by the
/// detectors. `None`: unchanged.
fn masked_data(m: &Masker, fields: &[FieldRule], data: &str) -> Option<(String, u64)> {
    let json = matches!(data.trim_start().as_bytes().first(), Some(b'{' | b'['));
    if json {
        if let Ok(masked) = m.mask_json_text(data.as_bytes(), fields) {
            // UTF-8 in, UTF-8 replacements out.
            return masked.map(|(out, k)| {
                let text = String::from_utf8(out)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                (text, k as u64)
            });
        }
    }
    m.mask_text(data).map(|(s, k)| (s, k as u64))
}

/// The lines of an event without their ends (LF, CRLF or CR).
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest.find(['\r', '\n']).unwrap_or(rest.len());
        lines.push(&rest[..cut]);
        let skip = if rest[cut..].starts_with("\r\n") {
            2
        } else {
            1.min(rest.len() - cut)
        };
        rest = &rest[cut + skip..];
    }
    lines
}

/// The value of a `data` line (`data: v`, `data:v`, or `data` alone), else `None`.
fn data_value(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("data")?;
    if rest.is_empty() {
        return Some("");
    }
    let v = rest.strip_prefix(':')?;
    Some(v.strip_prefix(' ').unwrap_or(v))
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
