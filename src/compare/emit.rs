//! The scheduler files `compare --plan --emit` writes beside a plan: `slurm.sh`, an sbatch job
//! array, and `k8s-job.yaml`, a Kubernetes indexed Job, each running `bn-exp run --plan` once
//! per entry.
//!
//! Everything written into them is checked first and then written with the format's own
//! quoting, so no flag and no path can add a line: no value holds a control character (a
//! newline or carriage return would end a `#SBATCH` line and start a shell command; YAML also
//! ends a line at NEL and the Unicode line and paragraph separators). `#SBATCH` lines are
//! comments to bash and are read by sbatch alone, which splits them at whitespace outside
//! quotes and ends them at `#`: values are double-quoted for sbatch where needed (`"`, `\` and
//! `#` escaped with a backslash). The task's command is shell-quoted word by word in
//! `slurm.sh` and a list of JSON strings (YAML double-quoted scalars) in `k8s-job.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use super::plan::{PlanEntry, plan_folder, read_plan};
use crate::run::write_text_atomic;

/// The `--steal-after` of the emitted task command, in seconds. A requeued task that lands on
/// a new node after its old node crashed may find the old lock still held on the shared
/// filesystem; ten minutes of silence (120 missed heartbeats) means its holder is gone.
pub const EMITTED_STEAL_AFTER_S: u64 = 600;

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

/// The sbatch options bn-exp writes itself (long name, short letter, and what to do instead):
/// an `--sbatch-line` may not set them again.
const OWN_OPTIONS: [(&str, Option<char>, &str); 9] = [
    (
        "array",
        Some('a'),
        "one task per plan entry (--max-parallel sets its %P)",
    ),
    ("job-name", Some('J'), "the job is named after the study"),
    ("output", Some('o'), "each task's log goes beside the plan"),
    (
        "time",
        Some('t'),
        "from bench's estimate of the longest run",
    ),
    ("cpus-per-task", Some('c'), "one core a task"),
    ("requeue", None, "a preempted task is requeued and resumes"),
    (
        "no-requeue",
        None,
        "a preempted task is requeued (--requeue) and resumes",
    ),
    ("partition", Some('p'), "give it with bn-exp's --partition"),
    ("account", Some('A'), "give it with bn-exp's --account"),
];

/// sbatch's short options that take no value, which may come before another in one word
/// (`-Hv`); any other letter takes the rest of the word as its value.
const FLAG_LETTERS: &str = "HOQsvWVhu";

impl EmitOptions {
    /// Check the flags, and the results folder the plan goes into, before anything is written:
    /// every error names its flag. [`emit`] checks them again, with the study folder as the
    /// tasks will see it.
    pub fn check(&self, kind: Emit, results_dir: &Path) -> Result<()> {
        self.check_flags(kind)?;
        let results = std::path::absolute(results_dir).unwrap_or_else(|_| results_dir.into());
        check_folder(kind, &results)
    }

    fn check_flags(&self, kind: Emit) -> Result<()> {
        if let Some(p) = self.max_parallel {
            ensure!(p > 0, "--max-parallel must be at least 1, not 0");
        }
        check_path("--data-dir", &self.data_dir)?;
        match kind {
            Emit::Slurm => {
                for (flag, value) in [
                    ("--partition", &self.partition),
                    ("--account", &self.account),
                ] {
                    if let Some(value) = value {
                        check_word(flag, value)?;
                        check_sbatch_text(flag, value)?;
                    }
                }
                self.sbatch_lines
                    .iter()
                    .try_for_each(|l| check_sbatch_line(l))
            }
            Emit::K8s => check_word("--image", &self.image),
        }
    }
}

/// The results (or study) folder, which `slurm.sh` names in `#SBATCH --output` and
/// `k8s-job.yaml` in a comment: whitespace is quoted and `%` doubled there, but a backslash
/// makes Slurm leave `%A_%a` unexpanded (every task would write one log).
fn check_folder(kind: Emit, dir: &Path) -> Result<()> {
    let flag = "--results-dir";
    let text = check_path(flag, dir)?;
    if kind == Emit::K8s {
        return Ok(());
    }
    check_sbatch_text(flag, text)?;
    ensure!(
        !text.contains('\\'),
        "{flag} {text:?} holds a backslash, which makes Slurm take the tasks' log file name in \
         #SBATCH --output literally (every task would write one file); choose a folder without one"
    );
    Ok(())
}

