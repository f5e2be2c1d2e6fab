//! Transparent least-privilege interceptor for AI agents: eBPF capture of every TCP connect
//! of a cgroup, process identity, policy decisions, relay and audit.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod approvals;
pub mod attach;
pub mod audit;
pub mod auth;
pub mod cgroup;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod ebpf;
pub mod harden;
pub mod http_client;
pub mod identity;
pub mod limits;
pub mod masking;
pub mod metrics;
pub mod outside;
pub mod policy;
pub mod protocols;
pub mod proxy;
pub mod run;
pub mod sockdiag;
pub mod sql;
pub mod term;
