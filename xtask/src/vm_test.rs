//! `cargo xtask vm-test`: the suite run under qemu across kernels (issue 7).

use anyhow::{bail, Result};

/// The VM suite as run by `cargo xtask test` (last step).
pub fn vm_suite() -> Result<()> {
    println!("vm-test: not implemented yet (issue 7)");
    Ok(())
}

pub fn run_vm_test() -> Result<()> {
    bail!("vm-test: not implemented yet (issue 7)")
}
