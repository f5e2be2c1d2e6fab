//! The hash chain: every record line is `{"seq":N,"prev":"<hex>",…fields…,"hash":"<hex>"}`
//! where `hash = sha256(body)` and `body` is the line without its `,"hash":…` member, i.e.
//! `{"seq":N,"prev":"<hex>",…fields…}` exactly as written (the canonical bytes are the bytes
//! on disk: nothing is re-serialised to check a record).

use sha2::{Digest, Sha256};

/// `prev` of the first record of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

const HASH_KEY: &str = ",\"hash\":\"";

pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Chains one serialised record (a JSON object) after `prev`: returns the full line (with
/// `\n`) and its hash.
pub fn seal(seq: u64, prev: &[u8; 32], record_json: &str) -> (String, [u8; 32]) {
    let fields = record_json
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or("");
    let mut body = String::with_capacity(record_json.len() + 100);
    body.push_str("{\"seq\":");
    body.push_str(&seq.to_string());
    body.push_str(",\"prev\":\"");
    body.push_str(&hex(prev));
    body.push('"');
    if !fields.trim().is_empty() {
        body.push(',');
        body.push_str(fields);
    }
    body.push('}');
    let hash: [u8; 32] = Sha256::digest(body.as_bytes()).into();
    body.pop();
    body.push_str(HASH_KEY);
    body.push_str(&hex(&hash));
    body.push_str("\"}\n");
    (body, hash)
}

/// A line taken apart: what it claims and whether its own hash holds.
#[derive(Debug, Clone)]
pub struct Opened {
    pub seq: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
    /// sha256(body) == hash.
    pub hash_ok: bool,
    /// The daemon instance the record names (`instance`, or `chain` in `segment_open`).
    pub owner: Option<String>,
}

/// A member that is text, or `None` (whatever else it holds).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(
        match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        },
    )
}

/// Parses one line (without `\n`). `Err` says why it is not a chained record at all.
pub fn open(line: &str) -> Result<Opened, String> {
    let idx = line
        .rfind(HASH_KEY)
        .ok_or("no \"hash\" member at the end of the line")?;
    let tail = &line[idx + HASH_KEY.len()..];
    let hash_hex = tail
        .strip_suffix("\"}")
        .ok_or("the line does not end with the \"hash\" member")?;
    let hash = unhex32(hash_hex).ok_or("\"hash\" is not 64 hex digits")?;
    let mut body = String::with_capacity(idx + 1);
    body.push_str(&line[..idx]);
    body.push('}');
    let computed: [u8; 32] = Sha256::digest(body.as_bytes()).into();
    #[derive(serde::Deserialize)]
    struct Head {
        seq: u64,
        prev: String,
        #[serde(default, deserialize_with = "text")]
        instance: Option<String>,
        #[serde(default, rename = "type", deserialize_with = "text")]
        kind: Option<String>,
        #[serde(default, deserialize_with = "text")]
        chain: Option<String>,
    }
    let head: Head = serde_json::from_str(&body).map_err(|e| format!("not a JSON record: {e}"))?;
    let prev = unhex32(&head.prev).ok_or("\"prev\" is not 64 hex digits")?;
    Ok(Opened {
        seq: head.seq,
        prev,
        hash,
        hash_ok: computed == hash,
        owner: match head.kind.as_deref() {
            Some("segment_open") => head.chain,
            _ => head.instance,
        },
    })
}
