//! Tools and guest binaries: qemu and musl (installed when missing), the static `interceptor`
//! and `vm-suite` built for the guest.

use super::*;

pub(super) fn ensure_qemu() -> Result<PathBuf> {
    if let Some(q) = find_in_path("qemu-system-x86_64") {
        return Ok(q);
    }
    apt_install(&["qemu-system-x86"])?;
    find_in_path("qemu-system-x86_64")
        .context("qemu-system-x86_64 still missing after installing qemu-system-x86")
}

/// The musl target for rustup and the musl C toolchain (`musl-gcc`) for the C parts of the
/// daemon's dependencies (libpg_query, ring).
pub(super) fn ensure_musl() -> Result<()> {
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
pub(super) fn build_guest() -> Result<(PathBuf, PathBuf)> {
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
pub(super) const BINDGEN_ARGS_ENV: &str = "BINDGEN_EXTRA_CLANG_ARGS_x86_64_unknown_linux_musl";

/// `/usr/lib/llvm-N/lib/clang/V/include` of the newest LLVM installed (libclang's builtins).
pub(super) fn clang_resource_includes() -> Vec<PathBuf> {
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
pub(super) fn elf_interpreter(data: &[u8]) -> bool {
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
