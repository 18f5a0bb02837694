//! The scheduler files `compare --plan --emit` writes, given hostile flags and results folders:
//! newlines, carriage returns, `$(…)`, backticks, `;`, quotes, `#`, backslashes, `%`, spaces,
//! Unicode line separators and empty values. Each one is either refused with an error that
//! names its flag (and nothing is written), or the file it gives is what it must be:
//!
//! - `slurm.sh` passes `bash -n`, has only comments and blank lines before its first command,
//!   all its `#SBATCH` lines among them, and those lines read back, as sbatch reads them, as
//!   exactly the options bn-exp meant, each value whole; executed with stubs for `sbatch` and
//!   `srun` on its PATH, it runs no injected command (each would create a marker file) and
//!   reaches `bn-exp run` with its plan;
//! - `k8s-job.yaml` parses (serde_yaml) to exactly the expected Job, the image and every
//!   argument whole, and not one key more.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::{self, describe, embedded_data, repo, text};

/// A study of two short smoke runs, `hostile`, in `dir`.
fn study(dir: &Path) -> PathBuf {
    let path = dir.join("hostile.json");
    let spec = json!({
        "study": "hostile", "description": "two smoke runs",
        "base": repo().join("configs/smoke.json"),
        "set": {"steps": 20}, "grid": {"seed": [0, 1]}
    });
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// Values that would break out of a line, a word or a quote, or run a command if a shell
/// evaluated them: `command` creates the marker file if it ever runs, and `word` is the same
/// command as one word (`${IFS}` for its spaces), which only quoting keeps from running.
fn hostile_values(command: &str, word: &str) -> Vec<String> {
    let mut values: Vec<String> = [
        "",
        " ",
        "\t",
        "a b",
        "x'y",
        "x\"y",
        "#x",
        "x\\y",
        "x%jy",
        "x\u{2028}y",
        "x\u{2029}y",
        "x\u{85}y",
        "x\u{7f}y",
        "x\u{1b}[2Jy",
        "hetjob",
    ]
    .map(String::from)
    .to_vec();
    values.extend([
        format!("x\n{command}"),
        format!("x\r{command}"),
        format!("x\r\n{command}"),
        format!("\n{command}\n"),
        format!("'\n{command}\n'"),
        format!("\"\n{command}\n\""),
        format!("x\n{word}"),
        format!("$({command})"),
        format!("`{command}`"),
        format!("x; {command} && y | z"),
        format!("$({word})"),
        format!("`{word}`"),
        format!("x;{word}&&y|z"),
    ]);
    values
}

/// `hostile_values` whose commands create `marker`.
fn hostile_to(marker: &Path) -> Vec<String> {
    let m = marker.display();
    hostile_values(&format!("touch {m}"), &format!("touch${{IFS}}{m}"))
}

/// A temporary folder with the study, the marker's place and stubs of Slurm's commands.
struct Bench {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    study: PathBuf,
    marker: PathBuf,
    stubs: PathBuf,
}

/// What an accepted emission must have written.
#[derive(Default)]
struct Expected {
    partition: Option<String>,
    account: Option<String>,
    /// The words of the `--sbatch-line`s, as sbatch reads them.
    sbatch_words: Vec<String>,
    image: Option<String>,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let stubs = root.join("stubs");
        std::fs::create_dir(&stubs).unwrap();
        // A Slurm command the script ran would leave its name in `stub-calls`.
        for name in ["sbatch", "srun", "scontrol", "scancel"] {
            let path = stubs.join(name);
            let calls = root.join("stub-calls");
            let script = format!("#!/bin/sh\necho {name} \"$@\" >> '{}'\n", calls.display());
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Bench {
            study: study(&root),
            marker: root.join("marker"),
            stubs,
            root,
            _tmp: tmp,
        }
    }

    /// `compare --study hostile --results-dir RESULTS --plan --emit KIND --data-dir DATA`
    /// with `flags`, from a working folder of its own.
    fn emit(&self, kind: &str, flags: &[String], results: &Path, data: &Path) -> Output {
        let work = self.root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        common::compare_study(&self.study, results)
            .args(["--plan", "--emit", kind, "--data-dir"])
            .arg(data)
            .args(flags)
            .current_dir(work)
            .env_remove("BN_EXP_DATA_DIR")
            .env_remove(bn_exp::data::CATALOGUE_ENV)
            .output()
            .unwrap()
    }

    /// One flag (or one results folder) alone, with a data folder that does not exist: refused
    /// with an error naming `flag` and nothing written, or let through to the data folder's
    /// error, before bench times anything (a second a script). Returns whether it was let
    /// through; [`Bench::check_slurm`] then emits it for real, with others.
    fn passes(&self, kind: &str, flags: &[String], results: &Path, flag: &str) -> bool {
        let no_data = self.root.join("no-data");
        let output = self.emit(kind, flags, results, &no_data);
        let shown = format!("{flags:?} {results:?}: {}", describe(&output));
        assert_eq!(output.status.code(), Some(2), "{shown}");
        let err = text(&output.stderr);
        assert!(!err.contains("panicked"), "{shown}");
        if err.contains(&no_data.display().to_string()) {
            return true;
        }
        assert!(
            err.contains(flag),
            "the error does not name {flag}: {shown}"
        );
        assert!(
            !results.join("hostile").exists(),
            "a refused flag left a plan behind: {shown}"
        );
        false
    }

    /// Emit `slurm.sh` for real with `flags` into `results`, and check it.
    fn check_slurm(&self, flags: &[String], results: &Path, expected: &Expected) {
        let output = self.emit("slurm", flags, results, &embedded_data());
        let shown = format!("{flags:?} {results:?}: {}", describe(&output));
        assert!(output.status.success(), "{shown}");
        let dir = results.join("hostile").canonicalize().unwrap();
        let path = dir.join("slurm.sh");
        let script = std::fs::read_to_string(&path).unwrap();
        let shown = format!("{shown}\n--- slurm.sh:\n{script}");
        let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            syntax.status.success(),
            "bash -n: {}\n{shown}",
            describe(&syntax)
        );
        // Before the first command: the shebang, comments and blank lines only, and every
        // #SBATCH line there (sbatch reads none after it). Then the two commands, no more.
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "#!/bin/bash", "{shown}");
        let first_command = lines
            .iter()
            .position(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .expect("a command");
        assert_eq!(
            lines[first_command], "export RAYON_NUM_THREADS=1",
            "{shown}"
        );
        assert_eq!(lines.len(), first_command + 2, "{shown}");
        assert!(lines[first_command + 1].starts_with("exec "), "{shown}");
        // The #SBATCH lines as sbatch reads them: exactly the options meant, values whole.
        let mut options: Vec<String> = lines[..first_command]
            .iter()
            .filter_map(|l| l.strip_prefix("#SBATCH"))
            .flat_map(|rest| sbatch_words(rest).unwrap_or_else(|e| panic!("{e}: {shown}")))
            .collect();
        let log = format!(
            "{}/slurm-%A_%a.out",
            dir.display().to_string().replace('%', "%%")
        );
        let mut want = vec![
            "--job-name=bn-exp-hostile".to_string(),
            "--array=0-1".into(),
            "--cpus-per-task=1".into(),
            format!("--output={log}"),
            "--requeue".into(),
        ];
        want.extend(
            expected
                .partition
                .iter()
                .map(|p| format!("--partition={p}")),
        );
        want.extend(expected.account.iter().map(|a| format!("--account={a}")));
        want.extend(expected.sbatch_words.iter().cloned());
        let time = options.iter().position(|o| o.starts_with("--time="));
        options.remove(time.expect("a --time line"));
        assert_eq!(options, want, "{shown}");

        // Executed as a task with an index past the plan's end: it reaches `bn-exp run` with
        // its plan, which refuses the index, and runs nothing else.
        let path_var = format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let work = self.root.join("task");
        std::fs::create_dir_all(&work).unwrap();
        let task = Command::new("bash")
            .arg(&path)
            .current_dir(&work)
            .env("PATH", path_var)
            .env("SLURM_ARRAY_TASK_ID", "7")
            .env_remove("JOB_COMPLETION_INDEX")
            .output()
            .unwrap();
        let shown = format!("{}\n{shown}", describe(&task));
        assert_eq!(task.status.code(), Some(2), "{shown}");
        assert!(
            text(&task.stderr).contains("holds 2 runs (indices 0 to 1); there is no index 7"),
            "{shown}"
        );
        self.assert_nothing_ran(&shown);
    }

    /// Emit `k8s-job.yaml` for real with `flags` into `results`: refused with an error naming
    /// `flag` and nothing written, or a Job of exactly the expected keys and values. Returns
    /// whether it was written.
    fn check_k8s(&self, flags: &[String], results: &Path, flag: &str, expected: &Expected) -> bool {
        let output = self.emit("k8s", flags, results, &embedded_data());
        let shown = format!("{flags:?} {results:?}: {}", describe(&output));
        if !output.status.success() {
            assert_eq!(output.status.code(), Some(2), "{shown}");
            assert!(text(&output.stderr).contains(flag), "{shown}");
            assert!(!results.join("hostile").exists(), "{shown}");
            return false;
        }
        let dir = results.join("hostile").canonicalize().unwrap();
        check_k8s(&dir, expected, &shown);
        self.assert_nothing_ran(&shown);
        true
    }

    fn assert_nothing_ran(&self, shown: &str) {
        assert!(!self.marker.exists(), "an injected command ran: {shown}");
        let calls = self.root.join("stub-calls");
        assert!(
            !calls.exists(),
            "the script ran {}: {shown}",
            std::fs::read_to_string(&calls).unwrap_or_default()
        );
    }
}

