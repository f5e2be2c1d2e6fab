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

// ---------------------------------------------------------------------------------------
// Tools and guest binaries

fn ensure_qemu() -> Result<PathBuf> {
    if let Some(q) = find_in_path("qemu-system-x86_64") {
        return Ok(q);
    }
    apt_install(&["qemu-system-x86"])?;
    find_in_path("qemu-system-x86_64")
        .context("qemu-system-x86_64 still missing after installing qemu-system-x86")
}

/// The musl target for rustup and the musl C toolchain (`musl-gcc`) for the C parts of the
/// daemon's dependencies (libpg_query, ring).
fn ensure_musl() -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["target", "list", "--installed"]);
    let installed = output(&mut list).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))?;
    }
    if find_in_path("musl-gcc").is_none() {
        apt_install(&["musl-tools"])?;
    }
    Ok(())
}

/// Static musl builds of the daemon (with the eBPF object) and of vm-suite.
fn build_guest() -> Result<(PathBuf, PathBuf)> {
    setup::rust(false)?;
    ensure_musl()?;
    let object = build::build_ebpf()?;
    let mut cmd = host_cargo();
    // bindgen (pg_query) runs libclang for the musl target, which then finds neither its own
    // builtin headers (stdbool.h) nor libc's: point it at clang's and musl's.
    if std::env::var_os(BINDGEN_ARGS_ENV).is_none() {
        let mut dirs: Vec<PathBuf> = clang_resource_includes();
        dirs.push(PathBuf::from("/usr/include/x86_64-linux-musl"));
        let args: Vec<String> = dirs
            .iter()
            .filter(|d| d.is_dir())
            .map(|d| format!("-isystem {}", d.display()))
            .collect();
        cmd.env(BINDGEN_ARGS_ENV, args.join(" "));
    }
    run(cmd
        .args([
            "build",
            "--release",
            "--target",
            MUSL_TARGET,
            "-p",
            "interceptor",
            "-p",
            "vm-tests",
        ])
        .env(EBPF_OBJECT_ENV, &object)
        .current_dir(workspace_root()))?;
    let dir = host_target_dir().join(MUSL_TARGET).join("release");
    let bins = (dir.join("interceptor"), dir.join("vm-suite"));
    for b in [&bins.0, &bins.1] {
        let data = fs::read(b).with_context(|| format!("reading {}", b.display()))?;
        if elf_interpreter(&data) {
            bail!(
                "{} is dynamically linked; the initramfs has no libraries for it",
                b.display()
            );
        }
    }
    Ok(bins)
}

/// Extra clang arguments bindgen reads for the musl target.
const BINDGEN_ARGS_ENV: &str = "BINDGEN_EXTRA_CLANG_ARGS_x86_64_unknown_linux_musl";

/// `/usr/lib/llvm-N/lib/clang/V/include` of the newest LLVM installed (libclang's builtins).
fn clang_resource_includes() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for llvm in fs::read_dir("/usr/lib").into_iter().flatten().flatten() {
        if !llvm.file_name().to_string_lossy().starts_with("llvm-") {
            continue;
        }
        for v in fs::read_dir(llvm.path().join("lib/clang"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let inc = v.path().join("include");
            if inc.join("stdbool.h").is_file() {
                found.push(inc);
            }
        }
    }
    found.sort_by_key(|a| natural_key(&a.to_string_lossy()));
    found.pop().into_iter().collect()
}

/// True when an ELF64 file has a PT_INTERP program header (needs a dynamic loader).
fn elf_interpreter(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= data.len() && u32::from_le_bytes(data[o..o + 4].try_into().expect("4")) == 3
    })
}

// ---------------------------------------------------------------------------------------
// Kernels

/// A kernel ready to boot.
#[derive(Debug, Clone)]
struct Kernel {
    /// The Debian package (or the path given).
    name: String,
    image: PathBuf,
}

/// `6.1` → the newest `linux-image-6.1.…-cloud-amd64`; `6.12` → the newest 6.12 backport.
fn pick_package(spec: &str, names: &str) -> Option<String> {
    let prefix = format!("linux-image-{spec}");
    names
        .lines()
        .map(str::trim)
        .filter(|n| n.ends_with("-cloud-amd64"))
        .filter(|n| {
            n.strip_prefix(&prefix).is_some_and(|rest| {
                let mut c = rest.chars();
                matches!(c.next(), Some('.' | '-')) && c.next().is_some_and(|d| d.is_ascii_digit())
            })
        })
        .max_by_key(|a| natural_key(a))
        .map(str::to_string)
}

