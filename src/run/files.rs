//! The names in a run folder, each said once, and what makes a folder a run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The resolved config the run was started with.
pub const CONFIG_FILE: &str = "config.json";
/// One line per evaluation.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// One line per probe of the hidden layers' pre-activations.
pub const ACTIVATIONS_FILE: &str = "activations.jsonl";
/// One line per probe of Santurkar et al.'s optimisation measures (`measures.every`).
pub const MEASURES_FILE: &str = "measures.jsonl";
/// Written once the run has finished or diverged.
pub const SUMMARY_FILE: &str = "summary.json";
/// TensorBoard's view of the records, made from them and appended to beside them (`events.rs`). TensorBoard reads
/// every file whose name holds `tfevents`.
pub const EVENTS_FILE: &str = "events.out.tfevents.bn-exp";
/// Where `compare` sends a child run's stdout and stderr.
pub const LOG_FILE: &str = "train.log";
/// The lock file that marks a run folder as in use by one bn-exp process.
pub const LOCK_FILE: &str = "run.lock";
/// The file `--steal-after` takers queue on (kept, like `run.lock`, so that all of them lock
/// one file).
pub const STEAL_GUARD_FILE: &str = "run.lock.steal";
/// The resumable checkpoint: a folder of [`STATE_FILE`], [`MODEL_FILE`] and [`OPTIM_FILE`].
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The previous checkpoint, moved aside while a new one is put in place.
pub const CHECKPOINT_OLD_DIR: &str = "checkpoint.old";
/// A checkpoint being written, before it is put in place: the prefix of each save's own
/// staging folder ([`checkpoint_staging_name`]), and the one folder of versions before that.
pub const CHECKPOINT_TMP_DIR: &str = "checkpoint.tmp";
/// In a checkpoint: the training loop's state (step, loss sums, timings).
pub const STATE_FILE: &str = "state.json";
/// In a checkpoint: the model's parameters and running statistics.
pub const MODEL_FILE: &str = "model.bpk";
/// In a checkpoint: the optimiser's state (momentum).
pub const OPTIM_FILE: &str = "optim.bpk";
/// The figures `plot` draws of a run or a study.
pub const PLOTS_DIR: &str = "plots";

/// Every file and folder bn-exp writes into a run folder under a fixed name: what `--force`
/// removes, with the checkpoint staging folders ([`is_checkpoint_staging`]), and nothing else
/// (a user's notes beside them stay).
pub const RUN_FILES: [&str; 10] = [
    CONFIG_FILE,
    METRICS_FILE,
    ACTIVATIONS_FILE,
    MEASURES_FILE,
    SUMMARY_FILE,
    EVENTS_FILE,
    LOG_FILE,
    CHECKPOINT_DIR,
    CHECKPOINT_OLD_DIR,
    PLOTS_DIR,
];

/// A folder holds a run when train has written any of its records or checkpoints into it:
/// the one definition train (before it overwrites), compare (before it reuses or resumes) and
/// plot (before it reads) all use. A log or our plots alone do not make a run.
pub fn is_run_folder(dir: &Path) -> bool {
    [
        CONFIG_FILE,
        METRICS_FILE,
        ACTIVATIONS_FILE,
        SUMMARY_FILE,
        CHECKPOINT_DIR,
        CHECKPOINT_OLD_DIR,
    ]
    .iter()
    .any(|file| dir.join(file).exists())
}

/// Where a run folder stands, from which files it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunProgress {
    /// Nothing trained yet: no run file.
    Fresh,
    /// Started but not done (running or interrupted): no `summary.json` yet.
    Started,
    /// Done, finished or diverged: `summary.json` is there.
    Done,
}

/// Where a run folder stands.
pub fn run_progress(dir: &Path) -> RunProgress {
    if dir.join(SUMMARY_FILE).is_file() {
        RunProgress::Done
    } else if is_run_folder(dir) {
        RunProgress::Started
    } else {
        RunProgress::Fresh
    }
}

/// The run folders directly inside `dir` (not hidden ones, not our own `plots/`), in name
/// order.
pub fn run_subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && path.is_dir() && is_run_folder(&path) {
            runs.push(path);
        }
    }
    runs.sort();
    Ok(runs)
}

/// A folder's last path component, used as a run's name.
pub fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// `checkpoint.tmp.<pid>-<nanoseconds>`: the staging folder of one save of one process, unique
/// also across the hosts that share a results folder, so that a holder that lost its run can
/// remove what it staged without touching what the new holder stages.
pub fn checkpoint_staging_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{CHECKPOINT_TMP_DIR}.{}-{nanos}", std::process::id())
}

/// Whether `name` is a checkpoint's staging folder ([`checkpoint_staging_name`], or the
/// `checkpoint.tmp` of earlier versions): what a crash mid-save leaves behind.
pub fn is_checkpoint_staging(name: &str) -> bool {
    name.strip_prefix(CHECKPOINT_TMP_DIR)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_folders_are_recognised_and_nothing_else() {
        assert!(is_checkpoint_staging(&checkpoint_staging_name()));
        assert!(is_checkpoint_staging("checkpoint.tmp"));
        for other in [
            "checkpoint",
            "checkpoint.old",
            "checkpoint.tmpx",
            "notes.tmp",
        ] {
            assert!(!is_checkpoint_staging(other), "{other}");
        }
    }
}
