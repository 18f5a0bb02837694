//! TODO: filled in by its issue.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::TrainArgs;

/// Entry point of `bn-exp train`.
pub fn train_command(_args: &TrainArgs) -> Result<ExitCode> {
    bail!("`bn-exp train` is not built yet")
}
