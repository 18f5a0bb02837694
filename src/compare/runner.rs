//! Training a study's runs as child processes (`bn-exp train`), N at a time.
//!
//! Each run is its own process rather than a thread: a run that panics, diverges or is killed
//! takes nothing else down, each child's output goes to its own `train.log`, and train's own
//! `--resume` makes an interrupted study safe to start again. Nothing special happens on Ctrl-C:
//! the terminal sends it to the whole process group, so the children stop too, and the next
//! `bn-exp compare --study` resumes them from their checkpoints.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::progress::Progress;

use super::runs::{LOG_FILE, SUMMARY_FILE, last_evaluated_step, read_json};

/// train's exit status for a run that diverged (summary written, status "diverged").
const EXIT_DIVERGED: i32 = crate::train::EXIT_DIVERGED as i32;
/// How often children are polled for exit.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How often running children's `metrics.jsonl` are read to move the progress bar.
const PROGRESS_EVERY: Duration = Duration::from_millis(1000);
/// Lines of `train.log` shown when a run fails.
const LOG_TAIL_LINES: usize = 15;
/// Progress bar units per run: runs count equally, each advancing with its evaluated steps.
const UNITS_PER_RUN: u64 = 1000;

/// One run to train.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub name: String,
    pub run_dir: PathBuf,
    /// The run's full config, as written by compare.
    pub config_file: PathBuf,
    /// Continue an interrupted run (`--resume`) instead of starting afresh.
    pub resume: bool,
    /// Planned steps, for progress; read from the run's `config.json` when unknown.
    pub steps: Option<u64>,
}

/// How the children are started.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// The `bn-exp` executable (the current one).
    pub exe: PathBuf,
    /// Runs at once.
    pub jobs: usize,
    /// Passed on as `--data-dir` when given; otherwise children resolve it as compare would.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainOutcome {
    Finished,
    Diverged,
    /// Why, with the tail of the log.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub run_dir: PathBuf,
    pub outcome: TrainOutcome,
}

struct Running {
    job: TrainJob,
    child: Child,
    steps: Option<u64>,
}

/// Train every job, `settings.jobs` at a time, and report how each ended. Failures are
/// reported as they happen and never stop the other runs.
pub fn train_all(
    jobs: Vec<TrainJob>,
    settings: &TrainSettings,
    out: &dyn Progress,
) -> Vec<JobResult> {
    let total = jobs.len();
    let parallel = settings.jobs.min(total) > 1;
    let progress = StudyProgress::new(total, out);
    let mut pending: VecDeque<TrainJob> = jobs.into();
    let mut running: Vec<Running> = Vec::new();
    let mut results: Vec<JobResult> = Vec::new();
    let mut last_progress: Option<Instant> = None;

    while !pending.is_empty() || !running.is_empty() {
        while running.len() < settings.jobs
            && let Some(job) = pending.pop_front()
        {
            match spawn_train(&job, settings, parallel) {
                Ok(child) => {
                    if job.resume {
                        progress.event(&format!("resuming {}", job.name));
                    }
                    let steps = job.steps;
                    running.push(Running { job, child, steps });
                }
                Err(err) => {
                    let result = failed(&job, format!("could not start: {err:#}"));
                    progress.failure(&result);
                    results.push(result);
                }
            }
        }
        let mut index = 0;
        while index < running.len() {
            match running[index].child.try_wait() {
                Ok(None) => index += 1,
                Ok(Some(status)) => {
                    let done = running.remove(index);
                    let result = judge_exit(&done.job, status);
                    progress.finished(&result);
                    results.push(result);
                }
                Err(err) => {
                    let done = running.remove(index);
                    let result = failed(&done.job, format!("lost track of the process: {err}"));
                    progress.failure(&result);
                    results.push(result);
                }
            }
        }
        if last_progress.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            progress.update(results.len(), &mut running);
            last_progress = Some(Instant::now());
        }
        if !running.is_empty() {
            std::thread::sleep(POLL_EVERY);
        }
    }
    progress.done();
    results
}

/// Start `bn-exp train` for one job with its output going to `train.log`.
fn spawn_train(job: &TrainJob, settings: &TrainSettings, single_thread: bool) -> Result<Child> {
    std::fs::create_dir_all(&job.run_dir)
        .with_context(|| format!("cannot create {}", job.run_dir.display()))?;
    let mut command = Command::new(&settings.exe);
    command
        .arg("train")
        .arg("--config")
        .arg(&job.config_file)
        .arg("--out")
        .arg(&job.run_dir)
        .arg("--quiet");
    if job.resume {
        command.arg("--resume");
    }
    if let Some(dir) = &settings.data_dir {
        command.arg("--data-dir").arg(dir);
    }
    if single_thread {
        // Several runs share the cores; a run of the small MLP gains nothing from threads.
        command.env("RAYON_NUM_THREADS", "1");
    }
    let mut log = open_log(&job.run_dir.join(LOG_FILE))?;
    writeln!(log, "# bn-exp compare: {command:?}").context("cannot write train.log")?;
    let stderr = log.try_clone().context("cannot share train.log")?;
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot run {}", settings.exe.display()))
}

