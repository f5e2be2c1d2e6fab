//! Command-line interface (clap). Parsing only; `main.rs` dispatches.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "interceptor",
    version,
    about = "Transparent least-privilege interceptor for AI agents"
)]
pub struct Cli {
    /// Where audit logs, control sockets and run state live.
    #[arg(
        long,
        global = true,
        env = "INTERCEPTOR_STATE_DIR",
        default_value = "/var/lib/interceptor"
    )]
    pub state_dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `interceptor=debug`.
    #[arg(long, global = true, env = "INTERCEPTOR_LOG", default_value = "info")]
    pub log: String,
    /// Proxy worker threads. Default: half the CPUs, at least one. On a small host the
    /// agent, its peers and the proxy share the cores, and waking a second worker for every
    /// hand-off between tasks cost more than it gained (README, Measurements).
    #[arg(long, global = true, env = "INTERCEPTOR_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a fresh cgroup whose every TCP connect goes through the interceptor.
    Run {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Run the command as this user (name or uid); the interceptor itself stays root.
        #[arg(long)]
        user: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Attach to an existing cgroup v2 and serve until SIGTERM (SIGHUP reloads the policy).
    Attach {
        /// The cgroup directory, e.g. /sys/fs/cgroup/agents.slice.
        #[arg(long)]
        cgroup: PathBuf,
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Connections the cgroup opened before attach bypass the proxy: `--strict` (=refuse)
        /// detaches and fails while any exist, `--strict=destroy` closes them; default: warn.
        #[arg(long, value_enum, default_value = "warn", num_args = 0..=1, default_missing_value = "refuse", require_equals = true)]
        strict: crate::attach::Strict,
    },
    /// Remove the kernel programs a crashed `attach` left pinned on a cgroup.
    /// Connects from the cgroup stay refused until then; afterwards they go out unchecked.
    Detach {
        #[arg(long)]
        cgroup: PathBuf,
    },
    /// Remove what crashed `run` instances left behind (pins, cgroups and their processes).
    Cleanup,
    /// Show attached cgroups, live connections and counters of the running daemons.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask running daemons to re-read their policy files.
    Reload,
    /// Check that this kernel can run the interceptor (cgroup2, bpffs, BTF, programs load);
    /// exit 3 with `unsupported: <reason>` if not.
    Doctor,
    /// Audit store tools: verify the hash chain and signatures, export the key.
    Audit {
        #[command(subcommand)]
        command: crate::audit::cmd::AuditCommand,
    },
    /// Sessions from the audit records: list, show, replay.
    Sessions {
        #[command(subcommand)]
        command: crate::audit::cmd::SessionsCommand,
    },
    /// The local CA that signs certificates for intercepted TLS (HTTP services).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Decide commands held by `hold` rules (asks every running daemon).
    Approvals {
        #[command(flatten)]
        auth: ApproverAuth,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// The agent token of running daemons.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ApproverAuth {
    /// File holding the approver's JWT.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The approver's JWT.
    #[arg(
        long,
        global = true,
        env = "INTERCEPTOR_APPROVER_TOKEN",
        hide_env_values = true
    )]
    pub approver_token: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests, then recently decided ones.
    List,
    /// One request.
    Show { id: String },
    /// Let the held command run.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Also approve the same statement shape from the same identity for this long
        /// (e.g. 15m).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        for_: Option<std::time::Duration>,
    },
    /// Refuse the held command (the agent gets the reason).
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Give running daemons a fresh agent token (e.g. before the old one expires).
    Set {
        /// File holding the new token.
        file: PathBuf,
        /// Only this daemon instance (run-PID or attach-NAME; see `interceptor status`).
        #[arg(long)]
        instance: Option<String>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    /// Policy file (YAML).
    #[arg(long)]
    pub policy: PathBuf,
    /// Port of the proxy listeners on 127.0.0.1 and [::1]; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub listen_port: u16,
    /// Plain audit file (JSON lines, no hash chain, no signatures); `-` for stdout.
    /// Default: the chained store (see --audit-dir).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    #[command(flatten)]
    pub audit: crate::audit::cmd::AuditArgs,
    /// Serve Prometheus metrics on this local address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Upstream connect timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Serve the approvals HTTP API (JSON) on this local address, e.g. 127.0.0.1:9470.
    #[arg(long)]
    pub approvals_listen: Option<SocketAddr>,
    /// Bind the agents to this OIDC/JWT token file (checked against `auth.issuers`); its
    /// subject and groups become part of their identity. Rewrite the file or use
    /// `interceptor token set` to renew it.
    #[arg(long, conflicts_with = "token_env")]
    pub token: Option<PathBuf>,
    /// Like --token, with the token in this environment variable of the daemon.
    #[arg(long)]
    pub token_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files; errors name file, line and reason.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the policy JSON Schema.
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA under <state dir>/ca (key 0600) unless it exists; print its path.
    Init {
        /// Replace an existing CA (clients must then trust the new one).
        #[arg(long)]
        force: bool,
    },
    /// Print the CA certificate (PEM) to stdout, to install in clients' trust stores.
    Export {
        /// Print the system roots followed by the CA (what `run` gives its child).
        #[arg(long)]
        bundle: bool,
    },
}
