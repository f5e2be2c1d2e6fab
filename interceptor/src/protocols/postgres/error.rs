//! `PgError`: every way a PostgreSQL session through the proxy can fail.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("client sent a {len}-byte message, more than the {max}-byte limit (raise `max_message_bytes` of the resource if this is legitimate)")]
    TooLarge { len: usize, max: usize },
    #[error("malformed {what} message: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("unsupported protocol request: {0}")]
    Unsupported(String),
    #[error("upstream {resource}: {message}")]
    Upstream { resource: String, message: String },
    #[error("upstream {resource} rejected the login: {message} (check the resource's user and secret in the policy)")]
    UpstreamAuth { resource: String, message: String },
    #[error("cannot read the secret of resource {resource}: {message}")]
    Secret { resource: String, message: String },
    #[error("upstream TLS for {resource}: {message}")]
    Tls { resource: String, message: String },
    #[error("the audit store cannot record this command, so it was not sent (fail closed): {0}")]
    Audit(String),
    #[error("connection closed by {0}")]
    Closed(&'static str),
}

impl PgError {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        PgError::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = PgError> = std::result::Result<T, E>;