/// `k8s-job.yaml` parses to exactly this Job.
fn check_k8s(dir: &Path, expected: &Expected, shown: &str) {
    let yaml = std::fs::read_to_string(dir.join("k8s-job.yaml")).unwrap();
    let shown = format!("{shown}\n--- k8s-job.yaml:\n{yaml}");
    let job: Value = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {shown}"));
    let exe = Path::new(env!("CARGO_BIN_EXE_bn-exp"))
        .canonicalize()
        .unwrap();
    let data = embedded_data().canonicalize().unwrap();
    let path = |p: &Path| p.display().to_string();
    let want = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bn-exp-hostile"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 4,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "bn-exp",
                    "image": expected.image.clone().unwrap_or("bn-exp:latest".into()),
                    "env": [{"name": "RAYON_NUM_THREADS", "value": "1"}],
                    "command": [
                        path(&exe), "run", "--quiet", "--plan", path(&dir.join("plan.jsonl")),
                        "--data-dir", path(&data), "--steal-after", "600"
                    ],
                    "resources": {"requests": {"cpu": "1"}}
                }]
            }}
        }
    });
    assert_eq!(job, want, "{shown}");
}

/// The words sbatch reads from the rest of an `#SBATCH` line, written here from Slurm's own
/// reader (`_get_argument` in `src/sbatch/opt.c`), independently of bn-exp's: ASCII
/// whitespace ends a word outside quotes (even after a backslash), `\` keeps the next
/// character, `'` and `"` quote, an unquoted `#` ends the line, and so does an empty word.
fn sbatch_words(line: &str) -> Result<Vec<String>, String> {
    let bytes: Vec<char> = line.chars().collect();
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut at = 0;
    let mut words = Vec::new();
    loop {
        while at < bytes.len() && space(bytes[at]) {
            at += 1;
        }
        if at == bytes.len() {
            return Ok(words);
        }
        let mut word = String::new();
        let (mut quote, mut escape) = (None, false);
        while at < bytes.len() && (quote.is_some() || !space(bytes[at])) && bytes[at] != '\n' {
            let c = bytes[at];
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
                at += 1;
                continue;
            } else if let Some(q) = quote {
                if c == q {
                    quote = None;
                    at += 1;
                    continue;
                }
            } else if c == '"' || c == '\'' {
                quote = Some(c);
                at += 1;
                continue;
            } else if c == '#' {
                break;
            }
            word.push(c);
            at += 1;
        }
        if quote.is_some() {
            return Err(format!("unmatched quote in {line:?}"));
        }
        if word.is_empty() {
            return Ok(words);
        }
        words.push(word);
    }
}

