//! What a run folder holds, and whether a training run may start in it, replace it or resume
//! it: claiming the folder ([`claim_run_dir`]), deciding without writing
//! ([`inspect_run_dir`]), making it ready ([`set_up_run_dir`]) and trimming the records a
//! resume continues back to its checkpoint, refusing a resume that would leave a hole in them
//! ([`truncate_records_after`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use super::atomic::write_json_atomic;
use super::checkpoint::checkpoint_step;
use super::files::{
    ACTIVATIONS_FILE, CONFIG_FILE, MEASURES_FILE, METRICS_FILE, RUN_FILES, SUMMARY_FILE,
    is_checkpoint_staging, is_run_folder,
};
use super::lock::RunLock;
use super::read::read_run_config;
use super::records::Summary;
use crate::config::{Config, config_from_value};

/// A run folder this process has locked ([`claim_run_dir`]).
#[derive(Debug)]
pub struct Claimed {
    pub lock: RunLock,
    dir: PathBuf,
    /// Whether claiming created the folder, which [`Claimed::abandon`] then removes.
    created: bool,
}

/// Create the run folder if needed and lock it ([`RunLock::acquire`]); a folder this call
/// created is removed again if the lock is refused.
pub fn claim_run_dir(dir: &Path, steal_after: Option<Duration>) -> Result<Claimed> {
    ensure!(
        !dir.exists() || dir.is_dir(),
        "{} exists and is not a folder; give --out a folder to write the run into",
        dir.display()
    );
    let created = !dir.exists();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the run folder {}", dir.display()))?;
    match RunLock::acquire(dir, steal_after) {
        Ok(lock) => Ok(Claimed {
            lock,
            dir: dir.to_path_buf(),
            created,
        }),
        Err(err) => {
            if created {
                let _ = std::fs::remove_dir(dir);
            }
            Err(err)
        }
    }
}