/// A run's log is only ever appended to: each attempt adds its own section, and a second
/// `compare` whose child is refused (the run is locked by a training process) cannot wipe the
/// log of the run that is still training.
fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Read train's exit status: 0 finished, 3 diverged, anything else (or no summary) failed.
fn judge_exit(job: &TrainJob, status: ExitStatus) -> JobResult {
    let has_summary = job.run_dir.join(SUMMARY_FILE).is_file();
    let outcome = match status.code() {
        Some(0) if has_summary => TrainOutcome::Finished,
        Some(EXIT_DIVERGED) if has_summary => TrainOutcome::Diverged,
        Some(code @ (0 | EXIT_DIVERGED)) => {
            return failed(
                job,
                format!("exited with {code} but wrote no {SUMMARY_FILE}"),
            );
        }
        Some(code) => return failed(job, format!("exited with {code}")),
        None => return failed(job, "was killed by a signal".to_string()),
    };
    JobResult {
        name: job.name.clone(),
        run_dir: job.run_dir.clone(),
        outcome,
    }
}

fn failed(job: &TrainJob, why: String) -> JobResult {
    let log = job.run_dir.join(LOG_FILE);
    let tail = log_tail(&log, LOG_TAIL_LINES);
    let message = if tail.is_empty() {
        why
    } else {
        format!(
            "{why}; last lines of {}:\n{}",
            log.display(),
            tail.lines()
                .map(|line| format!("    {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    JobResult {
        name: job.name.clone(),
        run_dir: job.run_dir.clone(),
        outcome: TrainOutcome::Failed(message),
    }
}

/// The last `lines` lines of a file, or nothing if it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The study's progress: one bar over all runs, and one line per event, through the caller's
/// [`Progress`] (which draws nothing with `--quiet`).
struct StudyProgress<'a> {
    out: &'a dyn Progress,
    total: usize,
}

impl<'a> StudyProgress<'a> {
    fn new(total: usize, out: &'a dyn Progress) -> Self {
        if total > 0 {
            out.begin("study", Some(total as u64 * UNITS_PER_RUN), 0);
        }
        Self { out, total }
    }

    fn event(&self, line: &str) {
        self.out.note(line);
    }

    fn finished(&self, result: &JobResult) {
        match &result.outcome {
            TrainOutcome::Finished => self.event(&format!(
                "finished {}{}",
                result.name,
                final_accuracy_note(&result.run_dir)
            )),
            TrainOutcome::Diverged => self.event(&format!("diverged {}", result.name)),
            TrainOutcome::Failed(_) => self.failure(result),
        }
    }

    fn failure(&self, result: &JobResult) {
        if let TrainOutcome::Failed(message) = &result.outcome {
            self.event(&format!("run {} failed: {message}", result.name));
        }
    }

    /// Move the bar: every done run counts whole, a running one by its evaluated steps.
    fn update(&self, done: usize, running: &mut [Running]) {
        let mut units = done as u64 * UNITS_PER_RUN;
        for run in running.iter_mut() {
            if run.steps.is_none() {
                run.steps = planned_steps(&run.job.run_dir);
            }
            if let (Some(steps), Some(at)) = (run.steps, last_evaluated_step(&run.job.run_dir)) {
                units += at.min(steps) * UNITS_PER_RUN / steps.max(1);
            }
        }
        self.out.advance(
            units,
            &format!("{done}/{} runs done, {} running", self.total, running.len()),
        );
    }

    fn done(&self) {
        self.out.end();
    }
}

/// ` (test accuracy 97.81%)` from a finished run's summary, or nothing if it is not there.
fn final_accuracy_note(run_dir: &Path) -> String {
    read_json(&run_dir.join(SUMMARY_FILE))
        .ok()
        .and_then(|summary| summary.get("final_test_acc")?.as_f64())
        .map(|acc| format!(" (test accuracy {:.2}%)", acc * 100.0))
        .unwrap_or_default()
}

/// `steps` from the config train wrote into the run folder.
fn planned_steps(run_dir: &Path) -> Option<u64> {
    crate::run::read_run_config(run_dir)
        .ok()?
        .get("steps")?
        .as_u64()
}
