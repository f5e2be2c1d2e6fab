//! Embeds the eBPF object built by `cargo xtask build` into the daemon.
//!
//! The object path comes from `INTERCEPTOR_EBPF_OBJECT` (set by xtask) or the default build
//! location. When it does not exist yet, an empty placeholder is embedded so that `cargo check`
//! and unit tests work; the daemon then refuses to attach with an error saying how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=INTERCEPTOR_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let default = manifest.join("../target/bpf/bpfel-unknown-none/release/interceptor-ebpf");
    let src = env::var_os("INTERCEPTOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    let out =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets this")).join("interceptor-ebpf.o");
    println!("cargo:rerun-if-changed={}", src.display());
    match fs::read(&src) {
        Ok(bytes) => fs::write(&out, bytes).expect("write embedded eBPF object"),
        Err(_) => {
            println!(
                "cargo:warning=eBPF object {} not found: embedding none (run `cargo xtask build`)",
                src.display()
            );
            fs::write(&out, []).expect("write empty placeholder");
        }
    }
}
