//! `cargo xtask setup`: install, idempotently, what builds and tests need.
//!
//! Rust part: `rust-src` for nightly, rustfmt/clippy for the host toolchain, and bpf-linker
//! 0.13.0 linked against the nightly toolchain's own `libLLVM` (Debian has no LLVM 22).
//! System part (root only): the Debian packages the tests call.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::util::{self, cargo_home, host_cargo, nightly, output, run};

pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the build and the tests need: libclang-dev for pg_query's bindgen,
/// PostgreSQL 15 (server, psql, pgbench) for the real-peer PostgreSQL tests.
const APT_PACKAGES: &[&str] = &[
    "python3",
    "python3-pip",
    "curl",
    "iproute2",
    "procps",
    "libclang-dev",
    "postgresql-15",
    "postgresql-client-15",
    "openssl",
    // (issue 4) HTTP benchmark client.
    "wrk",
];

/// (issue 4) Python packages of the HTTP tests (real clients), installed with pip.
const PIP_PACKAGES: &[&str] = &["requests", "httpx", "h2"];

#[derive(Args, Debug, Default)]
pub struct SetupArgs {
    /// Only report what is present and what would be installed.
    #[arg(long)]
    pub dry_run: bool,
    /// Also install cargo-fuzz (for `cargo xtask fuzz`; CI does not need it).
    #[arg(long)]
    pub fuzz: bool,
}

pub fn run_setup(args: &SetupArgs) -> Result<()> {
    rust(args.dry_run)?;
    if args.fuzz {
        crate::fuzz::ensure_cargo_fuzz(args.dry_run)?;
    }
    system_packages(args.dry_run)?;
    pip_packages(args.dry_run)
}

/// `python3 -m pip install` of `PIP_PACKAGES` when python3 cannot import them (with
/// `--break-system-packages` when Debian's Python refuses, PEP 668).
fn pip_packages(dry_run: bool) -> Result<()> {
    let what = "pip packages";
    let has = || {
        Command::new("python3")
            .args(["-c", &format!("import {}", PIP_PACKAGES.join(", "))])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        report(what, format!("present: {}", PIP_PACKAGES.join(" ")));
        return Ok(());
    }
    if dry_run {
        report(
            what,
            format!("missing {}: would pip install", PIP_PACKAGES.join(" ")),
        );
        return Ok(());
    }
    report(what, format!("installing {}", PIP_PACKAGES.join(" ")));
    for extra in [&[][..], &["--break-system-packages"][..]] {
        let _ = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(extra)
            .args(PIP_PACKAGES)
            .status();
        if has() {
            return Ok(());
        }
    }
    anyhow::bail!(
        "pip install {} failed; the HTTP tests need them",
        PIP_PACKAGES.join(" ")
    )
}

/// The Rust half of setup; `cargo xtask build` runs it too.
pub fn rust(dry_run: bool) -> Result<()> {
    let sysroot = nightly_sysroot()?;
    rust_src(dry_run)?;
    host_components(dry_run)?;
    bpf_linker(&sysroot, dry_run)
}

fn report(what: &str, msg: impl std::fmt::Display) {
    println!("setup: {what:<22} {msg}");
}

fn nightly_sysroot() -> Result<PathBuf> {
    let version = output(nightly("rustc").arg("--version"))
        .context("the nightly toolchain is required (rustup toolchain install nightly)")?;
    report("nightly toolchain", version.trim());
    let sysroot = output(nightly("rustc").args(["--print", "sysroot"]))?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn rust_src(dry_run: bool) -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed", "--toolchain", "nightly"]);
    util::scrub_toolchain_env(&mut list);
    let installed = output(&mut list)?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        report("rust-src (nightly)", "present");
        return Ok(());
    }
    if dry_run {
        report("rust-src (nightly)", "missing: would install");
        return Ok(());
    }
    report("rust-src (nightly)", "missing: installing");
    let mut add = Command::new("rustup");
    add.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    util::scrub_toolchain_env(&mut add);
    run(&mut add)
}

