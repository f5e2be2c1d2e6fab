//! `cargo xtask build`: the eBPF object (nightly, bpfel-unknown-none), then the daemon that
//! embeds it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::setup;
use crate::util::{host_cargo, host_target_dir, nightly, run, workspace_root};

/// Set for the daemon's build script: the eBPF object to embed.
pub const EBPF_OBJECT_ENV: &str = "INTERCEPTOR_EBPF_OBJECT";

#[derive(Args, Debug, Default)]
pub struct BuildArgs {
    /// Build the daemon with the dev profile (the eBPF object is always release).
    #[arg(long)]
    pub debug: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

pub fn run_build(args: &BuildArgs) -> Result<()> {
    let profile = if args.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    build(profile)
}

/// Runs setup's Rust part, builds both artifacts and prints where they are.
pub fn build(profile: Profile) -> Result<()> {
    setup::rust(false)?;
    let ebpf_object = build_ebpf()?;
    let daemon = build_daemon(&ebpf_object, profile)?;
    println!("eBPF object: {}", ebpf_object.display());
    println!("daemon:      {}", daemon.display());
    Ok(())
}

fn ebpf_target_dir() -> PathBuf {
    host_target_dir().join("bpf")
}

/// Where the eBPF build puts its object (absolute).
pub fn ebpf_object_path() -> PathBuf {
    ebpf_target_dir().join("bpfel-unknown-none/release/interceptor-ebpf")
}

/// Where the daemon binary lands for `profile` (absolute).
pub fn daemon_path(profile: Profile) -> PathBuf {
    host_target_dir().join(profile.dir()).join("interceptor")
}

/// `cargo +nightly build --release` inside interceptor-ebpf/, whose own .cargo/config.toml
/// selects bpfel-unknown-none and build-std=core. A separate target dir keeps the host cache.
pub fn build_ebpf() -> Result<PathBuf> {
    let mut cmd = nightly("cargo");
    cmd.current_dir(workspace_root().join("interceptor-ebpf"))
        .args(["build", "--release"])
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("CARGO_TARGET_DIR", ebpf_target_dir());
    run(&mut cmd)?;
    let object = ebpf_object_path();
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} does not exist",
            object.display()
        );
    }
    Ok(object)
}

fn build_daemon(ebpf_object: &Path, profile: Profile) -> Result<PathBuf> {
    let mut cmd = host_cargo();
    cmd.args(["build", "-p", "interceptor"]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    cmd.env(EBPF_OBJECT_ENV, ebpf_object)
        .current_dir(workspace_root());
    run(&mut cmd)?;
    let daemon = daemon_path(profile);
    if !daemon.is_file() {
        bail!(
            "the daemon build succeeded but {} does not exist",
            daemon.display()
        );
    }
    Ok(daemon)
}