impl Claimed {
    /// Give the folder up after a preparation that failed before training: a folder that
    /// claiming created is removed with its lock, leaving no trace of an attempt that never
    /// started; an existing one keeps its files.
    pub fn abandon(self) {
        if self.created {
            self.lock.release_and_remove();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// What [`inspect_run_dir`] found in a run folder, before anything is written.
#[derive(Debug)]
pub enum Found {
    /// No run: start one.
    Fresh,
    /// A run to replace (`--force`): bn-exp's files are removed, the user's stay.
    Replace,
    /// An unfinished run to resume.
    Unfinished,
    /// A finished (or diverged) run that `--resume` leaves as it is.
    Finished(Box<Summary>),
}

/// Look at a run folder and decide, writing nothing: refuse to overwrite a run unless
/// `--force` or `--resume`; refuse to resume a run whose config differs or whose records are
/// gone.
pub fn inspect_run_dir(dir: &Path, config: &Config, resume: bool, force: bool) -> Result<Found> {
    let has_run = is_run_folder(dir);
    match (has_run, resume, force) {
        (false, _, _) => return Ok(Found::Fresh),
        (true, _, true) => return Ok(Found::Replace),
        (true, false, false) => bail!(
            "{} already holds a run; pass --resume to continue it or --force to start afresh",
            dir.display()
        ),
        (true, true, _) => {}
    }
    let config_path = dir.join(CONFIG_FILE);
    ensure!(
        config_path.is_file(),
        "{} holds part of a run but no config.json, so it cannot be resumed; pass --force to \
         start afresh",
        dir.display()
    );
    // Through the config parser, so that a run folder written with the older `bn` key resumes.
    let saved = config_from_value(read_run_config(dir)?)
        .with_context(|| format!("{} is not a valid config", config_path.display()))?;
    ensure!(
        &saved == config,
        "the config differs from the one {} was started with; resume with the same config and \
         --set overrides, or pass --force to start afresh",
        dir.display()
    );
    let summary_path = dir.join(SUMMARY_FILE);
    if summary_path.exists() {
        let summary = std::fs::read_to_string(&summary_path)
            .with_context(|| format!("cannot read {}", summary_path.display()))?;
        let summary = serde_json::from_str(&summary)
            .with_context(|| format!("{} is not a valid summary", summary_path.display()))?;
        return Ok(Found::Finished(Box::new(summary)));
    }
    // Every record the resumed run will not write again must be there: refused now, before
    // the data is loaded or anything is written, not after a run finished with a hole.
    trimmed_records(dir, config, checkpoint_step(dir)?)?;
    Ok(Found::Unfinished)
}

/// Make the run folder ready for what [`inspect_run_dir`] found: bn-exp's files removed for a
/// replaced run, and the config written for a new one.
pub fn set_up_run_dir(dir: &Path, config: &Config, found: &Found) -> Result<()> {
    match found {
        Found::Finished(_) => Ok(()),
        // What a crash mid-save staged is no one's now: this process holds the lock.
        Found::Unfinished => remove_checkpoint_staging(dir),
        Found::Replace => {
            remove_checkpoint_staging(dir)?;
            for name in RUN_FILES {
                let path = dir.join(name);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else if path.exists() {
                    std::fs::remove_file(&path)
                } else {
                    continue;
                };
                removed.with_context(|| format!("cannot remove the old {}", path.display()))?;
            }
            write_json_atomic(&dir.join(CONFIG_FILE), config)
        }
        Found::Fresh => write_json_atomic(&dir.join(CONFIG_FILE), config),
    }
}

/// Remove every checkpoint staging folder in `dir` ([`is_checkpoint_staging`]).
fn remove_checkpoint_staging(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        if is_checkpoint_staging(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the old {}", path.display()))?;
        }
    }
    Ok(())
}

/// Drop records after `step` (written after the checkpoint a resume starts from), so the
/// resumed run's files read as if it had never stopped. Strict, unlike the reader: a damaged
/// line other than a torn last one stops the resume, and so does a record file that does not
/// reach the checkpoint (see [`trimmed_records`]). Nothing is written unless every file passes.
pub fn truncate_records_after(run_dir: &Path, config: &Config, step: u64) -> Result<()> {
    for (path, kept) in trimmed_records(run_dir, config, step)? {
        // A new file renamed over the old: a kill mid-write cannot lose the records.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = run_dir.join(format!(".{}.tmp", name.unwrap_or_default()));
        std::fs::write(&tmp, kept)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Which records a run writes at which steps, as `train`'s loop writes them: an evaluation
/// and a probe at step 0, every `eval_every` steps and at the last step; measures at every
/// `measures.every`-th step before its update.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    /// `metrics.jsonl` and `activations.jsonl`.
    Evaluations,
    /// `measures.jsonl`.
    Measures,
}

impl Schedule {
    fn of(name: &str) -> Self {
        match name {
            MEASURES_FILE => Schedule::Measures,
            _ => Schedule::Evaluations,
        }
    }

    /// Whether a record at step `s` was written after the checkpoint at `step`, so that the
    /// resumed run writes it again. Evaluations at s follow s updates, so the checkpoint's own
    /// step stays (but a run resumed at 0 redoes its step-0 evaluation); measures at s precede
    /// update s, which the resumed run does again.
    fn is_after(self, s: u64, step: u64) -> bool {
        match self {
            Schedule::Measures => s >= step,
            Schedule::Evaluations => s > step || (step == 0 && s == 0),
        }
    }

    /// The step of the last record the run wrote before its checkpoint at `step` and will
    /// not write again, if any: what the file must reach for the resume to lose nothing.
    fn last_kept(self, config: &Config, step: u64) -> Option<u64> {
        match self {
            _ if step == 0 => None,
            Schedule::Evaluations if step >= config.steps => Some(config.steps),
            Schedule::Evaluations => Some(step - step % config.eval_every.max(1)),
            Schedule::Measures => {
                let every = config.measures.every;
                (every > 0).then(|| (step - 1) - (step - 1) % every)
            }
        }
    }
}

/// Each record file of `run_dir` as a resume from the checkpoint at `step` continues it: the
/// records after `step` dropped (a torn last line with them), in the order read. An error,
/// naming the file and the step, when a line before the end is damaged, or when the records
/// kept do not reach the last one the run wrote before its checkpoint (a file deleted or
/// emptied, or a last line lost at or before the checkpoint): the resumed run would never write
/// them again, and would finish with a hole no reader notices.
fn trimmed_records(run_dir: &Path, config: &Config, step: u64) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for name in [METRICS_FILE, ACTIVATIONS_FILE, MEASURES_FILE] {
        let schedule = Schedule::of(name);
        let due = schedule.last_kept(config, step);
        let path = run_dir.join(name);
        let lost = |last: Option<u64>, torn: bool| {
            let holds = match last {
                Some(last) => format!("its last whole record is of step {last}"),
                None => "it holds no whole record".to_string(),
            };
            let torn = if torn {
                ", and its last line was cut short"
            } else {
                ""
            };
            anyhow::anyhow!(
                "{} has no record of step {} ({holds}{torn}), which the checkpoint (step {step}) \
                 comes after: the resumed run would never write it again, so the run cannot be \
                 resumed without a hole in its records. Restore the file, or start the run \
                 afresh: train again with --force instead of --resume (it replaces bn-exp's \
                 files in the folder), or delete the folder",
                path.display(),
                due.unwrap_or_default()
            )
        };
        if !path.exists() {
            if due.is_some() {
                bail!(
                    "{} is missing, so the records of the steps up to {step} (where the \
                     checkpoint resumes) are lost and the run cannot be completed; restore the \
                     file, or start the run afresh: train again with --force instead of \
                     --resume, or delete the folder",
                    path.display()
                );
            }
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Only a last line written without its newline is a torn write (a crash mid-line); a
        // bad line anywhere else is damage, and dropping what follows it would leave a hole.
        let torn_tail = !text.is_empty() && !text.ends_with('\n');
        let count = text.lines().count();
        let mut kept = String::new();
        let (mut last, mut torn) = (None, false);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let damaged = |why: String| {
                anyhow::anyhow!(
                    "{} line {} {why}: the file is damaged, and resuming would lose what follows \
                     it. Repair or remove that line, or pass --force to start the run afresh",
                    path.display(),
                    i + 1
                )
            };
            let row: serde_json::Value = match serde_json::from_str(line) {
                Ok(row) => row,
                Err(_) if torn_tail && i + 1 == count => {
                    torn = true;
                    break;
                }
                Err(err) => return Err(damaged(format!("is not a whole record ({err})"))),
            };
            let Some(s) = row.get("step").and_then(|s| s.as_u64()) else {
                return Err(damaged("has no step".to_string()));
            };
            if schedule.is_after(s, step) {
                break;
            }
            last = Some(s);
            kept.push_str(line);
            kept.push('\n');
        }
        if let Some(due) = due
            && last.is_none_or(|last| last < due)
        {
            return Err(lost(last, torn));
        }
        files.push((path, kept));
    }
    Ok(files)
}
