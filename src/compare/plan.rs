//! One contract any scheduler can drive: a study's runs as `plan.jsonl`, one resolved config
//! per line in the study's order, and `bn-exp run --plan FILE --index I` to train entry I.
//! Slurm job arrays (`SLURM_ARRAY_TASK_ID`) and Kubernetes indexed Jobs
//! (`JOB_COMPLETION_INDEX`) give each task its index; `compare --study` then collects the runs
//! as it would after training them itself.
//!
//! A task is idempotent: a finished run is left as it is, an interrupted one resumes from its
//! last checkpoint, and a run another process holds is refused (its lock, `run.lock`, is an
//! advisory lock that the kernel releases when its holder dies, so a killed task's run can be
//! taken over by the next attempt at once).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::study::load_study;
use crate::data::DataSource;
use crate::progress::Progress;
use crate::train::{Outcome, TrainOptions, TrainRequest};

/// The plan's file name in the study's results folder.
pub const PLAN_FILE: &str = "plan.jsonl";

/// The environment variables a scheduler sets to a task's index, in the order they are read.
pub const INDEX_VARIABLES: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// One line of `plan.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub index: usize,
    pub name: String,
    /// The run's folder, as the study's results folder names it.
    pub run_dir: PathBuf,
    /// The resolved config (base, `set` and the grid's values).
    pub config: Value,
}

/// What writing a plan produced.
#[derive(Debug)]
pub struct PlanOutcome {
    pub path: PathBuf,
    pub runs: usize,
    /// Runs already finished (a task for them does nothing).
    pub done: usize,
}

/// Write `<results_dir>/<study>/plan.jsonl` for a study file, after the same checks as
/// `compare --study` (a run folder of another config is refused).
pub fn write_plan(study_file: &Path, results_dir: &Path) -> Result<PlanOutcome> {
    let study = load_study(study_file)?;
    let study_dir = results_dir.join(&study.name);
    // The same preparation as a local study: configs checked, `study.json` written.
    super::plan_study(&study, &study_dir)?;
    let mut text = String::new();
    let mut done = 0;
    for (index, run) in study.runs.iter().enumerate() {
        let run_dir = study_dir.join(&run.name);
        done += usize::from(crate::run::run_progress(&run_dir) == crate::run::RunProgress::Done);
        let entry = PlanEntry {
            index,
            name: run.name.clone(),
            run_dir,
            config: run.config.clone(),
        };
        text.push_str(&serde_json::to_string(&entry)?);
        text.push('\n');
    }
    let path = study_dir.join(PLAN_FILE);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(PlanOutcome {
        path,
        runs: study.runs.len(),
        done,
    })
}

/// Entry `index` of a plan file.
pub fn read_entry(plan: &Path, index: usize) -> Result<PlanEntry> {
    let text = std::fs::read_to_string(plan)
        .with_context(|| format!("cannot read the plan {}", plan.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(line) = lines.get(index) else {
        bail!(
            "{} holds {} runs (indices 0 to {}); there is no index {index}",
            plan.display(),
            lines.len(),
            lines.len().saturating_sub(1)
        );
    };
    let entry: PlanEntry = serde_json::from_str(line)
        .with_context(|| format!("{} line {} is not a plan entry", plan.display(), index + 1))?;
    if entry.index != index {
        bail!(
            "{} line {} says index {}: the plan is damaged; write it again with compare --plan",
            plan.display(),
            index + 1,
            entry.index
        );
    }
    Ok(entry)
}

/// The task's index: `explicit` if given, else the first scheduler variable that is set.
pub fn task_index(explicit: Option<usize>) -> Result<usize> {
    if let Some(index) = explicit {
        return Ok(index);
    }
    for name in INDEX_VARIABLES {
        if let Ok(value) = std::env::var(name) {
            return value.trim().parse().with_context(|| {
                format!("{name} is {value:?}, not an index; give --index instead")
            });
        }
    }
    bail!(
        "no --index, and neither {} is set: give the plan entry to run",
        INDEX_VARIABLES.join(" nor ")
    )
}

/// Train (or resume, or leave as it is) entry `index` of a plan.
pub fn run_entry(
    plan: &Path,
    index: usize,
    data: DataSource,
    progress: &dyn Progress,
) -> Result<(PlanEntry, Outcome)> {
    let entry = read_entry(plan, index)?;
    let config = crate::config::config_from_value(entry.config.clone())
        .with_context(|| format!("plan entry {index} ({}) is not a valid config", entry.name))?;
    let request = TrainRequest {
        config,
        run_dir: entry.run_dir.clone(),
        // Resuming a fresh folder starts it; a finished one is returned as it is.
        resume: true,
        force: false,
        data,
        options: TrainOptions::default(),
    };
    let outcome = crate::train::train(&request, progress)?;
    Ok((entry, outcome))
}