/// Write the scheduler file for a plan beside it; returns its path. The plan is read (and
/// checked) as `bn-exp run` reads it, and the options are checked as [`EmitOptions::check`]
/// does, with the plan's folder as the results folder.
pub fn emit(plan: &Path, kind: Emit, options: &EmitOptions) -> Result<PathBuf> {
    let entries = read_plan(plan)?;
    ensure!(!entries.is_empty(), "{} holds no runs", plan.display());
    let dir = plan_folder(plan)?;
    let plan = dir.join(
        plan.file_name()
            .with_context(|| format!("{} is not a file", plan.display()))?,
    );
    options.check_flags(kind)?;
    check_folder(kind, &dir)?;
    let exe = std::env::current_exe().context("cannot find the bn-exp executable")?;
    let data = std::fs::canonicalize(&options.data_dir)
        .with_context(|| format!("cannot find {}", options.data_dir.display()))?;
    // Checked again as the tasks will read them: canonical paths may differ from the flags'.
    let exe = check_path("the bn-exp executable's path", &exe)?;
    let data = check_path("--data-dir", &data)?;
    let plan = check_path("the plan's path", &plan)?;
    let study = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    // The task's command, one argument each: the Kubernetes Job lists them, the Slurm script
    // joins them with shell quoting, so paths with spaces survive both.
    let command: Vec<String> = [
        exe,
        "run",
        "--quiet",
        "--plan",
        plan,
        "--data-dir",
        data,
        "--steal-after",
        &EMITTED_STEAL_AFTER_S.to_string(),
    ]
    .map(String::from)
    .into();
    let (name, text) = match kind {
        Emit::Slurm => (
            "slurm.sh",
            slurm_script(study, &dir, &entries, &command, options)?,
        ),
        Emit::K8s => (
            "k8s-job.yaml",
            k8s_job(study, &dir, entries.len(), &command, options),
        ),
    };
    let path = dir.join(name);
    // A requeued task may be reading the script while it is written again.
    write_text_atomic(&path, &text)?;
    Ok(path)
}

/// Refuse a value that could end a line of a script or manifest: control characters (newline,
/// carriage return, tab, NUL, DEL, NEL...), YAML's line and paragraph separators, and the two
/// code points YAML cannot hold at all.
fn check_text(what: &str, value: &str) -> Result<()> {
    let breaks =
        |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FFFE}' | '\u{FFFF}');
    if let Some(c) = value.chars().find(|&c| breaks(c)) {
        bail!(
            "{what} {value:?} holds U+{:04X}, a control character or line break; in the \
             scheduler file it could end a line and start one of its own",
            u32::from(c)
        );
    }
    Ok(())
}

/// A path as it goes into the scheduler file: UTF-8 (written otherwise, it would name another
/// file) and checked as [`check_text`] checks a value.
fn check_path<'a>(what: &str, path: &'a Path) -> Result<&'a str> {
    let text = path
        .to_str()
        .with_context(|| format!("{what} {path:?} is not UTF-8, and cannot be written as it is"))?;
    check_text(what, text)?;
    Ok(text)
}

/// A single word: not empty, no whitespace (partitions, accounts and image names have none;
/// sbatch would split at it), no control character.
fn check_word(what: &str, value: &str) -> Result<()> {
    ensure!(!value.trim().is_empty(), "{what} is empty");
    check_text(what, value)?;
    ensure!(
        !value.chars().any(char::is_whitespace),
        "{what} {value:?} holds whitespace; it names one {}",
        if what == "--image" {
            "image"
        } else {
            "Slurm name"
        }
    );
    Ok(())
}

/// What sbatch's reader of `#SBATCH` lines would change: it blanks out the words `hetjob` and
/// `packjob` wherever they stand (they split a heterogeneous job).
fn check_sbatch_text(what: &str, value: &str) -> Result<()> {
    check_text(what, value)?;
    let lower = value.to_lowercase();
    if let Some(word) = ["hetjob", "packjob"]
        .into_iter()
        .find(|w| lower.contains(w))
    {
        bail!(
            "{what} {value:?} holds `{word}`, which sbatch reads in an #SBATCH line as the start \
             of another component of a heterogeneous job"
        );
    }
    Ok(())
}

