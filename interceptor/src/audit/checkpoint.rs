//! Signed checkpoints of closed segments, and the daemon's ed25519 signing key.
//!
//! The key lives in `<state dir>/audit-signing.key` (32 secret bytes, hex, mode 0600),
//! created on first use; its public half is copied to `<audit dir>/signing.pub` for
//! convenience, but an auditor should verify against a copy exported once with
//! `interceptor audit key export` and kept elsewhere (whoever can rewrite the audit
//! directory can also replace the copy there).

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{
    chain::{hex, unhex32},
    AuditError,
};

pub const KEY_FILE: &str = "audit-signing.key";
pub const PUB_FILE: &str = "signing.pub";

/// What a checkpoint vouches for: one closed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub chain: String,
    pub segment: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// `prev` of the segment's first record (links the segment to the one before).
    pub first_prev: String,
    pub last_hash: String,
    pub bytes: u64,
    pub file_sha256: String,
    pub closed_at: String,
    pub public_key: String,
    /// Signed by a restarted daemon from the file as it found it (after a crash, or when
    /// signing at close had failed), not from what it had written itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed_at_recovery: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub body: Body,
    pub signature: String,
}

pub fn path_for(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("checkpoint.json")
}

fn key_err(path: &Path, detail: impl std::fmt::Display) -> AuditError {
    AuditError::Key {
        path: path.into(),
        detail: detail.to_string(),
    }
}

/// Loads the signing key, creating it (0600) if absent.
pub fn load_or_create_key(state_dir: &Path) -> Result<SigningKey, AuditError> {
    let path = state_dir.join(KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => parse_key(&path, &s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(state_dir).map_err(|e| key_err(&path, e))?;
            let mut seed = [0u8; 32];
            fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
                .map_err(|e| key_err(&path, format!("reading /dev/urandom: {e}")))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| key_err(&path, e))?;
            f.write_all(format!("{}\n", hex(&seed)).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| key_err(&path, e))?;
            tracing::info!(key = %path.display(), "created the audit signing key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(key_err(&path, e)),
    }
}

/// Reads an existing key (for `audit key export`).
pub fn load_key(state_dir: &Path) -> Result<SigningKey, AuditError> {
    let path = state_dir.join(KEY_FILE);
    let s = fs::read_to_string(&path).map_err(|e| key_err(&path, e))?;
    parse_key(&path, &s)
}

fn parse_key(path: &Path, s: &str) -> Result<SigningKey, AuditError> {
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(key_err(
                path,
                "the key file is readable by others; chmod 600 it (and consider it leaked)",
            ));
        }
    }
    let seed = unhex32(s.trim()).ok_or_else(|| key_err(path, "not 64 hex digits"))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn public_hex(key: &VerifyingKey) -> String {
    hex(key.as_bytes())
}

pub fn parse_public(s: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&unhex32(s.trim())?).ok()
}

fn canonical(body: &Body) -> Vec<u8> {
    serde_json::to_vec(body).expect("checkpoint body serialises")
}

pub fn sign(key: &SigningKey, body: Body) -> Checkpoint {
    let sig = key.sign(&canonical(&body));
    Checkpoint {
        body,
        signature: hex(&sig.to_bytes()),
    }
}

/// Checks the signature against `key`.
pub fn check_signature(cp: &Checkpoint, key: &VerifyingKey) -> Result<(), String> {
    let raw: Vec<u8> = (0..cp.signature.len() / 2)
        .filter_map(|i| u8::from_str_radix(cp.signature.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect();
    let arr: [u8; 64] = raw
        .try_into()
        .map_err(|_| "the signature is not 128 hex digits".to_string())?;
    key.verify(&canonical(&cp.body), &Signature::from_bytes(&arr))
        .map_err(|_| "bad signature".to_string())
}

/// Writes a checkpoint next to its segment (0600, fsync'd, then the directory).
pub fn write(segment_path: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let path = path_for(segment_path);
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(cp)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Checkpoint, String> {
    let s = fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&s).map_err(|e| format!("not a checkpoint: {e}"))
}
