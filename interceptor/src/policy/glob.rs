//! `Pattern` (a compiled glob for cgroup, exe and comm) and `CommPattern`.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::net::{string_schema, StrVisitor};

/// A glob, compiled when the policy is parsed.
///
/// Syntax (globset): `*` matches any run of characters except `/`, `**`
/// matches across `/` (`/a/**` matches everything below `/a`), `?` one
/// character, `[abc]` / `[!abc]` a class, `{x,y}` alternatives, `\` escapes.
/// A pattern must match the whole string.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty glob pattern".to_owned());
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid glob {text:?}: {}", e.kind()))?;
        Ok(Pattern {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no glob metacharacters (matches one exact string).
    pub fn is_literal(&self) -> bool {
        !self
            .text
            .bytes()
            .any(|b| matches!(b, b'*' | b'?' | b'[' | b'{' | b'\\'))
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

// Compiled inside the visitor so a bad glob is reported with its line.
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("a glob pattern", Pattern::parse))
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> String {
        "Glob".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        string_schema(
            "A glob matched against the whole string: `*` does not cross '/', `**` does, `?` \
             is one character, `[abc]` a class, `{a,b}` alternatives.",
            None,
        )
    }
}

/// Linux truncates `comm` to 15 bytes (TASK_COMM_LEN 16 with the NUL).
pub const COMM_MAX: usize = 15;

/// A glob on the process `comm`. A literal longer than 15 bytes is rejected:
/// it could never match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommPattern(pub Pattern);

impl CommPattern {
    pub fn parse(text: &str) -> Result<CommPattern, String> {
        let p = Pattern::parse(text)?;
        if p.is_literal() && text.len() > COMM_MAX {
            return Err(format!(
                "comm {text:?} is {} bytes but the kernel truncates comm to {COMM_MAX} bytes, \
                 so it can never match (match on `exe` instead, or write {:?})",
                text.len(),
                &text[..text.floor_char_boundary(COMM_MAX)]
            ));
        }
        Ok(CommPattern(p))
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

impl fmt::Display for CommPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for CommPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CommPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(
            "a glob pattern on the comm name",
            CommPattern::parse,
        ))
    }
}

impl JsonSchema for CommPattern {
    fn schema_name() -> String {
        "CommGlob".to_owned()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        string_schema(
            "A glob on the process name (comm, at most 15 bytes; longer names are truncated \
             by the kernel): `*` any run of characters, `?` one character, `[abc]` a class.",
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pat: &str, s: &str) -> bool {
        Pattern::parse(pat).unwrap().is_match(s)
    }

    #[test]
    fn path_globs() {
        assert!(m("/interceptor/**", "/interceptor/run-1234"));
        assert!(m("/interceptor/**", "/interceptor/a/b/c"));
        assert!(!m("/interceptor/**", "/other/run-1"));
        assert!(!m("/interceptor/**", "/interceptor-x/run"));
        assert!(m("/interceptor/*", "/interceptor/run-1"));
        assert!(!m("/interceptor/*", "/interceptor/a/b"));
        assert!(m("/interceptor/run-*", "/interceptor/run-42"));
        assert!(m("/**", "/user.slice/x.scope"));
        assert!(m("/usr/bin/python3*", "/usr/bin/python3.12"));
        assert!(m("/usr/bin/python3*", "/usr/bin/python3"));
        assert!(!m("/usr/bin/python3*", "/usr/local/bin/python3"));
        assert!(m("/usr/{bin,local/bin}/python3", "/usr/local/bin/python3"));
        assert!(m("**/python3", "/opt/venv/bin/python3"));
        // whole-string match
        assert!(!m("/usr/bin/python3", "/usr/bin/python3.12"));
        assert!(!m("/interceptor/**", "/interceptor"));
        assert!(!m("/a?b", "/a/b"));
        assert!(m("/a?b", "/axb"));
        assert!(m("/a\\*", "/a*"));
        assert!(!m("/a\\*", "/ab"));
    }

    #[test]
    fn comm_globs() {
        let c = CommPattern::parse("python3*").unwrap();
        assert!(c.is_match("python3"));
        assert!(c.is_match("python3.12"));
        assert!(!c.is_match("node"));
        assert!(CommPattern::parse("[pP]ython?")
            .unwrap()
            .is_match("Python3"));
        let err = CommPattern::parse("a-very-long-process-name").unwrap_err();
        assert!(err.contains("truncates comm to 15 bytes"), "{err}");
        assert!(CommPattern::parse("a-very-long-process-*").is_ok());
    }

    #[test]
    fn bad_globs() {
        assert!(Pattern::parse("").unwrap_err().contains("empty glob"));
        let err = Pattern::parse("/usr/[bin").unwrap_err();
        assert!(err.starts_with("invalid glob \"/usr/[bin\": "), "{err}");
        assert!(Pattern::parse("{a,b").unwrap_err().contains("invalid glob"));
    }
}
