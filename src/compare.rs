//! `bn-exp compare`: run a study (a grid of configs over seeds) and compare its runs in tables,
//! or compare run folders that already exist.
//!
//! This file is compare's face: the rest of bn-exp (and the binary, and the tests) use only what
//! it re-exports below, never the files behind it, which are:
//!
//! - `study.rs`: study files, grid expansion and run names, over `keys.rs` (key paths into
//!   configs, `--set` style);
//! - `options.rs`: thresholds, the baseline, and the specs that pick a group;
//! - `prepare.rs`, `runner.rs`: a study's folder made ready, and its unfinished runs trained as
//!   child processes, N at a time; `plan.rs`: the same runs as a plan a scheduler runs, and
//!   `emit.rs`: the scheduler files beside it;
//! - `runs.rs`: reading run folders;
//! - `table.rs`: the comparison of runs grouped by condition ([`crate::groups`]), column by
//!   column; `render.rs`: the terminal table and `comparison.{md,csv,json}`.
//!
//! See docs/studies.md for the study format and how each number can be recomputed by hand.

mod emit;
mod keys;
mod options;
mod plan;
mod prepare;
mod render;
mod runner;
mod runs;
mod study;
mod table;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::{DataSource, Dataset};
use serde_json::Value;

use crate::progress::Progress;
pub use crate::run::RunStatus;
pub use emit::{EMITTED_STEAL_AFTER_S, Emit, EmitOptions, emit};
pub use options::{
    Baseline, CompareOptions, DEFAULT_THRESHOLDS, describe_spec, matches_spec, normalize_thresholds,
};
pub use plan::{PLAN_FILE, PlanEntry, PlanOutcome, read_plan, run_entry, task_index, write_plan};
use prepare::plan_study;
pub use render::{Heading, markdown_group_table, percent_label, render_text, write_comparison};
use runner::{JobResult, TrainOutcome, TrainSettings, train_all};
pub use runs::{FoundRuns, RunRecord, find_runs, load_run};
use runs::{RunProgress, STUDY_RECORD_FILE, read_json, run_progress};
pub use study::{
    Axis, PlannedRun, Study, StudyRecord, check_run_configs, load_study, parse_study, resolve_base,
    spec_picks_one_group,
};
pub use table::{
    BaselineTarget, Comparison, GroupMeasures, GroupRow, MeasureValue, RunRow, SpeedUp, StepsTo,
    compare_runs,
};

/// One `bn-exp compare`, resolved from its flags.
#[derive(Debug, Clone)]
pub struct CompareRequest {
    pub target: CompareTarget,
    /// Runs trained at once (`--jobs`); `None`: one per core.
    pub jobs: Option<usize>,
    /// The group to measure speed-ups against, by its label.
    pub baseline: Option<String>,
    /// Accuracy thresholds (fractions or percents); `None`: the study's, else the defaults.
    pub thresholds: Option<Vec<f64>>,
    /// Where a study's runs go: `<results_dir>/<study>/`.
    pub results_dir: PathBuf,
    /// Where the comparison files go, instead of the study folder.
    pub out: Option<PathBuf>,
    /// No progress lines or bar, and no list of the files written: read by the command line,
    /// which picks the [`Progress`] it hands to [`compare`]; the library prints nothing itself.
    pub quiet: bool,
    /// Where the data is: checked before a study trains anything, and handed to its runs.
    pub data: DataSource,
}

/// What to compare.
#[derive(Debug, Clone)]
pub enum CompareTarget {
    /// Train what a study file asks for that is not done, then compare its runs.
    Study(PathBuf),
    /// Compare run folders (or folders of runs) that already exist.
    Dirs(Vec<PathBuf>),
}

/// What a comparison produced.
#[derive(Debug)]
pub struct CompareOutcome {
    /// The comparison, when there were finished runs to compare.
    pub comparison: Option<Comparison>,
    /// The finished runs it compares, as read.
    pub records: Vec<RunRecord>,
    /// The table as the terminal shows it (empty without a comparison).
    pub text: String,
    /// `comparison.{md,csv,json}`, when written.
    pub written: Vec<PathBuf>,
    /// Runs of the study that failed to train or could not be read, with why.
    pub failures: Vec<String>,
}

impl CompareOutcome {
    /// The damaged files and lines the reader skipped in the compared runs, one sentence each
    /// naming the file (and the lines): the table is made without them.
    pub fn skipped(&self) -> Vec<String> {
        self.records
            .iter()
            .flat_map(|r| r.run.damage.iter().cloned())
            .collect()
    }
}

