//! Application protocols the proxy speaks on both sides (instead of splicing bytes), for
//! destinations the policy declares as resources of that protocol.

pub mod http;
pub mod postgres;
