//! Token authentication (OIDC/JWT): agent identities bound with `run --token` and the
//! approvers of held commands. `jwt` checks a token against the configured issuers;
//! `jwks` loads their keys; `binding` keeps the token of a daemon instance's agents.

pub mod binding;
pub mod jwks;
pub mod jwt;

pub use binding::TokenBinding;
pub use jwt::{Claims, Issuers, TokenError};
