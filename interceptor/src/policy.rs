//! Egress policy: YAML model, loader/validator, pure evaluator and JSON schema.
//!
//! A policy names *identities* (selectors on the connecting process: cgroup,
//! uid, gid, exe, comm) and an ordered list of *rules* (identity, destinations
//! and allow or deny). `evaluate` returns the decision of the first matching
//! rule, or the policy default. See `policies/README.md` for the format.
//!
//! Layout: `model` (the serde/JSON-schema document), `ports`, `net`, `glob`
//! (value types validated while parsing), `de` (serde helpers that keep error
//! locations), `locate` (locations of errors found after parsing), `load`
//! (`Policy`: compile, load, DNS), `eval` (`evaluate`), `error`.

mod approvals;
mod de;
mod error;
mod eval;
mod glob;
mod http;
mod http_eval;
mod load;
mod locate;
mod model;
mod net;
mod pg;
mod ports;
mod scalars;
mod sockets;
mod sql_eval;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_http;
#[cfg(test)]
mod tests_sql;

pub use approvals::{ApprovalsDoc, Approver, AuthDoc, CompiledApprovals, Issuer, Webhook};
pub use error::PolicyError;
pub use eval::{
    evaluate, AgentToken, ConnRequest, Decision, Subject, Verdict, OWN_LISTENER_REASON,
    TOKEN_EXPIRED_REASON,
};
pub use glob::{CommPattern, Pattern};
pub use http::{
    HeaderMatch, HttpRule, HttpService, InjectHeader, TlsHandling, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MASK_BYTES,
};
pub use http_eval::{evaluate_http, resolve_segments, HttpDecision, HttpEffects, HttpRequest};
pub use load::{NameResolution, Policy};
pub use model::{Destination, Identity, PolicyDoc, Rule, DEFAULT_DNS_REFRESH_SECS};
pub use net::{Cidr, HostName};
pub use pg::{
    PostgresResource, Resource, ResourceRef, SqlAction, SqlOperation, SqlRule, TlsMode,
    DEFAULT_PG_PORT,
};
pub use ports::PortSet;
pub use scalars::{Action, IdList, IdentityRef, Name, Version};
pub use sockets::{
    dns_resolvers, evaluate_dns, socket_bits, udp_entries, Dns, SocketGrant, Sockets,
    UdpDestination, DNS_PORT,
};
pub use sql_eval::{evaluate_sql, SqlDecision, SqlRequest, SqlStatement};

/// The JSON schema (draft 7) of the policy format (`PolicyDoc`),
/// pretty-printed, with a trailing newline. `policies/policy.schema.json`
/// holds a copy. Optional fields are described without a `null` alternative:
/// leave a field out rather than writing `~`.
pub fn json_schema() -> String {
    let schema = schemars::gen::SchemaSettings::draft07()
        .with(|s| s.option_add_null_type = false)
        .into_generator()
        .into_root_schema_for::<PolicyDoc>();
    let schema = model::refine_schema(schema);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    s.push('\n');
    s
}
