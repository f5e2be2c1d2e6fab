//! Project automation, run as `cargo xtask <command>` (alias in .cargo/config.toml).
//!
//! Needs only stable Rust, anyhow and clap; everything else it installs or calls.

mod bench;
mod bench_audit;
mod bench_http;
mod bench_pg;
mod build;
mod demo;
mod demo_http;
mod fuzz;
mod haproxy;
mod pg;
mod setup;
mod soak;
mod soak_client;
mod test;
mod util;
mod vm_test;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "xtask", about = "Build, test and set up the interceptor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what is missing: nightly rust-src, bpf-linker, Debian test packages.
    Setup(setup::SetupArgs),
    /// Build the eBPF object (nightly) and the daemon that embeds it (release by default).
    Build(build::BuildArgs),
    /// Everything CI checks: build, fmt, clippy, tests, policy checks, VM tests.
    Test(test::TestArgs),
    /// Run the end-to-end demo.
    Demo,
    /// Run a benchmark.
    Bench {
        /// Which benchmark to run.
        which: String,
    },
    /// Run the kernel-facing suite in VMs across kernels.
    VmTest(vm_test::VmTestArgs),
    /// Run cargo-fuzz targets (`fuzz/`): `fuzz TARGET --time N` or `fuzz --all --time N`.
    Fuzz(fuzz::FuzzArgs),
    /// 1,000 concurrent agent connections (PostgreSQL + TCP) for a bounded time: throughput,
    /// p99, daemon RSS and open fds at start and end (fails if they grow).
    Soak(soak::SoakArgs),
    /// (internal) the load of `soak`, run inside the agent cgroup.
    #[command(hide = true)]
    SoakClient(soak_client::SoakClientArgs),
    /// (internal) the measuring client of `bench connect`.
    #[command(hide = true)]
    BenchClient { addr: String, iterations: usize },
}

/// Errors are printed with their context chain but without a backtrace (RUST_BACKTRACE is
/// often set in CI, and a backtrace of xtask itself never helps).
fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Setup(args) => setup::run_setup(&args),
        Command::Build(args) => build::run_build(&args),
        Command::Test(args) => test::run_tests(&args),
        Command::Demo => demo::run_demo(),
        Command::Bench { which } => bench::run_bench(&which),
        Command::VmTest(args) => vm_test::run_vm_test(&args),
        Command::Fuzz(args) => fuzz::run_fuzz(&args),
        Command::Soak(args) => soak::run(&args),
        Command::SoakClient(args) => soak_client::run(&args),
        Command::BenchClient { addr, iterations } => bench::client(&addr, iterations),
    }
}