/// Orders `6.1.0-9` before `6.1.0-10`.
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut num = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((0, std::mem::take(&mut text)));
            }
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((num.parse().unwrap_or(u64::MAX), String::new()));
                num.clear();
            }
            text.push(c);
        }
    }
    if !num.is_empty() {
        out.push((num.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        out.push((0, text));
    }
    out
}

fn fetch_kernel(spec: &str, cache: &Path) -> Result<Kernel> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(Kernel {
            name: spec.to_string(),
            image: fs::canonicalize(as_path)?,
        });
    }
    let package = if spec.starts_with("linux-image-") {
        spec.to_string()
    } else {
        let query = format!("linux-image-{spec}");
        let mut found = pick_package(
            spec,
            &output(Command::new("apt-cache").args(["pkgnames", &query]))?,
        );
        if found.is_none() {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            found = pick_package(
                spec,
                &output(Command::new("apt-cache").args(["pkgnames", &query]))?,
            );
        }
        match found {
            Some(p) => p,
            None => {
                // Offline, or the package left the archive: a cached one will do.
                let cached = fs::read_dir(cache)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                pick_package(spec, &cached).with_context(|| {
                    format!("no Debian package linux-image-{spec}*-cloud-amd64 found (apt-cache pkgnames {query})")
                })?
            }
        }
    };
    let dir = cache.join(&package);
    let image = dir.join("vmlinuz");
    if image.is_file() {
        println!("vm-test: kernel {spec}: {package} (cached)");
        return Ok(Kernel {
            name: package,
            image,
        });
    }
    println!("vm-test: kernel {spec}: downloading {package}");
    let download = cache.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    run(Command::new("apt-get")
        .args(["download", "-o", "APT::Sandbox::User=root", &package])
        .current_dir(&download))?;
    let deb = fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    // Only boot/ is needed (dpkg -x would unpack every module too).
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&download)
        .args(["--wildcards", "./boot/*"])
        .stdin(dpkg.stdout.take().context("dpkg-deb stdout")?)
        .status()
        .context("tar")?;
    let dpkg_status = dpkg.wait()?;
    if !tar.success() || !dpkg_status.success() {
        bail!("unpacking {} failed", deb.display());
    }
    // Assembled beside the cache entry and renamed into place: a concurrent run sees either
    // nothing or a complete kernel.
    let staged = download.join("kernel");
    fs::create_dir_all(&staged)?;
    for entry in fs::read_dir(download.join("boot"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let target = if name.starts_with("vmlinuz-") {
            "vmlinuz"
        } else if name.starts_with("config-") {
            "config"
        } else {
            continue;
        };
        fs::rename(entry.path(), staged.join(target))?;
    }
    if !staged.join("vmlinuz").is_file() {
        let _ = fs::remove_dir_all(&download);
        bail!("{package} has no boot/vmlinuz-*");
    }
    if fs::rename(&staged, &dir).is_err() && !image.is_file() {
        let _ = fs::remove_dir_all(&download);
        bail!("could not move the kernel into {}", dir.display());
    }
    let _ = fs::remove_dir_all(&download);
    Ok(Kernel {
        name: package,
        image,
    })
}

// ---------------------------------------------------------------------------------------
// Initramfs: newc cpio, uncompressed (the kernel unpacks it as is)

mod cpio {
    use std::io::{self, Write};

    pub struct Writer<W: Write> {
        out: W,
        ino: u32,
        pub written: u64,
    }

    impl<W: Write> Writer<W> {
        pub fn new(out: W) -> Self {
            Writer {
                out,
                ino: 1,
                written: 0,
            }
        }

        fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.out.write_all(bytes)?;
            self.written += bytes.len() as u64;
            Ok(())
        }

        fn pad(&mut self) -> io::Result<()> {
            let n = (4 - (self.written % 4) as usize) % 4;
            self.put(&[0u8; 3][..n])
        }