/// rustfmt and clippy for the toolchain that runs xtask (used by `cargo xtask test`).
fn host_components(dry_run: bool) -> Result<()> {
    let missing: Vec<&str> = [("rustfmt", "fmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(_, sub)| output(host_cargo().args([sub, "--version"])).is_err())
        .map(|(component, _)| component)
        .collect();
    if missing.is_empty() {
        report("rustfmt, clippy (host)", "present");
        return Ok(());
    }
    let list = missing.join(", ");
    if dry_run {
        report(
            "rustfmt, clippy (host)",
            format!("missing {list}: would install"),
        );
        return Ok(());
    }
    report(
        "rustfmt, clippy (host)",
        format!("missing {list}: installing"),
    );
    // RUSTUP_TOOLCHAIN (set by the proxy that started xtask) selects the same toolchain.
    run(Command::new("rustup")
        .args(["component", "add"])
        .args(&missing))
}

/// What `bpf-linker --version` told us.
#[derive(Debug, PartialEq)]
enum Probe {
    Missing,
    /// Present but does not run (e.g. its libLLVM is gone after a nightly update).
    Broken(PathBuf, String),
    Version(PathBuf, String),
}

/// `bpf-linker 0.13.0` -> `0.13.0`.
fn parse_bpf_linker_version(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("bpf-linker "))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Runs the bpf-linker found on PATH the way rustc will during the eBPF build: with the
/// nightly toolchain's lib dir on the library path (rustup's proxy sets that for the build).
fn probe_bpf_linker(nightly_lib: &Path) -> Probe {
    let Some(path) = util::find_in_path("bpf-linker") else {
        return Probe::Missing;
    };
    let result = output(
        Command::new(&path)
            .arg("--version")
            .env("LD_LIBRARY_PATH", nightly_lib),
    );
    match result {
        Ok(stdout) => match parse_bpf_linker_version(&stdout) {
            Some(v) => Probe::Version(path, v.to_owned()),
            None => Probe::Broken(path, format!("unexpected --version output {stdout:?}")),
        },
        Err(e) => Probe::Broken(path, format!("{e:#}")),
    }
}

/// The nightly toolchain's shared LLVM, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn is_rust_libllvm(file_name: &str) -> bool {
    file_name.starts_with("libLLVM.so.")
        && file_name.contains("-rust-")
        && file_name.ends_with("-nightly")
}

/// `libLLVM.so.22.1-rust-...` -> `22` (selects bpf-linker's `llvm-22` feature).
fn llvm_major(file_name: &str) -> Option<&str> {
    let major = file_name
        .strip_prefix("libLLVM.so.")?
        .split(['.', '-'])
        .next()?;
    (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())).then_some(major)
}

fn find_rust_libllvm(nightly_lib: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(nightly_lib)
        .with_context(|| format!("reading {}", nightly_lib.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_rust_libllvm))
        .map(|e| e.path())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no libLLVM.so.*-rust-*-nightly in {}; cannot build bpf-linker",
            nightly_lib.display()
        ),
        _ => bail!(
            "several nightly libLLVM files in {}: {found:?}",
            nightly_lib.display()
        ),
    }
}

