//! How a held command ended, and what the agent is told.

use std::time::Duration;

/// How a held command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved {
        by: String,
        reason: Option<String>,
        /// The id under which this use of a standing grant was recorded (a command that
        /// waited has its ticket's id instead).
        grant_use: Option<String>,
    },
    Denied {
        by: String,
        reason: Option<String>,
    },
    Expired {
        after: Duration,
    },
    /// The daemon is stopping.
    Abandoned,
    /// The agent gave up before a decision (cancelled, hung up): `why`.
    Withdrawn {
        why: String,
    },
    /// Not held at all: too many requests wait already (`limits`).
    Refused {
        why: String,
    },
}

impl Outcome {
    /// The id recorded for a command a standing grant approved at once.
    pub fn grant_use(&self) -> Option<&str> {
        match self {
            Outcome::Approved { grant_use, .. } => grant_use.as_deref(),
            _ => None,
        }
    }

    /// Whether the held command may go on, and the reason given to the agent and the
    /// audit. `id`: the request (`None` for a standing grant).
    pub fn verdict(&self, id: Option<&str>) -> (crate::policy::Verdict, String) {
        use crate::policy::Verdict;
        let id = id.unwrap_or("(standing grant)");
        let why = |r: &Option<String>| r.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
        match self {
            Outcome::Approved { by, reason, .. } => {
                (Verdict::Allow, format!("approved by {by}{}", why(reason)))
            }
            Outcome::Denied { by, reason } => (
                Verdict::Deny,
                format!("approval request {id} denied by {by}{}", why(reason)),
            ),
            Outcome::Expired { after } => (
                Verdict::Deny,
                format!(
                    "approval request {id} was not decided within {}s",
                    after.as_secs()
                ),
            ),
            Outcome::Abandoned => (
                Verdict::Deny,
                format!(
                    "approval request {id} abandoned: the interceptor is stopping; nothing was sent upstream"
                ),
            ),
            Outcome::Refused { why } => (Verdict::Deny, why.clone()),
            Outcome::Withdrawn { why } => (
                Verdict::Deny,
                format!("approval request {id} withdrawn: {why}; nothing was sent upstream"),
            ),
        }
    }
}