        /// One entry: `mode` includes the file type bits; `rdev` for device nodes.
        fn entry(
            &mut self,
            name: &str,
            mode: u32,
            data: &[u8],
            rdev: (u32, u32),
        ) -> io::Result<()> {
            let name = name.trim_start_matches('/');
            let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
            let header = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                self.ino,
                mode,
                0, // uid
                0, // gid
                nlink,
                0, // mtime
                data.len(),
                0, // devmajor
                0, // devminor
                rdev.0,
                rdev.1,
                name.len() + 1,
                0, // check
            );
            self.ino += 1;
            self.put(header.as_bytes())?;
            self.put(name.as_bytes())?;
            self.put(&[0])?;
            self.pad()?;
            self.put(data)?;
            self.pad()
        }

        pub fn dir(&mut self, name: &str) -> io::Result<()> {
            self.entry(name, 0o040755, &[], (0, 0))
        }

        pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
            self.entry(name, 0o100000 | perm, data, (0, 0))
        }

        pub fn char_dev(
            &mut self,
            name: &str,
            perm: u32,
            major: u32,
            minor: u32,
        ) -> io::Result<()> {
            self.entry(name, 0o020000 | perm, &[], (major, minor))
        }

        pub fn finish(mut self) -> io::Result<W> {
            self.entry("TRAILER!!!", 0, &[], (0, 0))?;
            // The kernel reads the archive in 512-byte blocks' worth; pad like cpio(1) does.
            let n = (512 - (self.written % 512) as usize) % 512;
            self.put(&vec![0u8; n])?;
            self.out.flush()?;
            Ok(self.out)
        }
    }
}

fn write_initramfs(path: &Path, suite: &Path, interceptor: &Path) -> Result<u64> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = cpio::Writer::new(std::io::BufWriter::new(file));
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
        w.dir(d)?;
    }
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, &fs::read(suite)?)?;
    w.file("bin/interceptor", 0o755, &fs::read(interceptor)?)?;
    w.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    w.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    let written = w.written;
    w.finish()?;
    Ok(written)
}

// ---------------------------------------------------------------------------------------
// Booting

#[derive(Debug, Clone, Copy, PartialEq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

fn qemu_command(
    qemu: &Path,
    accel: Accel,
    kernel: &Kernel,
    initramfs: &Path,
    init_args: &[&str],
) -> Command {
    // `lsm=…,bpf` activates the BPF LSM, which the per-cgroup packet-socket guard needs.
    let mut append =
        String::from("console=ttyS0 panic=-1 quiet lsm=lockdown,capability,landlock,yama,bpf");
    if !init_args.is_empty() {
        append.push_str(" -- ");
        append.push_str(&init_args.join(" "));
    }
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", accel.name()])
        .args(["-m", "1024", "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append]);
    if accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    cmd
}

/// KVM when `/dev/kvm` opens and a guest really boots with it (on some hosts it exists but
/// guests die with "KVM internal error"); TCG otherwise. `VM_TEST_ACCEL` overrides.
fn choose_accel(qemu: &Path, kernel: &Kernel, initramfs: &Path) -> Result<Accel> {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) if !other.is_empty() => bail!("{ACCEL_ENV}={other}: expected kvm or tcg"),
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("vm-test: /dev/kvm not usable: TCG (software emulation)");
        return Ok(Accel::Tcg);
    }
    // The verdict is remembered per host kernel and qemu: a failing KVM guest hangs silently,
    // so finding out costs the whole probe timeout.
    let key = format!(
        "{} {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        qemu.display()
    );
    let cache = host_target_dir().join("vm/accel");
    if let Some(cached) = fs::read_to_string(&cache)
        .ok()
        .and_then(|c| c.strip_prefix(&format!("{key}\n")).map(str::to_string))
    {
        let accel = if cached.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        println!(
            "vm-test: {} (found earlier on this host; delete {} to test KVM again)",
            accel.name(),
            cache.display()
        );
        return Ok(accel);
    }
    let start = Instant::now();
    let cmd = qemu_command(qemu, Accel::Kvm, kernel, initramfs, &["--boot-check"]);
    let (lines, status) = run_vm(cmd, KVM_PROBE_TIMEOUT, None)?;
    let accel = if lines.iter().any(|(_, l)| l.contains("vm-suite: boot ok")) {
        println!(
            "vm-test: KVM works (test boot in {})",
            fmt_duration(start.elapsed())
        );
        Accel::Kvm
    } else {
        let why = lines
            .iter()
            .rev()
            .find(|(_, l)| !l.trim().is_empty())
            .map(|(_, l)| l.clone())
            .unwrap_or(status);
        println!("vm-test: KVM test boot failed ({why}): TCG (software emulation)");
        Accel::Tcg
    };
    let tmp = cache.with_extension(format!("tmp-{}", std::process::id()));
    if fs::write(&tmp, format!("{key}\n{}\n", accel.name())).is_ok() {
        let _ = fs::rename(&tmp, &cache);
    }
    Ok(accel)
}

