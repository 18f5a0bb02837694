//! One contract any scheduler can drive: a study's runs as `plan.jsonl`, one resolved config
//! per line in the study's order, and `bn-exp run --plan FILE --index I` to train entry I.
//! Slurm job arrays (`SLURM_ARRAY_TASK_ID`) and Kubernetes indexed Jobs
//! (`JOB_COMPLETION_INDEX`) give each task its index; `compare --study` then collects the runs
//! as it would after training them itself.
//!
//! A task is idempotent: a finished run is left as it is, an interrupted one resumes from its
//! last checkpoint, and a run another process holds is refused (its lock, `run.lock`, is an
//! advisory lock that the kernel releases when its holder dies, so a killed task's run can be
//! taken over by the next attempt at once). Where the kernel cannot see the holder die (a node
//! that crashed holding a lock on a shared filesystem), `--steal-after` takes over a lock whose
//! heartbeat has been silent that long; the scheduler files pass [`EMITTED_STEAL_AFTER_S`].

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

/// Which scheduler file `--emit` writes beside the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// `slurm.sh`: an sbatch job array.
    Slurm,
    /// `k8s-job.yaml`: a Kubernetes indexed Job.
    K8s,
}

/// What the scheduler file asks for beyond the plan.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Tasks at once (`%P` of the array, `parallelism` of the Job); `None`: no limit.
    pub max_parallel: Option<usize>,
    /// Further `#SBATCH` lines, as given (`--sbatch-line "--mem=4G"`).
    pub sbatch_lines: Vec<String>,
    /// The data folder every task reads.
    pub data_dir: PathBuf,
    /// The container image of the Kubernetes Job.
    pub image: String,
}

/// Each task's time limit: three times the longest run's estimate from `bench`'s step timings
/// (one thread), and at least 10 minutes, in Slurm's `D-HH:MM:SS`.
pub fn time_limit(entries: &[PlanEntry]) -> Result<String> {
    let costs = crate::bench::estimate::calibrate()?;
    let longest = entries
        .iter()
        .map(|e| crate::bench::estimate::run_seconds(&e.config, &costs))
        .fold(0.0, f64::max);
    let seconds = (3.0 * longest).max(600.0).ceil() as u64;
    Ok(format!(
        "{}-{:02}:{:02}:{:02}",
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    ))
}

/// Every entry of a plan file.
pub fn read_plan(plan: &Path) -> Result<Vec<PlanEntry>> {
    let text = std::fs::read_to_string(plan)
        .with_context(|| format!("cannot read the plan {}", plan.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {} is not a plan entry", plan.display(), i + 1))
        })
        .collect()
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("cannot find {}", path.display()))
}

/// The `--steal-after` of the emitted task command, in seconds. A requeued task that lands on
/// a new node after its old node crashed may find the old lock still held on the shared
/// filesystem; ten minutes of silence (120 missed heartbeats) means its holder is gone.
pub const EMITTED_STEAL_AFTER_S: u64 = 600;

/// Write the scheduler file for a plan beside it; returns its path.
pub fn emit(plan: &Path, kind: Emit, options: &EmitOptions) -> Result<PathBuf> {
    let entries = read_plan(plan)?;
    anyhow::ensure!(!entries.is_empty(), "{} holds no runs", plan.display());
    let plan = absolute(plan)?;
    let dir = plan
        .parent()
        .context("the plan has a folder")?
        .to_path_buf();
    let exe = std::env::current_exe().context("cannot find the bn-exp executable")?;
    let data = absolute(&options.data_dir)?;
    let study = dir
        .file_name()
        .map_or("study".to_string(), |n| n.to_string_lossy().to_string());
    let command = format!(
        "{} run --quiet --plan {} --data-dir {} --steal-after {EMITTED_STEAL_AFTER_S}",
        exe.display(),
        plan.display(),
        data.display()
    );
    let (name, text) = match kind {
        Emit::Slurm => (
            "slurm.sh",
            slurm_script(&study, &dir, &entries, &command, options)?,
        ),
        Emit::K8s => (
            "k8s-job.yaml",
            k8s_job(&study, &dir, entries.len(), &command, options),
        ),
    };
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn slurm_script(
    study: &str,
    dir: &Path,
    entries: &[PlanEntry],
    command: &str,
    options: &EmitOptions,
) -> Result<String> {
    let last = entries.len() - 1;
    let limit = options
        .max_parallel
        .map_or(String::new(), |p| format!("%{p}"));
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# bn-exp study {study}: one array task per run of plan.jsonl."),
        "# Submit with `sbatch slurm.sh`, then collect with `bn-exp compare --study ...`.".into(),
        format!("#SBATCH --job-name=bn-exp-{study}"),
        format!("#SBATCH --array=0-{last}{limit}"),
        "#SBATCH --cpus-per-task=1".into(),
        format!("#SBATCH --time={}", time_limit(entries)?),
        format!("#SBATCH --output={}/slurm-%A_%a.out", dir.display()),
        "#SBATCH --requeue".into(),
    ];
    if let Some(p) = &options.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(a) = &options.account {
        lines.push(format!("#SBATCH --account={a}"));
    }
    lines.extend(
        options
            .sbatch_lines
            .iter()
            .map(|l| format!("#SBATCH {}", l.trim())),
    );
    lines.push(String::new());
    lines.push("# One thread per task: the scheduler gives each task one core.".into());
    lines.push("export RAYON_NUM_THREADS=1".into());
    lines.push(format!("exec {command}"));
    lines.push(String::new());
    Ok(lines.join("\n"))
}

fn k8s_job(study: &str, dir: &Path, runs: usize, command: &str, options: &EmitOptions) -> String {
    let parallelism = options.max_parallel.unwrap_or(runs).min(runs);
    let image = if options.image.is_empty() {
        "bn-exp:latest"
    } else {
        &options.image
    };
    let args: Vec<String> = command
        .split_whitespace()
        .map(|a| format!("\"{}\"", a.replace('"', "\\\"")))
        .collect();
    format!(
        "# bn-exp study {study}: one indexed task per run of plan.jsonl; JOB_COMPLETION_INDEX\n\
         # picks the entry. The plan, the results ({}) and the data must be on a volume every\n\
         # pod mounts at the same path.\n\
         apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n  name: bn-exp-{}\n\
         spec:\n  completionMode: Indexed\n  completions: {runs}\n  parallelism: {parallelism}\n  \
         backoffLimit: {}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      \
         - name: bn-exp\n        image: {image}\n        env:\n        - name: RAYON_NUM_THREADS\n          \
         value: \"1\"\n        command: [{}]\n        resources:\n          requests:\n            cpu: \"1\"\n",
        dir.display(),
        study.replace('_', "-"),
        runs * 2,
        args.join(", ")
    )
}
