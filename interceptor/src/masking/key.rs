//! The HMAC key of `strategy: hash`: from `key_env`, `key_file`, or random per daemon.

use std::io::Read;

use super::model::MaskingDoc;
use super::MaskingError;

/// Shortest configured key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// Length of generated keys, in bytes.
pub const RANDOM_KEY_LEN: usize = 32;

impl MaskingDoc {
    /// The key for `strategy: hash`: the bytes of the environment variable
    /// `key_env`, or of the file `key_file` (one trailing newline dropped),
    /// each at least 16 bytes; with neither, 32 random bytes (pseudonyms are
    /// then stable only for the life of the process).
    pub fn load_key(&self) -> Result<Vec<u8>, MaskingError> {
        match (&self.key_env, &self.key_file) {
            (Some(_), Some(_)) => Err(MaskingError::TwoKeySources),
            (Some(var), None) => {
                let key = match std::env::var_os(var) {
                    None => {
                        return Err(MaskingError::KeyEnv {
                            var: var.clone(),
                            reason: "not set",
                        })
                    }
                    Some(v) if v.is_empty() => {
                        return Err(MaskingError::KeyEnv {
                            var: var.clone(),
                            reason: "empty",
                        })
                    }
                    Some(v) => std::os::unix::ffi::OsStringExt::into_vec(v),
                };
                check_len(key, || format!("environment variable {var}"))
            }
            (None, Some(path)) => {
                let mut key = std::fs::read(path).map_err(|source| MaskingError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                if key.last() == Some(&b'\n') {
                    key.pop();
                    if key.last() == Some(&b'\r') {
                        key.pop();
                    }
                }
                check_len(key, || path.display().to_string())
            }
            (None, None) => random_key(),
        }
    }
}

fn check_len(key: Vec<u8>, from: impl FnOnce() -> String) -> Result<Vec<u8>, MaskingError> {
    if key.len() < MIN_KEY_LEN {
        Err(MaskingError::KeyTooShort(from()))
    } else {
        Ok(key)
    }
}

/// 32 bytes from the kernel's random source.
pub fn random_key() -> Result<Vec<u8>, MaskingError> {
    let mut key = vec![0u8; RANDOM_KEY_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(MaskingError::Random)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let doc = MaskingDoc::default();
        let a = doc.load_key().unwrap();
        let b = doc.load_key().unwrap();
        assert_eq!(a.len(), RANDOM_KEY_LEN);
        assert_ne!(a, b);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let doc = MaskingDoc {
            key_file: Some(path.clone()),
            ..MaskingDoc::default()
        };
        assert_eq!(doc.load_key().unwrap(), b"0123456789abcdef0123");

        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(doc.load_key(), Err(MaskingError::KeyTooShort(_))));

        let doc = MaskingDoc {
            key_env: Some("INTERCEPTOR_MASK_KEY_SURELY_UNSET_7f3a".into()),
            ..MaskingDoc::default()
        };
        assert!(matches!(doc.load_key(), Err(MaskingError::KeyEnv { .. })));

        let doc = MaskingDoc {
            key_env: Some("X".into()),
            key_file: Some(path),
            ..MaskingDoc::default()
        };
        assert!(matches!(doc.load_key(), Err(MaskingError::TwoKeySources)));
    }
}
