//! The token bound to a daemon instance's agents (`run --token FILE`, `--token-env VAR`,
//! `attach --token …`): verified when bound, checked for expiry on every connection and
//! command, and replaceable while the agent runs (`interceptor token set`, or by rewriting
//! the token file: an expired binding re-reads its file).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use super::jwt::{unix_now, Claims, Issuers, TokenError};
use crate::policy::AgentToken;

#[derive(Debug)]
pub struct TokenBinding {
    file: Option<PathBuf>,
    state: RwLock<State>,
}

#[derive(Debug, Clone)]
struct State {
    claims: Claims,
    mtime: Option<SystemTime>,
}

fn mtime(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl TokenBinding {
    /// Verifies `token` and binds it. `file` is where it came from (re-read on expiry).
    pub fn new(issuers: &Issuers, token: &str, file: Option<PathBuf>) -> Result<Self, TokenError> {
        let claims = issuers.verify(token)?;
        let mtime = file.as_ref().and_then(mtime);
        Ok(TokenBinding {
            file,
            state: RwLock::new(State { claims, mtime }),
        })
    }

    /// Reads and binds the token in `file`.
    pub fn from_file(issuers: &Issuers, file: PathBuf) -> Result<Self, String> {
        let token = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read token file {}: {e}", file.display()))?;
        TokenBinding::new(issuers, &token, Some(file.clone()))
            .map_err(|e| format!("token file {}: {e}", file.display()))
    }

    pub fn claims(&self) -> Claims {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .claims
            .clone()
    }

    /// Replaces the bound token with a fresh one (same subject not required: whoever
    /// supplies the token speaks for the agent, as at `run`).
    pub fn set(&self, issuers: &Issuers, token: &str) -> Result<Claims, TokenError> {
        let claims = issuers.verify(token)?;
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.claims = claims.clone();
        Ok(claims)
    }

    /// The binding as the evaluators see it, now. An expired binding first re-reads its
    /// file when the file changed since it was read.
    pub fn view(&self, issuers: &Issuers) -> AgentToken {
        let now = unix_now();
        let st = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        if st.claims.expired_at(now) {
            if let Some(file) = &self.file {
                let m = mtime(file);
                if m.is_some() && m != st.mtime {
                    match std::fs::read_to_string(file)
                        .map_err(|e| e.to_string())
                        .and_then(|t| issuers.verify(&t).map_err(|e| e.to_string()))
                    {
                        Ok(claims) => {
                            tracing::info!(file = %file.display(), subject = %claims.subject, "agent token renewed from its file");
                            let fresh = State { claims, mtime: m };
                            *self.state.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                            return agent(&fresh.claims, now);
                        }
                        Err(e) => {
                            tracing::warn!(file = %file.display(), error = %e, "agent token file changed but its token is not valid");
                            self.state.write().unwrap_or_else(|e| e.into_inner()).mtime = m;
                        }
                    }
                }
            }
        }
        agent(&st.claims, now)
    }
}

fn agent(c: &Claims, now: u64) -> AgentToken {
    AgentToken {
        subject: c.subject.clone(),
        groups: c.groups.clone(),
        expired: c.expired_at(now),
    }
}