/// An `--sbatch-line`: one or more sbatch options, which sbatch reads as it reads any
/// `#SBATCH` line; refused if it is not an option, could start a line of its own, has an
/// unmatched quote, or sets an option bn-exp sets itself (abbreviations included, as sbatch
/// accepts them).
fn check_sbatch_line(line: &str) -> Result<()> {
    let flag = "--sbatch-line";
    check_sbatch_text(flag, line)?;
    let trimmed = line.trim();
    ensure!(!trimmed.is_empty(), "{flag} is empty");
    ensure!(
        trimmed.starts_with('-'),
        "{flag} {line:?} is not an sbatch option: give it as sbatch takes it, as --mem=4G"
    );
    let words = sbatch_words(trimmed)
        .with_context(|| format!("{flag} {line:?}: sbatch would refuse the script"))?;
    for word in &words {
        if let Some(why) = own_option(word) {
            bail!("{flag} {line:?} is refused: {why}");
        }
    }
    Ok(())
}

/// The words sbatch reads from the rest of an `#SBATCH` line, as its reader (`_get_argument`
/// in Slurm's `src/sbatch/opt.c`) takes them apart: split at ASCII whitespace outside quotes,
/// `'` or `"` quoting, `\` keeping the next character (but not whitespace outside quotes,
/// which still ends the word), an unquoted `#` ending the line, and so does an empty word.
fn sbatch_words(line: &str) -> Result<Vec<String>> {
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|&c| space(c)).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        if chars.peek() == Some(&':') {
            bail!("sbatch refuses a word that starts with `:`");
        }
        let mut word = String::new();
        let (mut quote, mut escaped, mut comment) = (None, false, false);
        while let Some(&c) = chars.peek() {
            if quote.is_none() && space(c) {
                break;
            }
            chars.next();
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
                continue;
            } else if let Some(q) = quote {
                if c == q {
                    quote = None;
                    continue;
                }
            } else if c == '"' || c == '\'' {
                quote = Some(c);
                continue;
            } else if c == '#' {
                comment = true;
                break;
            }
            word.push(c);
        }
        if let Some(q) = quote {
            bail!("unmatched {q}");
        }
        if word.is_empty() {
            break;
        }
        words.push(word);
        if comment {
            break;
        }
    }
    Ok(words)
}

/// Why a word of an `#SBATCH` line may not stand in an `--sbatch-line`, if it sets one of the
/// options bn-exp sets itself or ends sbatch's options.
fn own_option(word: &str) -> Option<String> {
    if word == "--" || word.starts_with("--=") {
        return Some("`--` ends sbatch's options".into());
    }
    let refuse = |&(option, _, why): &(&str, Option<char>, &str)| {
        format!(
            "it sets --{option}, which bn-exp sets itself: {why}; to change it for one \
             submission, give it to sbatch (`sbatch --{option}=... slurm.sh`)"
        )
    };
    if let Some(long) = word.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or_default();
        // sbatch takes any unambiguous abbreviation of a long option: --arr is --array.
        return OWN_OPTIONS
            .iter()
            .find(|(option, ..)| !name.is_empty() && option.starts_with(name))
            .map(refuse);
    }
    let letters = word.strip_prefix('-')?;
    for letter in letters.chars() {
        if let Some(own) = OWN_OPTIONS.iter().find(|o| o.1 == Some(letter)) {
            return Some(refuse(own));
        }
        if !FLAG_LETTERS.contains(letter) {
            break;
        }
    }
    None
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

