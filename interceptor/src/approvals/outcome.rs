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

/// After an approval, before the command goes on: whether the agent's token binding still
/// speaks for the agent that asked. `held`: the token subject when the command was held;
/// `now`: the binding as it is now (`TokenBinding::view`, which checks expiry). `Some`:
/// the reason to deny the approved command instead (its token expired, or was replaced by
/// another subject's, while it waited).
pub fn token_recheck(
    held: Option<&str>,
    now: Option<&crate::policy::AgentToken>,
) -> Option<String> {
    let now = now?;
    if now.expired {
        return Some(format!(
            "{} (it expired while the command waited for approval; nothing was sent upstream)",
            crate::policy::TOKEN_EXPIRED_REASON
        ));
    }
    (held != Some(now.subject.as_str())).then(|| {
        format!(
            "the agent token changed while the command waited for approval (subject {} then, {} now); nothing was sent upstream",
            held.unwrap_or("none"),
            now.subject
        )
    })
}
