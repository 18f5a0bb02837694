//! TODO: filled in by its issue.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::CompareArgs;

/// Entry point of `bn-exp compare`.
pub fn compare_command(_args: &CompareArgs) -> Result<ExitCode> {
    bail!("`bn-exp compare` is not built yet")
}
