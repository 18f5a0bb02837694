//! One contract any scheduler can drive: a study's runs as `plan.jsonl`, one resolved config
//! per line in the study's order, and `bn-exp run --plan FILE --index I` to train entry I.
//! Slurm job arrays (`SLURM_ARRAY_TASK_ID`) and Kubernetes indexed Jobs
//! (`JOB_COMPLETION_INDEX`) give each task its index; `compare --study` then collects the runs
//! as it would after training them itself. The scheduler files beside the plan are `emit.rs`'s.
//!
//! A task is idempotent: a finished run is left as it is, an interrupted one resumes from its
//! last checkpoint, and a run another process holds is refused (its lock, `run.lock`, is an
//! advisory lock that the kernel releases when its holder dies, so a killed task's run can be
//! taken over by the next attempt at once). Where the kernel cannot see the holder die (a node
//! that crashed holding a lock on a shared filesystem), `--steal-after` takes over a lock whose
//! heartbeat has been silent that long; the scheduler files (`emit.rs`) pass
//! `EMITTED_STEAL_AFTER_S`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::prepare::plan_study;
use super::study::load_study;
use crate::data::DataSource;
use crate::progress::Progress;
use crate::run::write_text_atomic;
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
    let jobs = plan_study(&study, &study_dir)?;
    let mut text = String::new();
    for (index, run) in study.runs.iter().enumerate() {
        let entry = PlanEntry {
            index,
            name: run.name.clone(),
            run_dir: study_dir.join(&run.name),
            config: run.config.clone(),
        };
        text.push_str(&serde_json::to_string(&entry)?);
        text.push('\n');
    }
    let path = study_dir.join(PLAN_FILE);
    // Tasks of an earlier plan may be reading it: they see the old file or the new one.
    write_text_atomic(&path, &text)?;
    Ok(PlanOutcome {
        path,
        runs: study.runs.len(),
        // The runs plan_study has no job for are the finished ones.
        done: study.runs.len() - jobs.len(),
    })
}

/// Entry `index` of a plan file.
fn read_entry(plan: &Path, index: usize) -> Result<PlanEntry> {
    let entries = read_plan(plan)?;
    let count = entries.len();
    entries.into_iter().nth(index).with_context(|| {
        format!(
            "{} holds {count} runs (indices 0 to {}); there is no index {index}",
            plan.display(),
            count.saturating_sub(1)
        )
    })
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
    steal_after: Option<std::time::Duration>,
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
        options: TrainOptions {
            steal_after,
            ..TrainOptions::default()
        },
    };
    let outcome = crate::train::train(&request, progress)?;
    Ok((entry, outcome))
}

/// Every entry of a plan file; each line must carry its own index.
pub(super) fn read_plan(plan: &Path) -> Result<Vec<PlanEntry>> {
    let text = std::fs::read_to_string(plan)
        .with_context(|| format!("cannot read the plan {}", plan.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let entry: PlanEntry = serde_json::from_str(l)
                .with_context(|| format!("{} line {} is not a plan entry", plan.display(), i + 1))?;
            if entry.index != i {
                bail!(
                    "{} line {} says index {}: the plan is damaged; write it again with compare --plan",
                    plan.display(),
                    i + 1,
                    entry.index
                );
            }
            Ok(entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_entry_is_read_by_its_index_and_a_damaged_plan_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = tmp.path().join(PLAN_FILE);
        let entry = |index: usize| PlanEntry {
            index,
            name: format!("run-{index}"),
            run_dir: tmp.path().join(format!("run-{index}")),
            config: serde_json::json!({"seed": index}),
        };
        let lines = |indices: &[usize]| -> String {
            indices
                .iter()
                .map(|&i| serde_json::to_string(&entry(i)).unwrap() + "\n")
                .collect()
        };
        write_text_atomic(&plan, &lines(&[0, 1, 2])).unwrap();
        assert_eq!(read_entry(&plan, 1).unwrap(), entry(1));
        let err = format!("{:#}", read_entry(&plan, 3).unwrap_err());
        assert!(err.contains("holds 3 runs (indices 0 to 2)"), "{err}");
        write_text_atomic(&plan, &lines(&[0, 2])).unwrap();
        let err = format!("{:#}", read_entry(&plan, 0).unwrap_err());
        assert!(err.contains("line 2 says index 2"), "{err}");
        std::fs::write(&plan, "{}\n").unwrap();
        let err = format!("{:#}", read_entry(&plan, 0).unwrap_err());
        assert!(err.contains("line 1 is not a plan entry"), "{err}");
    }
}
