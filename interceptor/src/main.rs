//! `interceptor` binary: parse the command line, set up logging, dispatch.

use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use interceptor::{
    attach,
    cgroup::Cgroup,
    cli::{Cli, Command, DaemonArgs, LogFormat, PolicyCommand, TokenCommand},
    control, daemon, ebpf,
    policy::{self, Policy},
    run,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let workers = cli.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        |n| n.get(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("interceptor: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: logs redirected to a file or journald stay plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn options(
    args: &DaemonArgs,
    instance: String,
    mode: &'static str,
    cgroup: Cgroup,
    state_dir: &std::path::Path,
) -> daemon::Options {
    daemon::Options {
        instance,
        mode,
        cgroup,
        policy_path: args.policy.clone(),
        listen_port: args.listen_port,
        state_dir: state_dir.to_path_buf(),
        audit_log: args.audit_log.clone(),
        audit: args.audit.clone(),
        metrics_addr: args.metrics_addr,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        approvals_listen: args.approvals_listen,
        token: match (&args.token, &args.token_env) {
            (Some(f), _) => Some(daemon::TokenArg::File(f.clone())),
            (None, Some(v)) => Some(daemon::TokenArg::Env(v.clone())),
            (None, None) => None,
        },
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`interceptor {what}` needs root (it loads eBPF programs and manages cgroups); try sudo");
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    if matches!(cli.command, Command::Run { .. } | Command::Attach { .. }) {
        match interceptor::limits::raise_nofile() {
            Ok((before, after)) => tracing::debug!(before, after, "open files limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
        }
    }
    match cli.command {
        Command::Run {
            daemon: args,
            user,
            command,
        } => {
            require_root("run").map_err(|e| {
                eprintln!("interceptor: error: {e:#}");
                e
            })?;
            let instance = format!("run-{}", std::process::id());
            let cgroup = match Cgroup::create(&format!("interceptor/{instance}")) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("interceptor: error: {e}");
                    return Ok(125);
                }
            };
            let opts = options(&args, instance, "run", cgroup, &cli.state_dir);
            match run::run(opts, user, command).await {
                Ok(code) => Ok(code),
                Err(e) => {
                    eprintln!("interceptor: error: {e}");
                    Ok(e.exit_code())
                }
            }
        }
        Command::Attach {
            cgroup,
            daemon: args,
            strict,
        } => {
            require_root("attach")?;
            let cg = Cgroup::open(&cgroup)?;
            let instance = attach::instance_name(&cg.relative());
            attach::attach(
                options(&args, instance, "attach", cg, &cli.state_dir),
                strict,
            )
            .await?;
            Ok(0)
        }
        Command::Detach { cgroup } => {
            require_root("detach")?;
            let cg = Cgroup::open(&cgroup)?;
            let dir = ebpf::pin_dir(&attach::instance_name(&cg.relative()));
            let n = ebpf::remove_pins(&dir)?;
            println!("removed {n} pinned links from {}", dir.display());
            Ok(0)
        }
        Command::Cleanup => {
            require_root("cleanup")?;
            cleanup()?;
            Ok(0)
        }
        Command::Doctor => {
            require_root("doctor")?;
            Ok(interceptor::doctor::run())
        }
        Command::Audit { command } => interceptor::audit::cmd::audit(command, &cli.state_dir).await,
        Command::Sessions { command } => {
            interceptor::audit::cmd::sessions_cmd(command, &cli.state_dir).await
        }
        Command::Status { json } => status(&cli.state_dir, json).await,
        Command::Reload => {
            let socks = control::sockets(&cli.state_dir);
            if socks.is_empty() {
                bail!(
                    "no running interceptor found under {}",
                    cli.state_dir.display()
                );
            }
            let mut failed = false;
            for s in socks {
                match control::request(&s, "reload").await {
                    Ok(control::Reply::Reloaded { summary }) => {
                        println!("{}: reloaded: {summary}", s.display())
                    }
                    Ok(other) => {
                        failed = true;
                        println!("{}: {other:?}", s.display())
                    }
                    Err(e) => {
                        failed = true;
                        println!("{e}")
                    }
                }
            }
            Ok(i32::from(failed))
        }
        Command::Approvals { auth, command } => {
            interceptor::approvals::client::run(&cli.state_dir, &auth, command).await
        }
        Command::Token {
            command: TokenCommand::Set { file, instance },
        } => {
            interceptor::approvals::client::set_token(&cli.state_dir, &file, instance.as_deref())
                .await
        }
        Command::Ca { command } => ca_command(&cli.state_dir, command),
        Command::Policy {
            command: PolicyCommand::Schema,
        } => {
            print!("{}", policy::json_schema());
            Ok(0)
        }
        Command::Policy {
            command: PolicyCommand::Check { files },
        } => {
            let mut bad = 0;
            for f in &files {
                match Policy::load_resolved(f) {
                    Ok((p, resolutions)) => {
                        println!("{}: ok — {}", f.display(), p.summary());
                        for r in resolutions {
                            match &r.result {
                                Ok(addrs) => println!("  DNS {} resolved at load to {:?} (re-resolved every {:?})", r.name, addrs, p.dns_refresh()),
                                Err(e) => println!("  warning: DNS {} does not resolve now ({e}); its rules match nothing until it does", r.name),
                            }
                        }
                    }
                    Err(e) => {
                        bad += 1;
                        println!("{e}");
                    }
                }
            }
            Ok(if bad > 0 { 1 } else { 0 })
        }
    }
}

/// (issue 4) `interceptor ca init|export`.
fn ca_command(
    state_dir: &std::path::Path,
    command: interceptor::cli::CaCommand,
) -> anyhow::Result<i32> {
    use interceptor::protocols::http::tls;
    match command {
        interceptor::cli::CaCommand::Init { force } => {
            let (cert, created) = tls::init(state_dir, force)?;
            let what = if created { "created" } else { "exists" };
            println!("{what}: {}", cert.display());
        }
        interceptor::cli::CaCommand::Export { bundle } => {
            let (cert, _) = tls::ca_paths(state_dir);
            let pem = std::fs::read_to_string(&cert).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    "run `interceptor ca init` first"
                } else {
                    "it is created 0644; a CA made by an older version is 0600 until the daemon or `interceptor ca init` runs again as its owner"
                };
                anyhow::anyhow!("cannot read {}: {e} ({hint})", cert.display())
            })?;
            print!("{}", if bundle { tls::bundle(&pem) } else { pem });
        }
    }
    Ok(0)
}

