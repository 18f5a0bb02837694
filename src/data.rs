//! TODO: data sets.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::DatasetName;

/// Entry point of `bn-exp data verify`.
pub fn verify_command(_dir: &Path) -> Result<ExitCode> {
    bail!("`bn-exp data verify` is not built yet")
}

/// Entry point of `bn-exp data info`.
pub fn info_command(_dir: &Path, _dataset: DatasetName) -> Result<ExitCode> {
    bail!("`bn-exp data info` is not built yet")
}
