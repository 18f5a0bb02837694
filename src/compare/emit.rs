//! The scheduler files `compare --plan --emit` writes beside a plan: `slurm.sh`, an sbatch job
//! array, and `k8s-job.yaml`, a Kubernetes indexed Job, each running `bn-exp run --plan` once
//! per entry.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plan::{PlanEntry, read_plan};
use crate::run::write_text_atomic;

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
/// (one thread), as [`format_limit`] writes it.
fn time_limit(entries: &[PlanEntry]) -> Result<String> {
    let costs = crate::bench::estimate::calibrate()?;
    let longest = entries
        .iter()
        .map(|e| crate::bench::estimate::run_seconds(&e.config, &costs))
        .fold(0.0, f64::max);
    Ok(format_limit(3.0 * longest))
}

/// The shortest time limit a task gets, in seconds.
const MIN_LIMIT_S: f64 = 600.0;

/// `seconds`, rounded up and at least [`MIN_LIMIT_S`], in Slurm's `D-HH:MM:SS`.
fn format_limit(seconds: f64) -> String {
    let seconds = seconds.max(MIN_LIMIT_S).ceil() as u64;
    format!(
        "{}-{:02}:{:02}:{:02}",
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
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
    // The task's command, one argument each: the Kubernetes Job lists them, the Slurm script
    // joins them with shell quoting, so paths with spaces survive both.
    let command: Vec<String> = [
        exe.to_string_lossy().into_owned(),
        "run".into(),
        "--quiet".into(),
        "--plan".into(),
        plan.to_string_lossy().into_owned(),
        "--data-dir".into(),
        data.to_string_lossy().into_owned(),
        "--steal-after".into(),
        EMITTED_STEAL_AFTER_S.to_string(),
    ]
    .into();
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
    // A requeued task may be reading the script while it is written again.
    write_text_atomic(&path, &text)?;
    Ok(path)
}

/// `word` as one shell word: as it is when it holds only safe characters, else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn slurm_script(
    study: &str,
    dir: &Path,
    entries: &[PlanEntry],
    command: &[String],
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
    let command: Vec<String> = command.iter().map(|a| shell_word(a)).collect();
    lines.push(format!("exec {}", command.join(" ")));
    lines.push(String::new());
    Ok(lines.join("\n"))
}

fn k8s_job(
    study: &str,
    dir: &Path,
    runs: usize,
    command: &[String],
    options: &EmitOptions,
) -> String {
    let parallelism = options.max_parallel.unwrap_or(runs).min(runs);
    let image = if options.image.is_empty() {
        "bn-exp:latest"
    } else {
        &options.image
    };
    // A JSON string is a YAML double-quoted scalar, escapes and all.
    let args: Vec<String> = command
        .iter()
        .map(|a| serde_json::Value::from(a.as_str()).to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn time_limits_read_as_slurm_wants_them() {
        assert_eq!(format_limit(1_000_000.0), "11-13:46:40");
        assert_eq!(format_limit(86_399.5), "1-00:00:00");
        // At least ten minutes, however short the estimate.
        assert_eq!(format_limit(0.0), "0-00:10:00");
        assert_eq!(format_limit(599.0), "0-00:10:00");
        assert_eq!(format_limit(600.5), "0-00:10:01");
    }

    fn command() -> Vec<String> {
        [
            "/opt/bn exp/bn-exp",
            "run",
            "--plan",
            "/results/my study/plan.jsonl",
            "it's",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn the_slurm_script_quotes_arguments_with_spaces() {
        assert_eq!(shell_word("--data-dir"), "--data-dir");
        assert_eq!(shell_word("/a/b_c.jsonl"), "/a/b_c.jsonl");
        assert_eq!(shell_word("/a b/c"), "'/a b/c'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        let line = command()
            .iter()
            .map(|a| shell_word(a))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            line,
            r"'/opt/bn exp/bn-exp' run --plan '/results/my study/plan.jsonl' 'it'\''s'"
        );
    }

    #[test]
    fn the_kubernetes_job_keeps_each_argument_whole() {
        let options = EmitOptions {
            max_parallel: Some(2),
            ..EmitOptions::default()
        };
        let text = k8s_job(
            "my_study",
            Path::new("/results/my study"),
            3,
            &command(),
            &options,
        );
        let job: Value = serde_yaml::from_str(&text).unwrap();
        let spec = &job["spec"];
        assert_eq!(spec["completions"], 3);
        assert_eq!(spec["parallelism"], 2);
        assert_eq!(job["metadata"]["name"], "bn-exp-my-study");
        let args = &spec["template"]["spec"]["containers"][0]["command"];
        let want: Vec<Value> = command().into_iter().map(Value::from).collect();
        assert_eq!(args, &Value::from(want));
    }
}