/// Console lines with the time they arrived (since qemu started).
type Lines = Vec<(Duration, String)>;

/// Runs qemu with a timeout; returns the console lines and how it ended. Lines are also
/// appended to `log` and shown as they come when they are suite output.
fn run_vm(
    mut cmd: Command,
    timeout: Duration,
    log: Option<(&Path, &str)>,
) -> Result<(Lines, String)> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", display(&cmd)))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r
                .read_until(b'\n', &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        }));
    }
    drop(tx);
    let mut file = match log {
        Some((path, _)) => Some(fs::File::create(path)?),
        None => None,
    };
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Some((_, label)) = log {
                    if is_suite_line(&line) {
                        println!("  [{label}] {line}");
                    }
                }
                lines.push((start.elapsed(), line));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let status = child.wait()?;
    for r in readers {
        let _ = r.join();
    }
    let how = if timed_out {
        format!("killed after {}", fmt_duration(timeout))
    } else {
        format!("qemu exited ({status})")
    };
    Ok((lines, how))
}

fn is_suite_line(line: &str) -> bool {
    ["PASS ", "FAIL ", "SKIP ", "    | ", "vm-suite:", "doctor:"]
        .iter()
        .any(|p| line.starts_with(p))
        || line.contains("Kernel panic")
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Passed,
    Failed(usize),
    Unsupported(String),
    /// No summary line: the VM hung, crashed or the suite died.
    Broken(String),
}

#[derive(Debug)]
struct Report {
    spec: String,
    package: String,
    release: Option<String>,
    accel: Accel,
    outcome: Outcome,
    /// Test name → PASS / FAIL / SKIP (+ reason).
    tests: Vec<(String, String, String)>,
    summary: Option<(usize, usize, usize)>,
    time: Duration,
    /// From qemu start to init's first line.
    boot: Option<Duration>,
    console: PathBuf,
}

fn boot(
    qemu: &Path,
    accel: Accel,
    spec: &str,
    kernel: &Kernel,
    initramfs: &Path,
    dir: &Path,
    args: &VmTestArgs,
) -> Result<Report> {
    let console = dir.join("console.log");
    let mut init_args = vec!["run"];
    if let Some(f) = &args.filter {
        init_args.extend(["--filter", f]);
    }
    let cmd = qemu_command(qemu, accel, kernel, initramfs, &init_args);
    println!(
        "\nvm-test: booting {spec} ({}) with {}",
        kernel.name,
        accel.name()
    );
    println!("$ {}", display(&cmd));
    let start = Instant::now();
    let (timed, how) = run_vm(
        cmd,
        Duration::from_secs(args.timeout),
        Some((&console, spec)),
    )?;
    let time = start.elapsed();
    let lines: Vec<String> = timed.iter().map(|(_, l)| l.clone()).collect();
    let mut report = parse_console(&lines, &how);
    report.spec = spec.to_string();
    report.package = kernel.name.clone();
    report.accel = accel;
    report.time = time;
    report.console = console.clone();
    // Boot time: until init's first line (it prints `uname -r` right after mounting).
    report.boot = timed
        .iter()
        .find(|(_, l)| l.starts_with("vm-suite: uname -r"))
        .map(|(t, _)| *t);
    if report.outcome != Outcome::Passed {
        println!(
            "vm-test: {spec}: {} — console saved at {}; its last lines:",
            describe(&report.outcome),
            console.display()
        );
        for l in &lines[lines.len().saturating_sub(40)..] {
            println!("  | {l}");
        }
    }
    Ok(report)
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Passed => "passed".into(),
        Outcome::Failed(n) => format!("{n} test(s) FAILED"),
        Outcome::Unsupported(r) => format!("kernel unsupported: {r}"),
        Outcome::Broken(r) => format!("no result: {r}"),
    }
}