/// `--partition`, `--account` and `--sbatch-line` with every hostile value: each refused with
/// an error naming its flag, or emitted (the values let through, several to a script) into a
/// `slurm.sh` that runs nothing injected and gives sbatch each value whole.
#[test]
fn hostile_slurm_flags_are_refused_or_quoted() {
    let bench = Bench::new();
    let values = hostile_to(&bench.marker);
    let mut lines: Vec<String> = values
        .iter()
        .flat_map(|v| [v.clone(), format!("--comment={v}")])
        .collect();
    // bn-exp's own options, however they are spelled.
    lines.extend(
        [
            "--array=0-1",
            "--array 0",
            "-a 0",
            "-a0",
            "--arr=1",
            "--job-name=x",
            "-J x",
            "--output=/tmp/x",
            "-o /tmp/x",
            "--time=1",
            "-t 1",
            "--requeue",
            "--no-requeue",
            "--cpus-per-task=2",
            "--partition=x",
            "-p x",
            "--account=x",
            "-A x",
            "--mem=4G --array=1",
            "--comment=a\\ --array=1",
            "--",
        ]
        .map(String::from),
    );
    let mut passed: [Vec<String>; 3] = Default::default();
    let mut case = 0;
    let mut single = |flag: &str, value: &str| {
        case += 1;
        let results = bench.root.join(format!("single-{case}"));
        bench.passes("slurm", &[format!("{flag}={value}")], &results, flag)
    };
    for value in &values {
        for (i, flag) in ["--partition", "--account"].into_iter().enumerate() {
            if single(flag, value) {
                passed[i].push(value.clone());
            }
        }
        // A newline or carriage return can only be refused: #SBATCH lines are lines.
        if value.contains(['\n', '\r']) {
            assert!(
                passed.iter().all(|p| !p.contains(value)),
                "{value:?} was let through"
            );
        }
    }
    for line in &lines {
        if single("--sbatch-line", line) {
            assert!(!line.contains(['\n', '\r']), "{line:?} was let through");
            passed[2].push(line.clone());
        }
    }
    let [partitions, accounts, sbatch_lines] = passed;
    assert!(!partitions.is_empty() && !accounts.is_empty() && !sbatch_lines.is_empty());
    // What was let through, for real: one partition and one account a script, the lines
    // spread over the scripts.
    let scripts = partitions.len().max(accounts.len());
    for k in 0..scripts {
        let partition = partitions.get(k).cloned();
        let account = accounts.get(k).cloned();
        let mine: Vec<&String> = sbatch_lines.iter().skip(k).step_by(scripts).collect();
        let mut flags = Vec::new();
        flags.extend(partition.iter().map(|p| format!("--partition={p}")));
        flags.extend(account.iter().map(|a| format!("--account={a}")));
        flags.extend(mine.iter().map(|l| format!("--sbatch-line={l}")));
        let expected = Expected {
            partition,
            account,
            sbatch_words: mine
                .iter()
                .flat_map(|l| sbatch_words(l).expect("a line bn-exp let through"))
                .collect(),
            image: None,
        };
        bench.check_slurm(&flags, &bench.root.join(format!("script-{k}")), &expected);
    }
}

