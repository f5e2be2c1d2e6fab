//! `MaskingError`: what can go wrong compiling masking rules or loading the hash key.

use std::path::PathBuf;

/// An invalid masking section or an unusable key.
#[derive(Debug, thiserror::Error)]
pub enum MaskingError {
    /// A column `match` that is not a valid glob.
    #[error("masking column rule `{pattern}`: {reason}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A JSON field path that cannot be parsed.
    #[error("masking field path `{path}`: {reason}")]
    FieldPath {
        /// The path as written.
        path: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The same detector kind listed twice.
    #[error("masking detector `{0}` is listed more than once")]
    DuplicateDetector(&'static str),
    /// Both `key_env` and `key_file`.
    #[error("masking: give `key_env` or `key_file`, not both")]
    TwoKeySources,
    /// `key_env` names a variable that is unset, empty or not UTF-8.
    #[error("masking key: environment variable {var} is {reason}")]
    KeyEnv {
        /// The variable.
        var: String,
        /// "not set", "empty", ...
        reason: &'static str,
    },
    /// `key_file` cannot be read.
    #[error("masking key: cannot read {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A configured key shorter than 16 bytes.
    #[error("masking key from {0} is shorter than 16 bytes")]
    KeyTooShort(String),
    /// The system random source failed while generating a key.
    #[error("masking key: cannot read /dev/urandom: {0}")]
    Random(std::io::Error),
}
