//! `PolicyError`: every way loading a policy can fail, with file, line and column.

use std::fmt;

/// An error found while reading, parsing or validating a policy.
///
/// `Display` renders it the way `policy check` prints it to users:
/// `FILE:LINE:COLUMN: PATH: reason`, e.g.
/// `policies/x.yaml:7:11: rules[0].to[0].cidr: "10.0.0.0/33" is not a valid CIDR (prefix length must be 0..=32 for IPv4)`.
/// Line and column are 1-based and omitted when unknown.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("{origin}: cannot read policy: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The document is not a valid policy (YAML syntax, type, unknown field,
    /// bad value, cross-reference, ...).
    #[error("{}: {message}", Where(.origin, *.line, *.column))]
    Invalid {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

impl PolicyError {
    /// 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { line, .. } => *line,
        }
    }

    /// 1-based column of the problem, when known.
    pub fn column(&self) -> Option<usize> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { column, .. } => *column,
        }
    }

    /// Where the policy came from (file path or the origin given to `from_str`).
    pub fn origin(&self) -> &str {
        match self {
            PolicyError::Read { origin, .. } | PolicyError::Invalid { origin, .. } => origin,
        }
    }

    /// The reason without the `FILE:LINE:COLUMN: ` prefix.
    pub fn message(&self) -> String {
        match self {
            PolicyError::Read { source, .. } => format!("cannot read policy: {source}"),
            PolicyError::Invalid { message, .. } => message.clone(),
        }
    }

    pub(crate) fn invalid(origin: &str, pos: Option<(usize, usize)>, message: String) -> Self {
        PolicyError::Invalid {
            origin: origin.to_owned(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            message,
        }
    }

    /// Converts a serde_yaml error. serde_yaml knows the location of syntax
    /// errors, type errors, unknown fields and of every error raised inside a
    /// `Deserialize` impl (it fills in the mark of the value being
    /// deserialized); its `Display` appends " at line L column C", which we
    /// strip because the location goes in front.
    pub(crate) fn from_yaml(origin: &str, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        let loc = err.location();
        if let Some(loc) = &loc {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(i) = message.find(&suffix) {
                message.replace_range(i..i + suffix.len(), "");
            }
        }
        PolicyError::Invalid {
            origin: origin.to_owned(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message,
        }
    }
}

/// Renders `origin[:line[:column]]`.
struct Where<'a>(&'a str, Option<usize>, Option<usize>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        if let Some(line) = self.1 {
            write!(f, ":{line}")?;
            if let Some(col) = self.2 {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_location() {
        let e = PolicyError::invalid("p.yaml", Some((7, 11)), "bad".into());
        assert_eq!(e.to_string(), "p.yaml:7:11: bad");
        assert_eq!(e.line(), Some(7));
        assert_eq!(e.column(), Some(11));
        let e = PolicyError::invalid("p.yaml", None, "empty".into());
        assert_eq!(e.to_string(), "p.yaml: empty");
        let e = PolicyError::Read {
            origin: "nope.yaml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(e.to_string().starts_with("nope.yaml: cannot read policy: "));
    }

    #[test]
    fn yaml_location_is_moved_to_the_front() {
        let err = serde_yaml::from_str::<u16>("\n  70000").unwrap_err();
        let e = PolicyError::from_yaml("x.yaml", &err);
        assert_eq!(e.line(), Some(2));
        assert_eq!(e.column(), Some(3));
        assert!(!e.message().contains(" at line"), "{e}");
        assert!(e.to_string().starts_with("x.yaml:2:3: "), "{e}");
    }
}
