//! Just-in-time approvals: a command held by a `hold` rule waits in the `Registry` until
//! an authenticated approver decides, or it times out. Approvers act through the control
//! socket (`interceptor approvals …`) or the daemon's HTTP API (`api`); the optional
//! webhook (`webhook`) is told about every request and decision. Every step is an audit
//! record.

pub mod api;
pub mod client;
pub mod gone;
pub mod limits;
pub mod outcome;
pub mod registry;
pub mod webhook;

pub use outcome::token_recheck;
pub use registry::{
    Approver, DecideError, Decided, HoldRequest, Opened, Outcome, Registry, RequestView, Scope,
    Ticket,
};