/// Reads the suite's lines out of a console log.
fn parse_console(lines: &[String], how: &str) -> Report {
    let mut tests = Vec::new();
    let mut summary = None;
    let mut unsupported = None;
    let mut release = None;
    let mut panicked = None;
    for line in lines {
        for (tag, status) in [("PASS ", "PASS"), ("FAIL ", "FAIL"), ("SKIP ", "SKIP")] {
            if let Some(rest) = line.strip_prefix(tag) {
                let (name, reason) = match rest.split_once(": ") {
                    Some((n, r)) if !n.contains(' ') => (n, r),
                    _ => (rest.split(' ').next().unwrap_or(rest), ""),
                };
                tests.push((name.to_string(), status.to_string(), reason.to_string()));
            }
        }
        if let Some(rest) = line.strip_prefix("vm-suite: ") {
            if let Some(r) = rest.strip_prefix("uname -r: ") {
                release = Some(r.trim().to_string());
            } else if let Some(s) = parse_summary(rest) {
                summary = Some(s);
            } else if let Some((_, reason)) = rest
                .strip_prefix("kernel ")
                .and_then(|r| r.split_once(" unsupported: "))
            {
                unsupported = Some(reason.to_string());
            } else if rest.starts_with("the suite panicked")
                || rest.starts_with("init setup failed")
            {
                panicked = Some(rest.to_string());
            }
        }
        if line.contains("Kernel panic") && panicked.is_none() {
            panicked = Some(line.trim().to_string());
        }
    }
    let outcome = match (summary, unsupported) {
        (Some(_), Some(reason)) => Outcome::Unsupported(reason),
        (Some((0, 0, 0)), None) => Outcome::Broken("no test ran (--filter matched none?)".into()),
        (Some((_, 0, _)), None) => Outcome::Passed,
        (Some((_, failed, _)), None) => Outcome::Failed(failed),
        (None, _) => Outcome::Broken(match panicked {
            Some(p) => format!("{p} ({how})"),
            None => format!("no summary line ({how})"),
        }),
    };
    Report {
        spec: String::new(),
        package: String::new(),
        release,
        accel: Accel::Tcg,
        outcome,
        tests,
        summary,
        time: Duration::ZERO,
        boot: None,
        console: PathBuf::new(),
    }
}

/// `3 passed, 1 failed, 0 skipped` → (3, 1, 0).
fn parse_summary(s: &str) -> Option<(usize, usize, usize)> {
    let mut parts = s.split(", ");
    let mut num =
        |word: &str| -> Option<usize> { parts.next()?.strip_suffix(word)?.trim().parse().ok() };
    let passed = num(" passed")?;
    let failed = num(" failed")?;
    let skipped = num(" skipped")?;
    Some((passed, failed, skipped))
}

fn print_report(reports: &[Report]) {
    println!("\nvm-test report");
    for r in reports {
        let counts = r
            .summary
            .map(|(p, f, s)| format!("{p} passed, {f} failed, {s} skipped"))
            .unwrap_or_else(|| "no summary".into());
        println!(
            "  {:<6} {} ({}, {}): {} — {counts}; {} total{}",
            r.spec,
            r.release.as_deref().unwrap_or(&r.package),
            r.package,
            r.accel.name(),
            describe(&r.outcome),
            fmt_duration(r.time),
            r.boot
                .map(|b| format!(", boot ≈ {}", fmt_duration(b)))
                .unwrap_or_default(),
        );
        if r.outcome != Outcome::Passed {
            println!("         console: {}", r.console.display());
        }
    }
    // Test × kernel table.
    let mut table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        for (name, status, _) in &r.tests {
            let row = table.entry(name).or_insert_with(|| {
                order.push(name);
                vec!["-"; reports.len()]
            });
            row[i] = status;
        }
    }
    if order.is_empty() {
        return;
    }
    let width = order.iter().map(|n| n.len()).max().unwrap_or(4);
    print!("\n  {:<width$}", "test");
    for r in reports {
        print!("  {:<6}", r.spec);
    }
    println!();
    for name in order {
        print!("  {name:<width$}");
        for s in &table[name] {
            print!("  {s:<6}");
        }
        println!();
    }
    for r in reports {
        for (name, status, reason) in &r.tests {
            if status != "PASS" && !reason.is_empty() {
                println!("  {} {status} {name}: {reason}", r.spec);
            }
        }
    }
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
