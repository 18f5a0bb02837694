//! TODO: filled in by its issue.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::BenchArgs;

/// Entry point of `bn-exp bench`.
pub fn bench_command(_args: &BenchArgs) -> Result<ExitCode> {
    bail!("`bn-exp bench` is not built yet")
}
