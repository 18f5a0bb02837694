//! TODO: downloads.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::DatasetName;

/// Entry point of `bn-exp data fetch`.
pub fn fetch_command(
    _dir: &Path,
    _dataset: DatasetName,
    _base_url: Option<&str>,
    _force: bool,
) -> Result<ExitCode> {
    bail!("`bn-exp data fetch` is not built yet")
}
