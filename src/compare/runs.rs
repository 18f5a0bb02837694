//! Reading run folders as `bn-exp train` writes them (docs/formats.md): `config.json` for the
//! condition, `metrics.jsonl` for every accuracy number in the table, `summary.json` for the
//! status and timings. Only what the table needs is read, so new fields never break compare.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";
/// Where compare sends a child run's stdout and stderr.
pub const LOG_FILE: &str = "train.log";
/// Study description kept next to a study's runs (see [`super::study::StudyRecord`]).
pub const STUDY_RECORD_FILE: &str = "study.json";
/// Folder of a study's expanded per-run configs, hidden so it is never taken for a run.
pub const CONFIGS_DIR: &str = ".configs";

/// How far a run folder got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunProgress {
    /// Nothing trained yet: no `config.json`.
    Fresh,
    /// Started but not done (running or interrupted): `config.json` without `summary.json`.
    Started,
    /// Done, finished or diverged: `summary.json` is there.
    Done,
}

/// Where a run folder stands, from which files it holds.
pub fn run_progress(dir: &Path) -> RunProgress {
    if dir.join(SUMMARY_FILE).is_file() {
        RunProgress::Done
    } else if dir.join(CONFIG_FILE).is_file() {
        RunProgress::Started
    } else {
        RunProgress::Fresh
    }
}

/// How a done run ended (`summary.json` `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Finished,
    Diverged,
}

/// One evaluation line of `metrics.jsonl`, reduced to what the table uses.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Eval {
    pub step: u64,
    /// `null` in the file (e.g. after the loss became NaN) is kept as `None` and ignored.
    #[serde(default)]
    pub test_acc: Option<f64>,
}

/// A done run, loaded.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The folder's name, which is the run's name in a study.
    pub name: String,
    pub dir: PathBuf,
    /// `config.json` as written by train (resolved, defaults filled in).
    pub config: Value,
    pub status: RunStatus,
    pub diverged_at: Option<u64>,
    pub evals: Vec<Eval>,
    pub wall_s: Option<f64>,
    pub steps_per_s: Option<f64>,
    /// Test accuracy with the paper's population statistics (BN runs with the pass on).
    pub population_acc: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct SummaryFile {
    status: String,
    #[serde(default)]
    diverged_at: Option<u64>,
    #[serde(default)]
    wall_s: Option<f64>,
    #[serde(default)]
    steps_per_s: Option<f64>,
    #[serde(default)]
    population: Option<PopulationField>,
}

#[derive(Debug, Deserialize)]
struct PopulationField {
    #[serde(default)]
    test_acc: Option<f64>,
}

/// Load a done run folder (one holding `summary.json`).
pub fn load_run(dir: &Path) -> Result<RunRecord> {
    let config = read_json(&dir.join(CONFIG_FILE))?;
    let summary_path = dir.join(SUMMARY_FILE);
    let summary: SummaryFile = serde_json::from_value(read_json(&summary_path)?)
        .with_context(|| format!("unexpected content in {}", summary_path.display()))?;
    let status = match summary.status.as_str() {
        "finished" => RunStatus::Finished,
        "diverged" => RunStatus::Diverged,
        other => bail!(
            "{}: unknown status `{other}` (expected \"finished\" or \"diverged\")",
            summary_path.display()
        ),
    };
    let evals = read_evals(&dir.join(METRICS_FILE))?;
    Ok(RunRecord {
        name: folder_name(dir),
        dir: dir.to_path_buf(),
        config,
        status,
        diverged_at: summary.diverged_at,
        evals,
        wall_s: summary.wall_s,
        steps_per_s: summary.steps_per_s,
        population_acc: summary.population.and_then(|p| p.test_acc),
    })
}

/// Read a JSON file with the file named in the error.
pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Every evaluation of a `metrics.jsonl`, in step order.
///
/// If a resumed run evaluated some steps again, the later lines replace the earlier ones from
/// that step on: they describe the training that actually led to the final model.
pub fn read_evals(path: &Path) -> Result<Vec<Eval>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut evals: Vec<Eval> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let eval: Eval = serde_json::from_str(line).with_context(|| {
            format!("{} line {}: not a metrics line", path.display(), index + 1)
        })?;
        if let Some(acc) = eval.test_acc {
            ensure!(
                acc.is_finite(),
                "{} line {}: test_acc is not a number",
                path.display(),
                index + 1
            );
        }
        evals.retain(|earlier| earlier.step < eval.step);
        evals.push(eval);
    }
    Ok(evals)
}

/// The last step a (possibly running) run has evaluated, for progress display. Tolerates a
/// half-written last line; never fails.
pub fn last_evaluated_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?;
    text.lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Eval>(line).ok())
        .map(|eval| eval.step)
}

/// A folder's last path component, used as a run's name.
pub fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// A folder holds a run if train has written into it.
fn is_run_folder(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file() || dir.join(SUMMARY_FILE).is_file()
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

fn run_subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
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
