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
}

#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    /// Policy file (YAML).
    #[arg(long)]
    pub policy: PathBuf,
    /// Port of the proxy listeners on 127.0.0.1 and [::1]; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub listen_port: u16,
    /// Audit log file (JSON lines); `-` for stdout. Default: <state dir>/audit.jsonl.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Serve Prometheus metrics on this local address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Upstream connect timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
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
