//! Bounds on what held commands may cost the daemon: how many may wait at once (per agent
//! session, per uid, in all; beyond, a command to hold is denied at once), and how much of
//! a command's text a request keeps.

use sha2::Digest;

use super::HoldRequest;

/// Requests of one agent session waiting at once.
pub const MAX_PENDING_PER_SESSION: usize = 16;
/// Requests of one uid waiting at once.
pub const MAX_PENDING_PER_UID: usize = 64;
/// Requests waiting at once in the daemon.
pub const MAX_PENDING: usize = 1024;
/// Bytes of a command's text a request keeps (then its length and SHA-256, like the audit
/// of long statements).
pub const MAX_COMMAND: usize = 16 * 1024;

/// The SHA-256 of `b` in lower-case hex.
pub fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `text`, or its first `MAX_COMMAND` bytes followed by a visible mark of the cut, with how
/// much is not shown, its whole length and SHA-256.
pub fn capped(text: &str) -> String {
    if text.len() <= MAX_COMMAND {
        return text.to_owned();
    }
    let mut end = MAX_COMMAND;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut: {} more bytes not shown; {} bytes in all, sha256 {}]",
        &text[..end],
        text.len() - end,
        text.len(),
        sha256_hex(text.as_bytes())
    )
}

/// `req` as kept while it waits: its command capped, its fingerprint (which may hold a
/// whole statement) replaced by a digest of it (an empty one stays empty: no grant).
pub fn shrink(req: &mut HoldRequest) {
    if req.command.len() > MAX_COMMAND {
        req.command = capped(&req.command);
    }
    if !req.fingerprint.is_empty() {
        req.fingerprint = sha256_hex(req.fingerprint.as_bytes());
    }
}

/// Why `req` may not wait besides `pending`, if it may not.
pub fn too_many<'a>(
    pending: impl ExactSizeIterator<Item = &'a HoldRequest>,
    req: &HoldRequest,
) -> Option<String> {
    let all = pending.len();
    let uid = req.identity.get("uid");
    let (mut session, mut same_uid) = (0, 0);
    for p in pending {
        session += usize::from(p.session == req.session);
        same_uid += usize::from(uid.is_some() && p.identity.get("uid") == uid);
    }
    let what = if session >= MAX_PENDING_PER_SESSION {
        format!("{session} from this session (at most {MAX_PENDING_PER_SESSION})")
    } else if same_uid >= MAX_PENDING_PER_UID {
        format!("{same_uid} from this uid (at most {MAX_PENDING_PER_UID})")
    } else if all >= MAX_PENDING {
        format!("{all} in all (at most {MAX_PENDING})")
    } else {
        return None;
    };
    Some(format!(
        "too many requests waiting for approval: {what}; this command was refused at once, \
         nothing was sent upstream (let the waiting ones be decided first)"
    ))
}
