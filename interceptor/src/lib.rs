//! Transparent least-privilege interceptor for AI agents.
#![forbid(unsafe_op_in_unsafe_fn)]
