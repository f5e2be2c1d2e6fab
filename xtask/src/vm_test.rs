//! `cargo xtask vm-test`: the kernel-facing suite (`vm-tests/`) as PID 1 of a qemu VM, once
//! per kernel.
//!
//! Steps: qemu and the musl toolchain (installed when missing) → static guest binaries
//! (`interceptor` with the eBPF object embedded, `vm-suite`) → Debian kernel packages
//! (`apt-get download`, cached in `target/vm/kernels/`) → an initramfs (newc cpio written
//! here) → boot with KVM when it works, TCG otherwise → parse `PASS`/`FAIL`/`SKIP` and the
//! summary line from the console, saved as `target/vm/<kernel>/console.log`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::build::{self, EBPF_OBJECT_ENV};
use crate::setup;
use crate::util::{
    apt_install, display, find_in_path, fmt_duration, host_cargo, host_target_dir, output, run,
    workspace_root,
};

mod guest;
mod initramfs;
mod kernel;
mod qemu;

use guest::*;
use initramfs::*;
use kernel::*;
use qemu::*;

/// The kernel `cargo xtask test` boots.
pub const DEFAULT_KERNEL: &str = "6.1";
/// What `--all` boots: Debian 12's kernel and the 6.12 backport.
pub const ALL_KERNELS: &[&str] = &["6.1", "6.12"];

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Whole boot + suite, per kernel. TCG runs the suite in one to two minutes; this is the
/// limit for a hung guest.
const DEFAULT_TIMEOUT_SECS: u64 = 360;
/// A KVM guest reaches init in a second or two; one that has not after this never will.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Overrides the KVM probe: `kvm` or `tcg`.
const ACCEL_ENV: &str = "VM_TEST_ACCEL";

#[derive(Args, Debug, Default)]
pub struct VmTestArgs {
    /// Kernel to boot: a Debian version (`6.1`, `6.12`: the newest `linux-image-<v>…-cloud-amd64`
    /// package), an exact package name, or a path to a bzImage. Repeatable. Default: 6.1.
    #[arg(long = "kernel", value_name = "VERSION|PACKAGE|PATH")]
    pub kernels: Vec<String>,
    /// Every kernel in the standard list (6.1, 6.12).
    #[arg(long)]
    pub all: bool,
    /// Keep the initramfs and print the qemu command line for booting it by hand.
    #[arg(long)]
    pub keep: bool,
    /// Only run tests whose name contains this string.
    #[arg(long, value_name = "STR")]
    pub filter: Option<String>,
    /// Seconds one VM (boot + suite) may take.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Do not count a kernel that the feature probe reports unsupported as a failure.
    #[arg(long)]
    pub allow_unsupported: bool,
}

/// The VM suite as run by `cargo xtask test` (last step): one kernel, any failure fails.
pub fn vm_suite() -> Result<()> {
    run_vm_test(&VmTestArgs {
        kernels: vec![DEFAULT_KERNEL.to_string()],
        timeout: DEFAULT_TIMEOUT_SECS,
        ..VmTestArgs::default()
    })
}

