//! One contract any scheduler can drive: a study's runs as `plan.jsonl`, one resolved config
//! per line in the study's order, and `bn-exp run --plan FILE --index I` to train entry I.
//! Slurm job arrays (`SLURM_ARRAY_TASK_ID`) and Kubernetes indexed Jobs
//! (`JOB_COMPLETION_INDEX`) give each task its index; `compare --study` then collects the runs
//! as it would after training them itself. The scheduler files beside the plan are `emit.rs`'s.
//!
//! A plan is read as untrusted input: each line's run folder is absolute (the study folder
//! canonicalised when the plan was written, so a task started from any folder, or in a pod,
//! trains where `compare --study` collects), and a task accepts a line only if that folder is
//! the line's own run folder directly inside the plan's folder and its config names that run
//! and that study. A line pointing anywhere else is an error naming the plan and the line.
//!
//! A task is idempotent: a finished run is left as it is, an interrupted one resumes from its
//! last checkpoint, and a run another process holds is refused (its lock, `run.lock`, is an
//! advisory lock that the kernel releases when its holder dies, so a killed task's run can be
//! taken over by the next attempt at once). Where the kernel cannot see the holder die (a node
//! that crashed holding a lock on a shared filesystem), `--steal-after` takes over a lock whose
//! heartbeat has been silent that long; the scheduler files pass `EMITTED_STEAL_AFTER_S`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::prepare::plan_study;
use super::study::load_study;
use crate::config::check_folder_name;
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
    /// The run's folder: `<study folder>/<name>`, the study folder canonicalised (absolute,
    /// symbolic links resolved) when the plan was written.
    pub run_dir: PathBuf,
    /// The resolved config (base, `set` and the grid's values), whose `name` and `study` are
    /// the run's and the study's.
    pub config: Value,
}

/// What writing a plan produced.
#[derive(Debug)]
pub struct PlanOutcome {
    /// The plan file, absolute.
    pub path: PathBuf,
    pub runs: usize,
    /// Runs already finished (a task for them does nothing).
    pub done: usize,
}

