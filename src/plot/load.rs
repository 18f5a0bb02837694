//! Finding and reading the runs to plot. Reading is [`crate::run::Run::read`], the one reader
//! of run folders, which never gives up on damage: what it leaves out becomes a warning here.
//! Only "there is no run here at all" is an error, and that is decided by the caller once every
//! input has been looked at.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::set::Diagnostics;
use crate::run::{CHECKPOINT_DIR, PLOTS_DIR, is_run_folder};
pub use crate::run::{Run, finite};

/// Folders inside a study folder that are never runs (our own output, checkpoints).
const NOT_RUN_FOLDERS: [&str; 2] = [PLOTS_DIR, CHECKPOINT_DIR];

/// Read one run folder; what the reader left out becomes warnings.
pub fn load_run(dir: &Path, diag: &mut Diagnostics) -> Run {
    let run = Run::read(dir);
    for note in &run.notes {
        diag.warn(note.clone());
    }
    run
}

/// Resolve the command-line inputs to run folders: a run folder stands for itself, any other
/// folder for its immediate subfolders that are runs. Duplicates are dropped, order is stable.
pub fn discover_runs(inputs: &[PathBuf], diag: &mut Diagnostics) -> Result<Vec<PathBuf>> {
    let mut seen = BTreeSet::new();
    let mut runs = Vec::new();
    for input in inputs {
        for dir in runs_in_input(input, diag)? {
            let key = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if seen.insert(key) {
                runs.push(dir);
            }
        }
    }
    Ok(runs)
}

fn runs_in_input(input: &Path, diag: &mut Diagnostics) -> Result<Vec<PathBuf>> {
    if !input.exists() {
        bail!("input {} does not exist", input.display());
    }
    if !input.is_dir() {
        bail!(
            "input {} is not a folder (give a run folder or a study folder)",
            input.display()
        );
    }
    if is_run_folder(input) {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut runs = Vec::new();
    for sub in sorted_subfolders(input)? {
        let skip = sub
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| NOT_RUN_FOLDERS.contains(&n));
        if skip {
            continue;
        }
        if is_run_folder(&sub) {
            runs.push(sub);
        }
    }
    if runs.is_empty() {
        diag.warn(format!(
            "{}: no run folders in it (a run folder holds config.json, metrics.jsonl or summary.json)",
            input.display()
        ));
    }
    Ok(runs)
}

fn sorted_subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    let mut subs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    Ok(subs)
}