/// A results folder with every hostile value in its name: refused with an error naming
/// `--results-dir`, or emitted into a `slurm.sh` whose `#SBATCH --output` sbatch reads as one
/// word (the folder with a space among them) and a `k8s-job.yaml` that names it whole.
#[test]
fn hostile_results_folders_are_refused_or_quoted() {
    let bench = Bench::new();
    // Folder names hold no `/`: these commands find the marker from the task's folder.
    let mut names = hostile_values("cd .. && touch marker", "cd${IFS}..;touch${IFS}marker");
    names.retain(|name| !name.is_empty());
    names.extend(["with space".into(), "a%Ab".into(), "-x".into()]);
    let flag = "--results-dir";
    let mut passed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let results = bench.root.join(format!("single-{i}")).join(name);
        if bench.passes("slurm", &[], &results, flag) {
            passed.push(name.clone());
        }
        let k8s = bench.root.join(format!("k8s-{i}")).join(name);
        bench.check_k8s(&[], &k8s, flag, &Expected::default());
    }
    assert!(passed.contains(&"with space".to_string()), "{passed:?}");
    assert!(
        !passed.iter().any(|name| name.contains(['\n', '\r'])),
        "{passed:?}"
    );
    // Every name let through, as the folders of one results path.
    let results = passed
        .iter()
        .fold(bench.root.join("nested"), |path, name| path.join(name));
    bench.check_slurm(&[], &results, &Expected::default());
}

/// `--image` with every hostile value, and with YAML that would add keys to the Job: refused
/// with an error naming `--image`, or a Job of exactly the expected keys, the image whole.
#[test]
fn hostile_images_are_refused_or_quoted() {
    let bench = Bench::new();
    let mut images = hostile_to(&bench.marker);
    images.extend(
        [
            "reg.example/bn-exp:1",
            "x\nkind: Pod",
            "x\n        securityContext: {privileged: true}",
            "x\", \"y",
            "{a: b}",
            "- x",
            "&anchor",
            "*alias",
            "!!binary",
            "null",
            "true",
            "1",
            "x\u{2028}securityContext:",
        ]
        .map(String::from),
    );
    let mut written = 0;
    for (i, image) in images.iter().enumerate() {
        let expected = Expected {
            image: Some(image.clone()),
            ..Expected::default()
        };
        let results = bench.root.join(format!("r{i}"));
        let flags = [format!("--image={image}")];
        if bench.check_k8s(&flags, &results, "--image", &expected) {
            assert!(!image.contains(['\n', '\r', '\u{2028}']), "{image:?}");
            written += 1;
        }
    }
    assert!(written > 5, "only {written} images were let through");
}

/// `--max-parallel 0` would give an array that never runs a task (`%0`) and a Job with a
/// parallelism of 0: refused, naming the flag.
#[test]
fn max_parallel_zero_is_refused() {
    let bench = Bench::new();
    let zero = ["--max-parallel=0".to_string()];
    let flag = "--max-parallel";
    assert!(!bench.passes("slurm", &zero, &bench.root.join("slurm"), flag));
    assert!(!bench.check_k8s(&zero, &bench.root.join("k8s"), flag, &Expected::default()));
}