/// Write `<results_dir>/<study>/plan.jsonl` for a study file, after the same checks as
/// `compare --study` (a run folder of another config is refused). The run folders it names are
/// absolute, whatever `results_dir` is relative to.
pub fn write_plan(study_file: &Path, results_dir: &Path) -> Result<PlanOutcome> {
    let study = load_study(study_file)?;
    let study_dir = results_dir.join(&study.name);
    // The same preparation as a local study: configs checked, `study.json` written.
    let jobs = plan_study(&study, &study_dir)?;
    // plan_study made the folder; from here on it is named as every task will name it.
    let study_dir = std::fs::canonicalize(&study_dir)
        .with_context(|| format!("cannot find {}", study_dir.display()))?;
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
    ensure!(count > 0, "{} holds no runs", plan.display());
    entries.into_iter().nth(index).with_context(|| {
        format!(
            "{} holds {count} runs (indices 0 to {}); there is no index {index}",
            plan.display(),
            count - 1
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

/// The plan's folder, canonicalised: the study folder its entries must train in.
pub(super) fn plan_folder(plan: &Path) -> Result<PathBuf> {
    let plan = std::fs::canonicalize(plan)
        .with_context(|| format!("cannot read the plan {}", plan.display()))?;
    plan.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("the plan {} has no folder", plan.display()))
}

/// Every entry of a plan file, each one checked: a line is refused, with the plan and the line
/// named, unless it carries its own index, names a run no other line names, and its run folder
/// is that run's folder directly inside the plan's folder (the study folder the plan was
/// written for), with a config that names that run and that study.
pub fn read_plan(plan: &Path) -> Result<Vec<PlanEntry>> {
    let text = std::fs::read_to_string(plan)
        .with_context(|| format!("cannot read the plan {}", plan.display()))?;
    let study_dir = plan_folder(plan)?;
    let study = study_dir
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| check_folder_name(name).is_ok())
        .with_context(|| {
            format!(
                "the plan {} is not in a study's folder ({:?} is not a study name); plans are \
                 written by `bn-exp compare --study FILE --plan` into <results>/<study>/",
                plan.display(),
                study_dir.file_name().unwrap_or_default()
            )
        })?;
    let mut entries: Vec<PlanEntry> = Vec::new();
    let mut line_of: HashMap<String, usize> = HashMap::new();
    for (number, line) in (1..).zip(text.lines()) {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {number}", plan.display());
        let entry: PlanEntry =
            serde_json::from_str(line).with_context(|| format!("{} is not a plan entry", at()))?;
        if entry.index != entries.len() {
            bail!(
                "{} says index {}: the plan is damaged; write it again with compare --plan",
                at(),
                entry.index
            );
        }
        check_entry(&entry, &study_dir, study).with_context(|| format!("{} is refused", at()))?;
        if let Some(first) = line_of.insert(entry.name.clone(), number) {
            bail!(
                "{} is refused: it names run {}, as line {first} does; a plan trains each run once",
                at(),
                entry.name
            );
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// What a plan line must be to be trained: its run folder is `<study_dir>/<name>` exactly (not
/// the study folder, not outside it, not relative) and its config names that run and `study`.
fn check_entry(entry: &PlanEntry, study_dir: &Path, study: &str) -> Result<()> {
    check_folder_name(&entry.name)
        .with_context(|| format!("its name {:?} cannot name a run's folder", entry.name))?;
    let again = "write the plan again with `bn-exp compare --study FILE --plan`";
    ensure!(
        entry.run_dir.is_absolute(),
        "its run_dir {:?} is relative, and would be read from whatever folder the task starts \
         in; bn-exp writes plans with absolute run folders: {again}",
        entry.run_dir
    );
    let own = study_dir.join(&entry.name);
    ensure!(
        entry.run_dir == own,
        "its run_dir {:?} is not the folder of run {} in this plan's study ({}): a plan entry \
         trains only in its own folder beside the plan; if the study folder moved, {again}",
        entry.run_dir,
        entry.name,
        own.display()
    );
    let named = |key: &str| entry.config.get(key).and_then(Value::as_str);
    ensure!(
        named("name") == Some(entry.name.as_str()) && named("study") == Some(study),
        "its config names run {:?} of study {:?}, not run {:?} of study {study:?}",
        named("name").unwrap_or("(none)"),
        named("study").unwrap_or("(none)"),
        entry.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A study folder `s` in `tmp`, canonicalised as write_plan names it.
    fn study_dir(tmp: &Path) -> PathBuf {
        let dir = tmp.join("s");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::canonicalize(dir).unwrap()
    }

    /// Entry `index` of a plan for study `s` in `dir`, as write_plan writes it.
    fn entry(dir: &Path, index: usize) -> PlanEntry {
        let name = format!("run-{index}");
        PlanEntry {
            index,
            run_dir: dir.join(&name),
            config: serde_json::json!({"name": name, "study": "s", "seed": index}),
            name,
        }
    }

    fn write(plan: &Path, entries: &[PlanEntry]) {
        let text: String = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        write_text_atomic(plan, &text).unwrap();
    }

    #[track_caller]
    fn error(plan: &Path) -> String {
        match read_plan(plan) {
            Ok(_) => panic!("accepted:\n{}", std::fs::read_to_string(plan).unwrap()),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn a_plan_entry_is_read_by_its_index_and_a_damaged_plan_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = study_dir(tmp.path());
        let plan = dir.join(PLAN_FILE);
        let entries: Vec<PlanEntry> = (0..3).map(|i| entry(&dir, i)).collect();
        write(&plan, &entries);
        assert_eq!(read_entry(&plan, 1).unwrap(), entries[1]);
        let err = format!("{:#}", read_entry(&plan, 3).unwrap_err());
        assert!(err.contains("holds 3 runs (indices 0 to 2)"), "{err}");
        write(&plan, &[entries[0].clone(), entries[2].clone()]);
        assert!(error(&plan).contains("line 2 says index 2"));
        std::fs::write(&plan, "{}\n").unwrap();
        assert!(error(&plan).contains("line 1 is not a plan entry"));
        std::fs::write(&plan, "\n").unwrap();
        let err = format!("{:#}", read_entry(&plan, 0).unwrap_err());
        assert!(err.contains("holds no runs"), "{err}");
        // Line numbers count blank lines too.
        let text = format!(
            "\n{}\n\n{{}}\n",
            serde_json::to_string(&entries[0]).unwrap()
        );
        std::fs::write(&plan, text).unwrap();
        assert!(error(&plan).contains("line 4 is not a plan entry"));
    }

    #[test]
    fn a_line_is_refused_unless_it_trains_its_own_run_folder_beside_the_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = study_dir(tmp.path());
        let plan = dir.join(PLAN_FILE);
        let outside = tmp.path().canonicalize().unwrap();
        let elsewhere: Vec<PathBuf> = vec![
            PathBuf::new(),
            PathBuf::from("run-0"),
            PathBuf::from("s/run-0"),
            PathBuf::from(".."),
            PathBuf::from("../run-0"),
            dir.clone(),
            dir.join("run-1"),
            dir.join("run-0/.."),
            dir.join("run-0/sub"),
            dir.join("../run-0"),
            dir.join("..").join("s").join("run-0"),
            outside.join("run-0"),
            PathBuf::from("/run-0"),
            PathBuf::from("/tmp/s/run-0"),
        ];
        for run_dir in elsewhere {
            let mut first = entry(&dir, 0);
            first.run_dir = run_dir.clone();
            write(&plan, &[first, entry(&dir, 1)]);
            let err = error(&plan);
            assert!(
                err.contains(&format!("{} line 1 is refused", plan.display()))
                    && err.contains("run_dir"),
                "{run_dir:?}: {err}"
            );
        }
        // The config must name the run and the study.
        for (key, value) in [("name", "run-0"), ("study", "t"), ("name", "")] {
            let mut second = entry(&dir, 1);
            second.config[key] = value.into();
            write(&plan, &[entry(&dir, 0), second]);
            let err = error(&plan);
            assert!(
                err.contains("line 2 is refused: its config names run"),
                "{err}"
            );
        }
        let mut second = entry(&dir, 1);
        second.config.as_object_mut().unwrap().remove("study");
        write(&plan, &[entry(&dir, 0), second]);
        assert!(error(&plan).contains("line 2 is refused"));
        // A name that is no folder of its own, and a run named twice.
        for name in ["", "..", ".", "a/b"] {
            let mut first = entry(&dir, 0);
            first.name = name.into();
            write(&plan, &[first]);
            assert!(
                error(&plan).contains("line 1 is refused: its name"),
                "{name:?}"
            );
        }
        let mut second = entry(&dir, 0);
        second.index = 1;
        write(&plan, &[entry(&dir, 0), second]);
        assert!(error(&plan).contains("line 2 is refused: it names run run-0, as line 1 does"));
        // Through a symbolic link to the study folder, the plan is the same plan.
        write(&plan, &[entry(&dir, 0), entry(&dir, 1)]);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(read_plan(&link.join(PLAN_FILE)).unwrap().len(), 2);
    }

    #[test]
    fn a_plan_outside_a_study_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".hidden");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(PLAN_FILE), "").unwrap();
        let err = format!("{:#}", read_plan(&dir.join(PLAN_FILE)).unwrap_err());
        assert!(err.contains("is not in a study's folder"), "{err}");
    }
}
