//! A study's results folder made ready for training: `study.json` and every run's config
//! written, and for each run whether it is done (reused), started (resumed) or new, after
//! refusing run folders that hold a run of another config. `compare --study` and
//! `compare --study --plan` both start here.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::keys::get_path;
use super::runner::TrainJob;
use super::runs::{CONFIGS_DIR, RunProgress, STUDY_RECORD_FILE, run_progress};
use super::study::{PlannedRun, Study};
use crate::groups::{flatten, json_equal};

/// Write the study's record and every run's config, and decide for each run: reuse (done),
/// resume (started), or start. Refuses, before anything is trained, runs whose folder holds a
/// run of a different config: reusing it would put wrong numbers in the table.
pub fn plan_study(study: &Study, study_dir: &Path) -> Result<Vec<TrainJob>> {
    let mut stale = Vec::new();
    for run in &study.runs {
        let run_dir = study_dir.join(&run.name);
        if run_progress(&run_dir) != RunProgress::Fresh
            && let Some(difference) = config_difference(&run_dir, run)?
        {
            stale.push(format!("  {}: {difference}", run_dir.display()));
        }
    }
    if !stale.is_empty() {
        bail!(
            "these run folders hold runs of a different config than the study now asks for:\n{}\n\
delete them to train them again, or pass another --results-dir",
            stale.join("\n")
        );
    }

    let configs_dir = study_dir.join(CONFIGS_DIR);
    std::fs::create_dir_all(&configs_dir)
        .with_context(|| format!("cannot create {}", configs_dir.display()))?;
    crate::run::write_json_atomic(&study_dir.join(STUDY_RECORD_FILE), &study.record())?;
    let mut jobs = Vec::new();
    for run in &study.runs {
        let run_dir = study_dir.join(&run.name);
        let config_file = configs_dir.join(format!("{}.json", run.name));
        crate::run::write_json_atomic(&config_file, &run.config)?;
        let progress = run_progress(&run_dir);
        if progress == RunProgress::Done {
            continue;
        }
        jobs.push(TrainJob {
            name: run.name.clone(),
            run_dir,
            config_file,
            resume: progress == RunProgress::Started,
            steps: run.config.get("steps").and_then(Value::as_u64),
        });
    }
    Ok(jobs)
}

/// The first setting where a run folder's `config.json` disagrees with the planned config,
/// if any. Only keys the plan sets are checked: train adds defaults for the rest.
fn config_difference(run_dir: &Path, run: &PlannedRun) -> Result<Option<String>> {
    // Resolved: a run folder written before normalisation had its own key says `bn`.
    let existing = crate::run::read_run_config(run_dir)?;
    for (path, wanted) in flatten(&run.config) {
        match get_path(&existing, &path) {
            Some(have) if json_equal(have, &wanted) => {}
            Some(have) => {
                return Ok(Some(format!(
                    "{path} is {have} there, {wanted} in the study"
                )));
            }
            None => {
                return Ok(Some(format!(
                    "{path} is not set there, {wanted} in the study"
                )));
            }
        }
    }
    Ok(None)
}