pub fn run_vm_test(args: &VmTestArgs) -> Result<()> {
    let mut kernels: Vec<String> = args.kernels.clone();
    if args.all {
        kernels.extend(ALL_KERNELS.iter().map(|k| k.to_string()));
    }
    if kernels.is_empty() {
        kernels.push(DEFAULT_KERNEL.to_string());
    }
    kernels.dedup();

    let qemu = ensure_qemu()?;
    let (interceptor, suite) = build_guest()?;
    let vm_dir = host_target_dir().join("vm");
    fs::create_dir_all(&vm_dir)?;
    // Per process: a concurrent run (another `cargo xtask test`) must not rewrite the file
    // under a booting VM.
    let initramfs = vm_dir.join(format!("initramfs-{}.cpio", std::process::id()));
    let size = write_initramfs(&initramfs, &suite, &interceptor)?;
    println!(
        "vm-test: initramfs {} ({:.1} MiB)",
        initramfs.display(),
        size as f64 / (1 << 20) as f64
    );

    let mut resolved = Vec::new();
    for spec in &kernels {
        resolved.push((spec.clone(), fetch_kernel(spec, &vm_dir.join("kernels"))?));
    }

    let mut accel = None;
    let mut reports = Vec::new();
    for (spec, kernel) in &resolved {
        let accel = match accel {
            Some(a) => a,
            None => {
                let a = choose_accel(&qemu, kernel, &initramfs)?;
                accel = Some(a);
                a
            }
        };
        let dir = vm_dir.join(sanitize(spec));
        fs::create_dir_all(&dir)?;
        let report = boot(&qemu, accel, spec, kernel, &initramfs, &dir, args)?;
        reports.push(report);
    }
    if args.keep {
        let kept = vm_dir.join("initramfs.cpio");
        fs::rename(&initramfs, &kept)?;
        for (spec, kernel) in &resolved {
            let cmd = qemu_command(&qemu, Accel::Tcg, kernel, &kept, &[]);
            println!("vm-test: boot {spec} by hand: {}", display(&cmd));
        }
    } else {
        let _ = fs::remove_file(&initramfs);
    }
    print_report(&reports);

    let bad: Vec<String> = reports
        .iter()
        .filter(|r| match &r.outcome {
            Outcome::Passed => false,
            Outcome::Unsupported(_) => !args.allow_unsupported,
            _ => true,
        })
        .map(|r| r.spec.clone())
        .collect();
    if !bad.is_empty() {
        bail!("vm-test failed on kernel(s) {}", bad.join(", "));
    }
    Ok(())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_picked_by_version() {
        let names = "linux-image-6.1.0-9-cloud-amd64\nlinux-image-6.1.0-10-cloud-amd64\n\
                     linux-image-6.1.0-10-cloud-amd64-dbg\nlinux-image-6.1.0-11-amd64\n\
                     linux-image-6.12.9+deb12-cloud-amd64\nlinux-image-6.12.10+deb12-cloud-amd64\n\
                     linux-image-6.12-cloud-amd64\n";
        assert_eq!(
            pick_package("6.1", names).as_deref(),
            Some("linux-image-6.1.0-10-cloud-amd64")
        );
        assert_eq!(
            pick_package("6.12", names).as_deref(),
            Some("linux-image-6.12.10+deb12-cloud-amd64")
        );
        assert_eq!(pick_package("5.10", names), None);
    }

    #[test]
    fn cpio_layout() {
        let mut w = cpio::Writer::new(Vec::new());
        w.file("init", 0o755, b"abc").unwrap();
        let out = w.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        // Header 110 + "init\0" (5) = 115 → padded to 116, data 3 → padded to 4.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(&out[120..126], b"070701");
        let trailer = String::from_utf8_lossy(&out);
        assert!(trailer.contains("TRAILER!!!"));
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn console_parsing() {
        let lines: Vec<String> = [
            "[    0.1] noise",
            "vm-suite: uname -r: 6.1.0-56-cloud-amd64",
            "PASS redirect_v4 (1.5s)",
            "FAIL redirect_v6: reply None, expected \"echo:six\" (after 2.0s)",
            "    | context",
            "SKIP tfo: off",
            "vm-suite: 1 passed, 1 failed, 1 skipped",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = parse_console(&lines, "qemu exited");
        assert_eq!(r.outcome, Outcome::Failed(1));
        assert_eq!(r.summary, Some((1, 1, 1)));
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.tests[0], ("redirect_v4".into(), "PASS".into(), "".into()));
        assert_eq!(r.tests[1].0, "redirect_v6");
        assert_eq!(r.tests[2], ("tfo".into(), "SKIP".into(), "off".into()));

        let r = parse_console(&lines[..3], "killed after 6m00s");
        assert!(matches!(r.outcome, Outcome::Broken(ref s) if s.contains("killed")));

        let unsupported: Vec<String> = [
            "vm-suite: kernel 5.4.0 unsupported: too old",
            "vm-suite: 0 passed, 0 failed, 11 skipped",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            parse_console(&unsupported, "").outcome,
            Outcome::Unsupported("too old".into())
        );
    }

    #[test]
    fn elf_check() {
        assert!(!elf_interpreter(b"not an elf"));
        // A minimal ELF64 header with two program headers at offset 64 (56 bytes each).
        let mut elf = vec![0u8; 64 + 2 * 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&2u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert!(!elf_interpreter(&elf), "static");
        elf[120..124].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(elf_interpreter(&elf), "dynamic");
    }
}
