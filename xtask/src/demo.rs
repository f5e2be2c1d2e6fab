//! `cargo xtask demo`: an end-to-end demonstration of the interceptor.

use anyhow::{bail, Result};

pub fn run_demo() -> Result<()> {
    bail!("demo: not implemented yet")
}