/// Run a comparison: train a study's missing runs first when the target is a study.
pub fn compare(request: &CompareRequest, progress: &dyn Progress) -> Result<CompareOutcome> {
    let thresholds = request
        .thresholds
        .as_deref()
        .map(normalize_thresholds)
        .transpose()
        .context("bad --thresholds")?;
    if let Some(jobs) = request.jobs {
        anyhow::ensure!(jobs > 0, "--jobs must be at least 1");
    }
    match &request.target {
        CompareTarget::Study(file) => run_study(file, request, thresholds, progress),
        CompareTarget::Dirs(dirs) if !dirs.is_empty() => {
            compare_dirs(dirs, request, thresholds, progress)
        }
        CompareTarget::Dirs(_) => bail!(
            "nothing to compare: give a study file (--study configs/studies/paper_fig1.json) \
or run folders (results/paper_fig1)"
        ),
    }
}

/// `compare --study FILE`: train what is not finished, then compare the study's runs.
fn run_study(
    file: &Path,
    request: &CompareRequest,
    thresholds: Option<Vec<f64>>,
    progress: &dyn Progress,
) -> Result<CompareOutcome> {
    let study = load_study(file)?;
    let study_dir = request.results_dir.join(&study.name);
    check_study_data(&study, &study_dir, &request.data)?;
    let jobs = plan_study(&study, &study_dir)?;
    let parallel = request.jobs.unwrap_or_else(default_jobs);
    progress.note(&format!(
        "study {}: {} runs, {} already done, {} to train ({} at a time) in {}",
        study.name,
        study.runs.len(),
        study.runs.len() - jobs.len(),
        jobs.len(),
        parallel.min(jobs.len()).max(1),
        study_dir.display()
    ));
    let settings = TrainSettings {
        exe: std::env::current_exe().context("cannot find the bn-exp executable")?,
        jobs: parallel,
        data_dir: Some(request.data.dir.clone()),
    };
    let results = train_all(jobs, &settings, progress);
    let (records, load_failures) = load_study_runs(&study, &study_dir);
    let failed: Vec<&JobResult> = results
        .iter()
        .filter(|result| matches!(result.outcome, TrainOutcome::Failed(_)))
        .collect();
    let diverged = results
        .iter()
        .filter(|result| result.outcome == TrainOutcome::Diverged)
        .count();
    progress.note(&format!(
        "trained {} runs: {} diverged, {} failed",
        results.len(),
        diverged,
        failed.len()
    ));
    let failures = failed
        .iter()
        .map(|result| match &result.outcome {
            TrainOutcome::Failed(why) => format!("run {} failed: {why}", result.name),
            _ => result.name.clone(),
        })
        .chain(load_failures.iter().map(|err| format!("{err:#}")))
        .collect();

    let options = CompareOptions {
        thresholds: thresholds
            .or_else(|| study.thresholds.clone())
            .unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec()),
        baseline: pick_baseline_choice(request, study.baseline.clone()),
    };
    let heading = Heading {
        title: format!("Study {}", study.name),
        description: study.description.clone(),
    };
    let out_dir = request.out.clone().unwrap_or(study_dir);
    let mut outcome = if records.is_empty() {
        CompareOutcome {
            comparison: None,
            records,
            text: String::new(),
            written: Vec::new(),
            failures: Vec::new(),
        }
    } else {
        report(records, &options, &heading, Some(&out_dir))?
    };
    outcome.failures = failures;
    Ok(outcome)
}

/// The data every run still to train needs is there and valid, and no run's batch is larger
/// than its training set: what train would refuse, found before the first run starts (and
/// before anything is written), not after the earlier runs have trained. Runs already done
/// need no data, so a finished study compares without it.
fn check_study_data(study: &Study, study_dir: &Path, data: &DataSource) -> Result<()> {
    let to_train = study
        .runs
        .iter()
        .filter(|run| run_progress(&study_dir.join(&run.name)) != RunProgress::Done)
        .map(|run| Ok((run, crate::config::config_from_value(run.config.clone())?)))
        .collect::<Result<Vec<_>>>()?;
    for dataset in Dataset::ALL {
        let needing: Vec<&str> = to_train
            .iter()
            .filter(|(_, config)| config.dataset == dataset)
            .map(|(run, _)| run.name.as_str())
            .collect();
        if needing.is_empty() {
            continue;
        }
        let report = crate::data::verify_dataset(&data.dir, dataset, &data.catalogue);
        if let Some(problem) = report.first_problem() {
            bail!(
                "run {} needs {dataset}, and it is not usable: {problem}",
                needing.join(", ")
            );
        }
    }
    for (run, config) in &to_train {
        config
            .check_training_set(data.catalogue.train_records(config.dataset))
            .with_context(|| format!("run {}", run.name))?;
    }
    Ok(())
}