/// `word` as one shell word: as it is when it holds only safe characters, else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `value` as one word of an `#SBATCH` line (what follows `--option=`): as it is when it holds
/// only safe characters, else double-quoted, with `"`, `\` and `#` escaped by a backslash
/// (older sbatch ends the line at a `#` even inside quotes, but not at an escaped one).
fn sbatch_word(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        return value.to_string();
    }
    let mut quoted = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '#') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
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
    // Slurm expands `%` in a log file's name: `%%` is a `%` of the folder's own.
    let output = format!(
        "{}/slurm-%A_%a.out",
        dir.to_string_lossy().replace('%', "%%")
    );
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# bn-exp study {study}: one array task per run of plan.jsonl."),
        "# Submit with `sbatch slurm.sh`, then collect with `bn-exp compare --study ...`.".into(),
        format!(
            "#SBATCH --job-name={}",
            sbatch_word(&format!("bn-exp-{study}"))
        ),
        format!("#SBATCH --array=0-{last}{limit}"),
        "#SBATCH --cpus-per-task=1".into(),
        format!("#SBATCH --time={}", time_limit(entries)?),
        format!("#SBATCH --output={}", sbatch_word(&output)),
        "#SBATCH --requeue".into(),
    ];
    if let Some(p) = &options.partition {
        lines.push(format!("#SBATCH --partition={}", sbatch_word(p)));
    }
    if let Some(a) = &options.account {
        lines.push(format!("#SBATCH --account={}", sbatch_word(a)));
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

/// The Job's name: a study's name as Kubernetes takes it (lower-case letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters).
fn job_name(study: &str) -> String {
    let name: String = format!("bn-exp-{study}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    name.trim_end_matches('-').to_string()
}

/// A string as a YAML double-quoted scalar: a JSON string is one, escapes and all.
fn yaml_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

fn k8s_job(
    study: &str,
    dir: &Path,
    runs: usize,
    command: &[String],
    options: &EmitOptions,
) -> String {
    let parallelism = options.max_parallel.unwrap_or(runs).min(runs);
    let args: Vec<String> = command.iter().map(|a| yaml_string(a)).collect();
    format!(
        "# bn-exp study {study}: one indexed task per run of plan.jsonl; JOB_COMPLETION_INDEX\n\
         # picks the entry. The plan, the results and the data must be on a volume every pod\n\
         # mounts at the same path; the results are in\n\
         # {}\n\
         apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n  name: {}\n\
         spec:\n  completionMode: Indexed\n  completions: {runs}\n  parallelism: {parallelism}\n  \
         backoffLimit: {}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      \
         - name: bn-exp\n        image: {}\n        env:\n        - name: RAYON_NUM_THREADS\n          \
         value: \"1\"\n        command: [{}]\n        resources:\n          requests:\n            cpu: \"1\"\n",
        yaml_string(&dir.to_string_lossy()),
        yaml_string(&job_name(study)),
        runs * 2,
        yaml_string(&options.image),
        args.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn time_limits_read_as_slurm_wants_them() {
        // Rounded up to the second, and at least ten minutes however short the estimate.
        let limits = [
            (1_000_000.0, "11-13:46:40"),
            (86_399.5, "1-00:00:00"),
            (0.0, "0-00:10:00"),
            (599.0, "0-00:10:00"),
            (600.5, "0-00:10:01"),
        ];
        for (seconds, limit) in limits {
            assert_eq!(format_limit(seconds), limit, "{seconds} s");
        }
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
    fn sbatch_reads_each_quoted_value_back_whole() {
        for value in [
            "gpu",
            "/r/my study/slurm-%A_%a.out",
            "a\"b",
            "a'b",
            "a\\b",
            "#x",
            "a#b c",
            "$(touch x)",
            "`id`;x",
            "",
        ] {
            let word = format!("--partition={}", sbatch_word(value));
            assert_eq!(
                sbatch_words(&word).unwrap(),
                vec![format!("--partition={value}")],
                "{value:?} as {word}"
            );
        }
        assert_eq!(sbatch_word("gpu-1.a"), "gpu-1.a");
        assert_eq!(sbatch_word("a b"), "\"a b\"");
        assert_eq!(sbatch_word("a#\"\\"), r#""a\#\"\\""#);
    }

    #[test]
    fn sbatch_lines_split_as_sbatch_splits_them() {
        let words = |line: &str| sbatch_words(line).unwrap();
        assert_eq!(words("--mem=4G  -N 1"), ["--mem=4G", "-N", "1"]);
        assert_eq!(
            words("--comment=\"a b\" --x # -a 1"),
            ["--comment=a b", "--x"]
        );
        assert_eq!(words("--x#y"), ["--x"]);
        assert_eq!(words("--comment='a \"b'"), ["--comment=a \"b"]);
        // An escaped space still ends the word (sbatch checks for whitespace first).
        assert_eq!(
            words(r"--comment=a\ --array=1"),
            ["--comment=a", "--array=1"]
        );
        assert_eq!(words(r"--comment=a\#b"), ["--comment=a#b"]);
        // An empty word ends the line, as in sbatch.
        assert_eq!(words("--x \"\" --array=1"), ["--x"]);
        assert!(sbatch_words("--comment=\"a").is_err());
        assert!(sbatch_words("--x :y").is_err());
    }

    #[test]
    fn an_sbatch_line_may_not_set_what_bn_exp_sets() {
        for line in [
            "--array=0-3",
            "--array 0-3",
            "--arr=1",
            "-a 1",
            "-a1",
            "-Ha1",
            "--job-name=x",
            "-J x",
            "--output=/tmp/x",
            "-o x",
            "--time=1",
            "-t10",
            "--cpus-per-task=4",
            "-c4",
            "--requeue",
            "--no-requeue",
            "--partition=gpu",
            "-pgpu",
            "--account=me",
            "-A me",
            "--mem=4G --array=1",
            r"--comment=a\ --array=1",
            "--",
            "--=1",
        ] {
            let err = format!("{:#}", check_sbatch_line(line).unwrap_err());
            assert!(err.starts_with("--sbatch-line"), "{line:?}: {err}");
        }
        for line in [
            "--mem=4G",
            "-N 1",
            "--gres=gpu:1",
            "--constraint=\"a&b\"",
            "--time-min=10",
            "--comment=\"see --array\"",
            "-D/tmp/a",
            "--mail-type=END # and a comment",
            "--qos=$(x)",
        ] {
            check_sbatch_line(line).unwrap_or_else(|e| panic!("{line:?}: {e:#}"));
        }
        for line in [
            "",
            " ",
            "mem=4G",
            "--mem=4G\nid",
            "--x\r",
            "--x=\"a",
            "--hetjob",
            "--x=PACKJOB",
        ] {
            let err = format!("{:#}", check_sbatch_line(line).unwrap_err());
            assert!(err.starts_with("--sbatch-line"), "{line:?}: {err}");
        }
    }

    #[test]
    fn flags_are_checked_and_each_error_names_its_flag() {
        let slurm = |options: EmitOptions| {
            format!(
                "{:#}",
                options.check(Emit::Slurm, Path::new("/r")).unwrap_err()
            )
        };
        let with = |partition: &str| EmitOptions {
            partition: Some(partition.into()),
            ..EmitOptions::default()
        };
        for bad in [
            "",
            " ",
            "a b",
            "a\nb",
            "a\rb",
            "\t",
            "a\u{2028}b",
            "a\u{85}b",
            "hetjob",
        ] {
            assert!(slurm(with(bad)).starts_with("--partition"), "{bad:?}");
            let account = EmitOptions {
                account: Some(bad.into()),
                ..EmitOptions::default()
            };
            assert!(slurm(account).starts_with("--account"), "{bad:?}");
        }
        for good in ["gpu", "a;b", "$(x)", "a'b", "a\"b", "#x", "a\\b"] {
            with(good).check(Emit::Slurm, Path::new("/r")).unwrap();
        }
        let zero = EmitOptions {
            max_parallel: Some(0),
            image: "x".into(),
            ..EmitOptions::default()
        };
        assert!(slurm(zero.clone()).starts_with("--max-parallel"));
        let err = format!("{:#}", zero.check(Emit::K8s, Path::new("/r")).unwrap_err());
        assert!(err.starts_with("--max-parallel"), "{err}");
        for bad in ["", "a b", "a\nkind: Pod", "a\u{2029}"] {
            let options = EmitOptions {
                image: bad.into(),
                ..EmitOptions::default()
            };
            let err = format!(
                "{:#}",
                options.check(Emit::K8s, Path::new("/r")).unwrap_err()
            );
            assert!(err.starts_with("--image"), "{bad:?}: {err}");
        }
        let fine = EmitOptions {
            image: "x".into(),
            ..EmitOptions::default()
        };
        for bad in ["/r\n#SBATCH x", "/a\\b", "/hetjob"] {
            let err = format!("{:#}", fine.check(Emit::Slurm, Path::new(bad)).unwrap_err());
            assert!(err.starts_with("--results-dir"), "{bad:?}: {err}");
        }
        fine.check(Emit::Slurm, Path::new("/my results/%x"))
            .unwrap();
        fine.check(Emit::K8s, Path::new("/a\\b")).unwrap();
        let data = EmitOptions {
            data_dir: "/d\n".into(),
            ..fine
        };
        assert!(slurm(data).starts_with("--data-dir"));
    }

    #[test]
    fn the_kubernetes_job_keeps_each_argument_whole() {
        let options = EmitOptions {
            max_parallel: Some(2),
            image: "reg.io/bn-exp:1\"x".into(),
            ..EmitOptions::default()
        };
        let text = k8s_job(
            "My_study.v2+",
            Path::new("/results/my study"),
            3,
            &command(),
            &options,
        );
        let job: Value = serde_yaml::from_str(&text).unwrap();
        let spec = &job["spec"];
        assert_eq!(spec["completions"], 3);
        assert_eq!(spec["parallelism"], 2);
        assert_eq!(job["metadata"]["name"], "bn-exp-my-study-v2");
        let container = &spec["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "reg.io/bn-exp:1\"x");
        let want: Vec<Value> = command().into_iter().map(Value::from).collect();
        assert_eq!(container["command"], Value::from(want));
        assert_eq!(job_name(&"x".repeat(80)).len(), 63);
    }
}
