//! Helpers shared by the subcommands: paths, toolchain-clean commands, running and printing.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The root of the cargo workspace (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The host build's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn host_target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `$CARGO_HOME`, defaulting to `$HOME/.cargo` as rustup does.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// `cargo` of the toolchain that runs xtask (stable), for host builds.
pub fn host_cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

/// A rustup proxy (`cargo`, `rustc`, ...) invoked as `<tool> +nightly`, with every variable
/// removed that would pin the toolchain xtask runs on or leak its build settings.
pub fn nightly(tool: &str) -> Command {
    let mut cmd = Command::new(rustup_proxy(tool));
    cmd.arg("+nightly");
    scrub_toolchain_env(&mut cmd);
    cmd
}

/// The rustup proxy for `tool`: `$CARGO_HOME/bin/<tool>` if present, else the first on PATH.
/// (A toolchain's own `cargo` does not understand `+nightly`; the proxy does.)
fn rustup_proxy(tool: &str) -> PathBuf {
    cargo_home()
        .ok()
        .map(|home| home.join("bin").join(tool))
        .filter(|p| is_executable(p))
        .or_else(|| find_in_path(tool))
        .unwrap_or_else(|| PathBuf::from(tool))
}

/// Variables that cargo/rustup set for the running xtask, or that a user may have set for the
/// host build, and that would force the stable toolchain or break a `bpfel-unknown-none` build.
const SCRUBBED_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "CARGO",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTDOC",
    "CARGO_TARGET_DIR",
    // cargo run prepends the stable toolchain's lib dirs; rustup sets nightly's itself.
    "LD_LIBRARY_PATH",
];

/// Prefixes of variables cargo sets for the xtask binary it runs, or per-target overrides
/// (`CARGO_TARGET_<TRIPLE>_RUSTFLAGS`, `..._LINKER`).
const SCRUBBED_PREFIXES: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_",
];

pub fn scrub_toolchain_env(cmd: &mut Command) {
    for var in SCRUBBED_VARS {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if SCRUBBED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
}

/// `which` by hand: the first executable file called `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The command as a shell-like line, with the variables it sets explicitly.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    let line = parts.join(" ");
    match cmd.get_current_dir() {
        Some(dir) => format!("(cd {} && {line})", dir.display()),
        None => line,
    }
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The program's file name and its arguments, for short error messages.
pub fn display_short(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints and runs a command with inherited stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start: {line}"))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display_short(cmd));
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout; fails on a non-zero exit (with its stderr).
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start: {line}"))?;
    if !out.status.success() {
        bail!(
            "command failed ({}): {line}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs Debian packages with apt-get (as root; a clear error otherwise).
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    let list = pkgs.join(" ");
    if find_in_path("apt-get").is_none() {
        bail!("{list} missing and no apt-get here: install them by hand");
    }
    if !is_root() {
        bail!("{list} missing; installing needs root: sudo apt-get install {list}");
    }
    println!("==> installing {list} (apt-get)");
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// A daemon's binary from a Debian package, installed when missing; `None` (and a line
/// saying why) when that fails. The package's own system instance is stopped: benches run
/// their own and want a quiet machine.
pub fn ensure_daemon_package(bin: &str, package: &str) -> Option<PathBuf> {
    let p = PathBuf::from(bin);
    if !p.exists() {
        if let Err(e) = apt_install(&[package]) {
            println!("    {package} not available ({e:#}): skipping that comparison");
        }
        let _ = Command::new("systemctl")
            .args(["stop", package])
            .stderr(Stdio::null())
            .status();
    }
    p.exists().then_some(p)
}

/// True when the effective user id is 0 (read from /proc, no libc needed).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// CPU time (user, system) in µs of this process's children that have been waited for,
/// from /proc/self/stat (`cutime`, `cstime`; USER_HZ = 100). A child's figure includes its
/// own waited-for children: `interceptor run -- client` counts the daemon and the client.
pub fn children_cpu_us() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; cutime and cstime are fields 16 and 17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let tick = |i: usize| f.get(i).copied().unwrap_or(0) * 10_000;
    // `rest` starts at field 3 (state): field N is rest[N - 3].
    (tick(16 - 3), tick(17 - 3))
}

/// Busy CPU time of the whole machine so far (µs), from /proc/stat: user, nice, system,
/// irq, softirq and steal (USER_HZ = 100).
pub fn busy_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>()
        * 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("--release")), "--release");
        assert_eq!(quote(OsStr::new("-C debuginfo=2")), "'-C debuginfo=2'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn short_display_drops_path_env_and_dir() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["fmt", "--all"]).env("X", "1").current_dir("/tmp");
        assert_eq!(display_short(&cmd), "cargo fmt --all");
        assert_eq!(display(&cmd), "(cd /tmp && X=1 /usr/bin/cargo fmt --all)");
    }

    #[test]
    fn nightly_command_drops_pinning_vars() {
        let cmd = nightly("cargo");
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for var in [
            "RUSTUP_TOOLCHAIN",
            "CARGO",
            "RUSTC",
            "RUSTFLAGS",
            "LD_LIBRARY_PATH",
        ] {
            assert!(removed.iter().any(|r| r == var), "{var} not removed");
        }
        assert_eq!(cmd.get_args().next(), Some(OsStr::new("+nightly")));
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05s");
    }
}
