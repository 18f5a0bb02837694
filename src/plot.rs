//! TODO: filled in by its issue.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::PlotArgs;

/// Entry point of `bn-exp plot`.
pub fn plot_command(_args: &PlotArgs) -> Result<ExitCode> {
    bail!("`bn-exp plot` is not built yet")
}