/// Default `--jobs`: one run per available core.
pub(crate) fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The study's done runs, in study order; runs that could not be read are returned as errors.
fn load_study_runs(study: &Study, study_dir: &Path) -> (Vec<RunRecord>, Vec<anyhow::Error>) {
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for run in &study.runs {
        let dir = study_dir.join(&run.name);
        if run_progress(&dir) != RunProgress::Done {
            continue;
        }
        match load_run(&dir) {
            Ok(record) => records.push(record),
            Err(err) => failures.push(err.context(format!("cannot read run {}", dir.display()))),
        }
    }
    (records, failures)
}

/// `compare DIR...`: compare existing runs without training.
fn compare_dirs(
    dirs: &[PathBuf],
    request: &CompareRequest,
    thresholds: Option<Vec<f64>>,
    progress: &dyn Progress,
) -> Result<CompareOutcome> {
    let found = find_runs(dirs)?;
    for dir in &found.unfinished {
        progress.note(&format!(
            "skipping {} (unfinished: no summary.json)",
            dir.display()
        ));
    }
    let single_study = match (dirs, found.study_dirs.as_slice()) {
        ([only], [study]) if only == study => Some(study.clone()),
        _ => None,
    };
    let record = match &single_study {
        Some(dir) => read_study_record(dir)?,
        None => None,
    };
    let mut done = found.done.clone();
    if let Some(record) = &record {
        order_as_in_study(&mut done, &record.runs);
    }
    let records = done
        .iter()
        .map(|dir| load_run(dir).with_context(|| format!("cannot read run {}", dir.display())))
        .collect::<Result<Vec<_>>>()?;
    let study_thresholds = record.as_ref().and_then(|r| r.thresholds.clone());
    let study_baseline = record
        .as_ref()
        .and_then(|r| r.baseline.clone())
        .map(|spec| spec.into_iter().collect());
    let options = CompareOptions {
        thresholds: thresholds
            .or(study_thresholds)
            .unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec()),
        baseline: pick_baseline_choice(request, study_baseline),
    };
    let heading = match (&record, &single_study) {
        (Some(record), _) => Heading {
            title: format!("Study {}", record.study),
            description: record.description.clone(),
        },
        (None, Some(dir)) => Heading {
            title: format!("Runs in {}", dir.display()),
            description: String::new(),
        },
        (None, None) => Heading::default(),
    };
    let out_dir = request.out.clone().or(single_study);
    report(records, &options, &heading, out_dir.as_deref())
}

/// Put a study's runs back in the study's own order (grid order), which sets the order of the
/// groups; runs the study does not list keep their place after them, in name order.
fn order_as_in_study(dirs: &mut [PathBuf], study_runs: &[String]) {
    dirs.sort_by_key(|dir| {
        let name = runs::folder_name(dir);
        study_runs
            .iter()
            .position(|run| *run == name)
            .unwrap_or(usize::MAX)
    });
}

/// `study.json` of a study folder, if compare wrote one there.
fn read_study_record(dir: &Path) -> Result<Option<StudyRecord>> {
    let path = dir.join(STUDY_RECORD_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let value = read_json(&path)?;
    let record = serde_json::from_value(value)
        .with_context(|| format!("unexpected content in {}", path.display()))?;
    Ok(Some(record))
}

/// `--baseline` wins over the study's `baseline`; without either, the first group.
fn pick_baseline_choice(request: &CompareRequest, study: Option<Vec<(String, Value)>>) -> Baseline {
    match (&request.baseline, study) {
        (Some(label), _) => Baseline::Label(label.clone()),
        (None, Some(spec)) => Baseline::Spec(spec),
        (None, None) => Baseline::FirstGroup,
    }
}

/// Compute the comparison, render it, and write the files into `out_dir` if given.
fn report(
    records: Vec<RunRecord>,
    options: &CompareOptions,
    heading: &Heading,
    out_dir: Option<&Path>,
) -> Result<CompareOutcome> {
    let comparison = compare_runs(&records, options)?;
    let text = render_text(heading, &comparison);
    let written = match out_dir {
        Some(dir) => write_comparison(dir, heading, &comparison)?,
        None => Vec::new(),
    };
    Ok(CompareOutcome {
        comparison: Some(comparison),
        records,
        text,
        written,
        failures: Vec::new(),
    })
}