fn bpf_linker(sysroot: &Path, dry_run: bool) -> Result<()> {
    let nightly_lib = sysroot.join("lib");
    let what = "bpf-linker";
    match probe_bpf_linker(&nightly_lib) {
        Probe::Version(path, v) if v == BPF_LINKER_VERSION => {
            report(what, format!("{v} at {}", path.display()));
            return Ok(());
        }
        Probe::Version(path, v) => report(
            what,
            format!(
                "{v} at {}, want {BPF_LINKER_VERSION}: needs reinstall",
                path.display()
            ),
        ),
        Probe::Broken(path, why) => report(
            what,
            format!("{} does not run ({why}): needs reinstall", path.display()),
        ),
        Probe::Missing => report(what, "not on PATH: needs install"),
    }

    let libllvm = find_rust_libllvm(&nightly_lib)?;
    let soname = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .context("libLLVM file name")?
        .to_owned();
    let major = llvm_major(&soname)
        .with_context(|| format!("cannot read the LLVM version from {soname}"))?;
    // The prefix must outlive the build: bpf-linker records `<prefix>/lib` as its RUNPATH.
    let prefix = cargo_home()?.join("bpf-linker-llvm");
    let features = format!("llvm-{major}");
    let mut install = host_cargo();
    install
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
        ])
        .args(["--no-default-features", "--features", &features])
        .env("LLVM_PREFIX", &prefix)
        .env_remove("LD_LIBRARY_PATH");
    if dry_run {
        report(
            what,
            format!(
                "dry run: would link {} -> {}",
                prefix.join("lib/libLLVM.so").display(),
                libllvm.display()
            ),
        );
        report(
            what,
            format!("dry run: would run {}", util::display(&install)),
        );
        return Ok(());
    }

    make_llvm_prefix(&prefix, &libllvm, &soname)?;
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} (takes about 4 minutes)");
    run(&mut install)?;
    match probe_bpf_linker(&nightly_lib) {
        Probe::Version(path, v) if v == BPF_LINKER_VERSION => {
            report(what, format!("installed {v} at {}", path.display()));
            Ok(())
        }
        Probe::Missing => bail!(
            "bpf-linker was installed into {} but that is not on PATH",
            cargo_home()?.join("bin").display()
        ),
        other => bail!("bpf-linker still not usable after install: {other:?}"),
    }
}

/// `<prefix>/lib/libLLVM.so` (for linking) and `<prefix>/lib/<soname>` (for running without
/// rustup's library path) both point at the nightly toolchain's libLLVM.
fn make_llvm_prefix(prefix: &Path, libllvm: &Path, soname: &str) -> Result<()> {
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for entry in fs::read_dir(&lib)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with("libLLVM")) {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    for name in ["libLLVM.so", soname] {
        let link = lib.join(name);
        symlink(libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    report(
        "llvm prefix",
        format!("{} -> {}", lib.display(), libllvm.display()),
    );
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", package])
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.trim() == "Status: install ok installed")
        })
        .unwrap_or(false)
}

fn system_packages(dry_run: bool) -> Result<()> {
    let what = "apt packages";
    if util::find_in_path("dpkg").is_none() || util::find_in_path("apt-get").is_none() {
        report(
            what,
            "no dpkg/apt-get (not Debian?): skipped, install by hand: python3 curl iproute2 procps",
        );
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        report(what, format!("present: {}", APT_PACKAGES.join(" ")));
        return Ok(());
    }
    let list = missing.join(" ");
    if dry_run {
        report(what, format!("missing {list}: would apt-get install"));
        return Ok(());
    }
    if !util::is_root() {
        report(
            what,
            format!("missing {list}: not root, skipped (run setup as root)"),
        );
        return Ok(());
    }
    report(what, format!("missing {list}: installing"));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpf_linker_version() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n"),
            Some("0.13.0")
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.9.15"),
            Some("0.9.15")
        );
        assert_eq!(parse_bpf_linker_version("error: something"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn recognises_nightly_libllvm() {
        assert!(is_rust_libllvm("libLLVM.so.22.1-rust-1.97.0-nightly"));
        assert!(!is_rust_libllvm("libLLVM-22-rust-1.97.0-nightly.so"));
        assert!(!is_rust_libllvm("libLLVM.so.22.1-rust-1.95.0-stable"));
        assert!(!is_rust_libllvm("librustc_driver-b5a965480ee51f9a.so"));
    }

    #[test]
    fn llvm_major_version() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some("22")
        );
        assert_eq!(llvm_major("libLLVM.so.23-rust-1.99.0-nightly"), Some("23"));
        assert_eq!(llvm_major("libLLVM.so"), None);
    }
}