async fn status(state_dir: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let socks = control::sockets(state_dir);
    let mut all = Vec::new();
    for s in &socks {
        match control::request(s, "status").await {
            Ok(control::Reply::Status(st)) => all.push(*st),
            Ok(other) => eprintln!("{}: unexpected reply {other:?}", s.display()),
            Err(e) => eprintln!(
                "{e} (stale socket of a daemon that died? `interceptor cleanup` removes leftovers)"
            ),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if all.is_empty() {
        println!("no running interceptor (state dir {})", state_dir.display());
    } else {
        for s in &all {
            print!("{}", control::render(s));
        }
    }
    Ok(0)
}

/// Removes pins, cgroups and processes of `run` instances whose daemon is gone.
fn cleanup() -> anyhow::Result<()> {
    let root = std::path::Path::new(ebpf::PIN_ROOT);
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if let Ok(cg_root) = interceptor::cgroup::cgroup2_root() {
        if let Ok(rd) = std::fs::read_dir(cg_root.join("interceptor")) {
            names.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    names.sort();
    names.dedup();
    let mut removed = 0;
    for name in names {
        let Some(pid) = name
            .strip_prefix("run-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue; // still running
        }
        let cg =
            Cgroup::create(&format!("interceptor/{name}")).context("opening leftover cgroup")?;
        cg.kill_all(Duration::from_secs(5))?;
        let pins = ebpf::remove_pins(&ebpf::pin_dir(&name))?;
        cg.remove()?;
        println!("removed leftover {name}: {pins} pinned links, its cgroup and processes");
        removed += 1;
    }
    if removed == 0 {
        println!("nothing to clean up");
    }
    Ok(())
}
