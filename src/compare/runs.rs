//! The runs a comparison is made of: done run folders, read through [`crate::run::Run`] (the
//! one reader of run folders), reduced to what the table needs, and found among the folders
//! given on the command line.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail, ensure};
use serde_json::Value;

pub use crate::run::{
    CONFIG_FILE, LOG_FILE, METRICS_FILE, RunProgress, SUMMARY_FILE, folder_name, run_progress,
};
use crate::run::{
    Drift, EvalRecord, MeasureSummary, Run, Summary, is_run_folder, run_subfolders,
    summarise_measures,
};

/// Study description kept next to a study's runs (see [`super::study::StudyRecord`]).
pub const STUDY_RECORD_FILE: &str = "study.json";
/// Folder of a study's expanded per-run configs, hidden so it is never taken for a run.
pub const CONFIGS_DIR: &str = ".configs";

/// A done run, loaded: its folder as read, its summary, and its measures in a table's terms;
/// the other numbers the table shows are methods on top of [`crate::run`]'s definitions, so
/// none is copied out of the run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run folder as [`Run::read`] read it.
    pub run: Run,
    /// `summary.json`, which every done run has.
    pub summary: Summary,
    /// Santurkar et al.'s measures, when the run took them (`measures.jsonl`).
    pub measures: Option<MeasureSummary>,
}

impl RunRecord {
    /// The folder's name, which is the run's name in a study.
    pub fn name(&self) -> String {
        folder_name(&self.run.dir)
    }

    /// `config.json` as written by train (resolved, defaults filled in).
    pub fn config(&self) -> &Value {
        &self.run.config
    }

    /// The run's evaluations (`metrics.jsonl`), in step order.
    pub fn evals(&self) -> &[EvalRecord] {
        &self.run.metrics
    }

    /// Test accuracy with the paper's population statistics (BN runs with the pass on).
    pub fn population_acc(&self) -> Option<f64> {
        self.run.population_acc()
    }

    /// Wall seconds the run took, when its summary says (0 means unknown).
    pub fn wall_s(&self) -> Option<f64> {
        Some(self.summary.wall_s).filter(|w| *w > 0.0)
    }

    /// Training steps per second, when its summary says (0 means unknown).
    pub fn steps_per_s(&self) -> Option<f64> {
        Some(self.summary.steps_per_s).filter(|s| *s > 0.0)
    }

    /// The tracked unit's drift (the paper's Figure 1 b, c) over the run.
    pub fn drift(&self) -> Option<Drift> {
        self.run.drift(total_steps(&self.run.config, &self.summary))
    }
}

/// A run's configured length (`steps`; the summary's count if the config lacks it), over which
/// its drift and its early probes are reckoned.
fn total_steps(config: &Value, summary: &Summary) -> u64 {
    config
        .get("steps")
        .and_then(Value::as_u64)
        .unwrap_or(summary.steps)
}

/// Load a done run folder (one holding a readable `summary.json`).
pub fn load_run(dir: &Path) -> Result<RunRecord> {
    let run = Run::read(dir);
    let summary_path = dir.join(SUMMARY_FILE);
    let Some(summary) = run.summary.clone() else {
        bail!(
            "{} is missing or damaged: {}",
            summary_path.display(),
            run.notes.join("; ")
        );
    };
    ensure!(
        run.config.is_object(),
        "{} is missing or damaged",
        dir.join(CONFIG_FILE).display()
    );
    let measures = summarise_measures(&run.measures, total_steps(&run.config, &summary));
    Ok(RunRecord {
        run,
        summary,
        measures,
    })
}

/// Read a JSON file with the file named in the error.
pub fn read_json(path: &Path) -> Result<Value> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The last step a (possibly running) run has evaluated, for progress display. Tolerates a
/// half-written last line; never fails.
pub fn last_evaluated_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?;
    text.lines().rev().find_map(|line| {
        serde_json::from_str::<Value>(line)
            .ok()?
            .get("step")?
            .as_u64()
    })
}

/// The run folders named on the command line, directly or as study folders.
#[derive(Debug, Default)]
pub struct FoundRuns {
    /// Done runs (with `summary.json`), in the order given, a study's runs by name.
    pub done: Vec<PathBuf>,
    /// Runs without `summary.json`, which the table leaves out.
    pub unfinished: Vec<PathBuf>,
    /// The arguments that were study folders (folders of runs).
    pub study_dirs: Vec<PathBuf>,
}

/// Sort the given folders into runs: a folder with `config.json` or `summary.json` is a run,
/// any other folder is a study whose run subfolders (not hidden ones) are taken in name order.
pub fn find_runs(dirs: &[PathBuf]) -> Result<FoundRuns> {
    let mut found = FoundRuns::default();
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        ensure!(dir.is_dir(), "{} is not a folder", dir.display());
        let runs = if is_run_folder(dir) {
            vec![dir.clone()]
        } else {
            let runs = run_subfolders(dir)?;
            ensure!(
                !runs.is_empty(),
                "{} is neither a run folder (no {CONFIG_FILE}) nor a study folder (no subfolder holding a run)",
                dir.display()
            );
            found.study_dirs.push(dir.clone());
            runs
        };
        for run in runs {
            let identity = run.canonicalize().unwrap_or_else(|_| run.clone());
            if seen.contains(&identity) {
                continue;
            }
            seen.push(identity);
            match run_progress(&run) {
                RunProgress::Done => found.done.push(run),
                _ => found.unfinished.push(run),
            }
        }
    }
    Ok(found)
}
