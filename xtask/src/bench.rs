//! `cargo xtask bench <which>`: benchmarks, kept apart from tests.

use anyhow::{bail, Result};

pub fn run_bench(which: &str) -> Result<()> {
    bail!("bench {which}: not implemented yet")
}
