//! Classifying a query text for the session (cached, by literal shape, bounded by
//! `max_query_bytes`) and the audit facts of its statements.

use super::decide;
use super::*;

/// Longest query text classified unless the resource says otherwise (`max_query_bytes`).
pub(super) const DEFAULT_MAX_QUERY: usize = 128 * 1024;

/// Texts longer than this are parsed one at a time, off the async worker.
pub(super) const LARGE_QUERY: usize = 16 * 1024;

/// Classifies a query text. Texts that differ only in numeric literals share one cache
/// entry (`shape`): `true` when the result is of the shape (one statement, whose text is
/// then `sql` itself, not the shape's). Texts over `max` bytes are not parsed (denied):
/// the parser's memory grows with the text, up to ~1 KB per byte of dense SQL.
pub(super) fn classify(
    sql: &str,
    scs: bool,
    max: usize,
) -> (Arc<std::result::Result<Classification, SqlError>>, bool) {
    if sql.len() > max {
        let detail = format!(
            "the query text is {} bytes, over the {max} bytes the interceptor classifies (split it, or raise max_query_bytes of the resource)",
            sql.len()
        );
        let e = SqlError::Unknown {
            kind: "query".into(),
            detail,
        };
        return (Arc::new(Err(e)), false);
    }
    if sql.len() > LARGE_QUERY {
        // One large parse at a time, and not on the worker that serves other sessions.
        static LARGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let run = || {
            let _one = LARGE.lock().unwrap_or_else(|e| e.into_inner());
            classify_text(sql, scs)
        };
        return match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        };
    }
    classify_text(sql, scs)
}

pub(super) fn classify_text(
    sql: &str,
    scs: bool,
) -> (Arc<std::result::Result<Classification, SqlError>>, bool) {
    let options = ParseOptions {
        standard_conforming_strings: scs,
    };
    let classifier = &global().classifier;
    if scs {
        if let Some(std::borrow::Cow::Owned(shape)) =
            crate::protocols::postgres::shape::literal_shape(sql)
        {
            let cls = classifier.classify_with(&shape, options);
            if matches!(cls.as_ref(), Ok(c) if c.statements.len() == 1) {
                return (cls, true);
            }
        }
    }
    (classifier.classify_with(sql, options), false)
}

/// The audit facts of each statement of a decided text.
pub(super) fn stmt_ctxs(sql: &str, checked: &Checked, shaped: bool) -> Vec<StmtCtx> {
    let decision = Arc::new(checked.decision.clone());
    let one = |text: String, summary: String| StmtCtx {
        text,
        summary: summary.into(),
        decision: decision.clone(),
    };
    let summary = |s: &Statement| crate::sql::summarize(std::slice::from_ref(s));
    if shaped && checked.statements.len() == 1 {
        let s = &checked.statements[0];
        return vec![one(decide::shaped_text(sql), summary(s))];
    }
    if checked.statements.is_empty() {
        return vec![one(audit_text(sql), checked.summary.clone())];
    }
    checked
        .statements
        .iter()
        .map(|s| one(s.text.clone(), summary(s)))
        .collect()
}

/// The audit text of a query string that was not classified (too long, unparsable): up to
/// 16 KiB of it, then its length and SHA-256 — an agent sending 20 MB texts must not make
/// the audit log grow by as much.
pub(super) fn audit_text(sql: &str) -> String {
    const MAX: usize = 16 * 1024;
    if sql.len() <= MAX {
        return sql.to_owned();
    }
    use sha2::Digest;
    let mut end = MAX;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    let digest = sha2::Sha256::digest(sql.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}… ({} bytes in all, sha256 {hex})",
        &sql[..end],
        sql.len()
    )
}
