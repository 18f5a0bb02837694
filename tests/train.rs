//! `bn-exp train` end to end, through the real binary, on the embedded MNIST and on the small
//! CIFAR-format set the tests write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bn_exp::config::{Config, config_from_value};
use bn_exp::model::{Mode, Pass};
use bn_exp::tensor::tensor_to_f64;
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

use crate::common::{self, bn_exp, repo, smoke_train, stderr};

/// `bn-exp train --config configs/smoke.json --out DIR` plus extra arguments.
fn train(out: &Path, extra: &[&str]) -> Output {
    smoke_train(out)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("bn-exp runs")
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Rows without wall-clock fields, which legitimately differ between runs.
fn without_timing(mut rows: Vec<Value>) -> Vec<Value> {
    for r in &mut rows {
        r.as_object_mut().unwrap().remove("elapsed_s");
    }
    rows
}

#[test]
fn smoke_run_writes_every_file_with_consistent_content() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = train(&out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "config.json",
        "metrics.jsonl",
        "activations.jsonl",
        "summary.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(out.join("checkpoint/model.bpk").is_file());

    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    // The resolved config has every default filled in.
    assert_eq!(config["norm"]["eps"], 1e-5);
    assert_eq!(config["norm"]["kind"], "batch");
    assert_eq!(config["probe"]["unit"], 0);

    let metrics = read_lines(&out.join("metrics.jsonl"));
    let steps: Vec<u64> = metrics
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![0, 100, 200, 300]);
    assert!(metrics[0]["train_loss"].is_null());
    for m in &metrics[1..] {
        let acc = m["test_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(m["train_loss"].as_f64().unwrap() > 0.0);
    }
    // The smoke net learns: well above chance after 300 steps.
    assert!(
        metrics[3]["test_acc"].as_f64().unwrap() > 0.8,
        "{:?}",
        metrics[3]
    );

    let acts = read_lines(&out.join("activations.jsonl"));
    assert_eq!(acts.len(), metrics.len());
    for a in &acts {
        let t = &a["tracked"];
        let (p15, p50, p85) = (
            t["p15"].as_f64().unwrap(),
            t["p50"].as_f64().unwrap(),
            t["p85"].as_f64().unwrap(),
        );
        assert!(p15 <= p50 && p50 <= p85, "{t}");
        assert_eq!(
            t["layer"], 1,
            "default tracked layer is the last hidden one"
        );
        let layers = a["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        let h = &layers[0]["hist"];
        let counted: u64 = h["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum::<u64>()
            + h["below"].as_u64().unwrap()
            + h["above"].as_u64().unwrap();
        assert_eq!(
            counted,
            200 * 32,
            "every probe value lands in the histogram once"
        );
    }

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["steps"], 300);
    let best = metrics
        .iter()
        .map(|m| m["test_acc"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(summary["best_test_acc"].as_f64().unwrap(), best);
    assert_eq!(summary["final_test_acc"], metrics[3]["test_acc"]);
    // steps_to agrees with the first evaluation at or above each threshold.
    for (t, v) in summary["steps_to"].as_object().unwrap() {
        let t: f64 = t.parse().unwrap();
        let first = metrics
            .iter()
            .find(|m| m["test_acc"].as_f64().unwrap() >= t)
            .map(|m| m["step"].clone());
        assert_eq!(v, &first.unwrap_or(Value::Null), "threshold {t}");
    }
    let pop = &summary["population"];
    assert_eq!(pop["batches"], 10);
    assert!(pop["test_acc"].as_f64().unwrap() > 0.8);
    assert!(summary["drift"]["all"].as_array().unwrap().len() == 3);
    assert_eq!(summary["backend"], "flex");
}

#[test]
fn stopped_and_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    // Dropout, noise and augmentation exercise the seeded masks and draws; 150 is between
    // checkpoints and evaluations.
    let set = common::set_flags(&[
        "model.dropout=0.2",
        "norm.noise=true",
        "augment.pad=2",
        "augment.flip=true",
    ]);
    assert!(train(&straight, &set).status.success());
    // The crops and flips change what the net sees: the same run without them differs.
    let plain = dir.path().join("plain");
    assert!(train(&plain, &set[..4]).status.success());
    assert_ne!(
        without_timing(read_lines(&straight.join("metrics.jsonl"))),
        without_timing(read_lines(&plain.join("metrics.jsonl"))),
        "augmentation changed nothing"
    );
    let first = train(&resumed, &[&set[..], &["--stop-after", "150"]].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        !resumed.join("summary.json").exists(),
        "a stopped run has no summary"
    );
    let refused = train(&resumed, &set);
    assert!(
        !refused.status.success(),
        "an existing run must not be overwritten silently"
    );
    assert!(
        stderr(&refused).contains("--resume"),
        "{}",
        stderr(&refused)
    );
    let second = train(&resumed, &[&set[..], &["--resume"]].concat());
    assert!(second.status.success(), "{}", stderr(&second));
    for f in ["metrics.jsonl", "activations.jsonl"] {
        assert_eq!(
            without_timing(read_lines(&straight.join(f))),
            without_timing(read_lines(&resumed.join(f))),
            "{f} differs after resume"
        );
    }
    // Resuming a finished run does nothing and succeeds.
    let again = train(&resumed, &[&set[..], &["--resume"]].concat());
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already finished"));
}

/// A run folder written before normalisation had its own config key says `bn` in its
/// config.json; bn-exp resumes it, from a config file in the old form too.
#[test]
fn a_run_folder_written_with_the_older_bn_key_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let old = dir.path().join("old");
    assert!(train(&straight, &[]).status.success());
    assert!(train(&old, &["--stop-after", "150"]).status.success());
    // Rewrite the folder's config.json, and the config file, as earlier versions wrote them.
    let to_legacy = |mut config: Value| -> Value {
        let mut norm = config.as_object_mut().unwrap().remove("norm").unwrap();
        let norm = norm.as_object_mut().unwrap();
        assert_eq!(norm.remove("kind").unwrap(), "batch");
        config["bn"] = Value::Object(norm.clone());
        config
    };
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(old.join("config.json")).unwrap()).unwrap();
    std::fs::write(old.join("config.json"), to_legacy(saved).to_string()).unwrap();
    let shipped: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("configs/smoke.json")).unwrap())
            .unwrap();
    let legacy_config = dir.path().join("smoke-legacy.json");
    std::fs::write(&legacy_config, to_legacy(shipped).to_string()).unwrap();
    let o = bn_exp()
        .args(["train", "--quiet", "--resume", "--config"])
        .arg(&legacy_config)
        .arg("--data-dir")
        .arg(repo().join("data"))
        .arg("--out")
        .arg(&old)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["metrics.jsonl", "activations.jsonl"] {
        assert_eq!(
            without_timing(read_lines(&straight.join(f))),
            without_timing(read_lines(&old.join(f))),
            "{f}"
        );
    }
}

/// What a run folder holds, sorted (for "nothing was written or lost" checks).
fn folder(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn force_removes_only_what_bn_exp_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(train(&out, &["--stop-after", "50"]).status.success());
    std::fs::write(out.join("notes.txt"), "my notes").unwrap();
    std::fs::create_dir(out.join("analysis")).unwrap();
    // What a crash mid-save leaves: a staging folder of its own, and the older shared one.
    let staged = ["checkpoint.tmp.4242-17", "checkpoint.tmp"];
    for name in staged {
        std::fs::create_dir(out.join(name)).unwrap();
        std::fs::write(out.join(name).join("state.json"), "{}").unwrap();
    }
    let o = train(&out, &["--force", "--stop-after", "50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "my notes"
    );
    assert!(out.join("analysis").is_dir() && out.join("config.json").is_file());
    assert!(
        staged.iter().all(|name| !out.join(name).exists()),
        "{:?}",
        folder(&out)
    );
    // A resume, holding the lock, clears a crashed save's staging folder too.
    std::fs::create_dir(out.join(staged[0])).unwrap();
    let o = train(&out, &["--resume", "--stop-after", "100"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join(staged[0]).exists(), "{:?}", folder(&out));
}

#[test]
fn a_train_that_fails_before_its_first_step_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let empty = dir.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let cases: [(&[&str], &str); 2] = [
        (
            &["--set", "batch_size=60001"],
            "exceeds the 60000 training images",
        ),
        (&["--set", "dataset=cifar10"], "missing file"),
    ];
    for (extra, needle) in cases {
        let o = bn_exp()
            .args(["train", "--quiet", "--config"])
            .arg(repo().join("configs/smoke.json"))
            .arg("--data-dir")
            .arg(if needle == "missing file" {
                empty.clone()
            } else {
                repo().join("data")
            })
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        assert!(stderr(&o).contains(needle), "{extra:?}: {}", stderr(&o));
        assert!(!out.exists(), "{extra:?} left {:?}", folder(&out));
    }
    // So the next plain train is not told that the folder already holds a run.
    assert!(train(&out, &["--stop-after", "10"]).status.success());
}

#[test]
fn resume_refuses_a_damaged_or_missing_record_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Evaluations at 0 and 100, a checkpoint at 100 and one at the stop.
    assert!(train(&out, &["--stop-after", "150"]).status.success());
    let metrics = out.join("metrics.jsonl");
    let good = std::fs::read_to_string(&metrics).unwrap();

    // A damaged line in the middle: an error naming the file and the line, nothing dropped.
    let lines: Vec<&str> = good.lines().collect();
    let damaged = format!("{{\"step\": 0, \"test_lo\n{}\n", lines[1..].join("\n"));
    std::fs::write(&metrics, &damaged).unwrap();
    let o = train(&out, &["--resume"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("metrics.jsonl line 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&metrics).unwrap(),
        damaged,
        "the file was changed"
    );

    // A torn last line (no newline: a crash mid-write) is dropped, and the run completes
    // exactly as an uninterrupted one.
    std::fs::write(&metrics, format!("{good}{{\"step\": 2")).unwrap();
    let o = train(&out, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let straight = dir.path().join("straight");
    assert!(train(&straight, &[]).status.success());
    assert_eq!(
        without_timing(read_lines(&straight.join("metrics.jsonl"))),
        without_timing(read_lines(&metrics))
    );

    // metrics.jsonl deleted before a resume: refused, not finished with a hole.
    let out = dir.path().join("lost");
    assert!(train(&out, &["--stop-after", "150"]).status.success());
    std::fs::remove_file(out.join("metrics.jsonl")).unwrap();
    let o = train(&out, &["--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("metrics.jsonl is missing") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("summary.json").exists());
}

/// Each record file's bytes, by name (`None`: absent).
fn record_files(run: &Path) -> Vec<(&'static str, Option<Vec<u8>>)> {
    ["metrics.jsonl", "activations.jsonl", "measures.jsonl"]
        .into_iter()
        .map(|f| (f, std::fs::read(run.join(f)).ok()))
        .collect()
}

/// A resume never loses a record: a record at or before the checkpoint that is torn, emptied
/// or deleted (measures included) is refused by file and step, with nothing changed, where it
/// used to be dropped as a torn write and never written again.
#[test]
fn resume_refuses_to_lose_a_record_before_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Evaluations at 0 and 100, measures at 0, 50 and 100, the checkpoint at 150.
    let set = ["--set", "measures.every=50"];
    let stopped = dir.path().join("stopped");
    assert!(
        train(&stopped, &[&set[..], &["--stop-after", "150"]].concat())
            .status
            .success()
    );
    enum Damage {
        /// The last line cut short: the record of step 100, which the checkpoint follows.
        Cut,
        Emptied,
        Deleted,
    }
    let cases = [
        ("metrics.jsonl", Damage::Cut, "has no record of step 100"),
        (
            "activations.jsonl",
            Damage::Cut,
            "has no record of step 100",
        ),
        ("measures.jsonl", Damage::Cut, "has no record of step 100"),
        ("measures.jsonl", Damage::Emptied, "holds no whole record"),
        ("metrics.jsonl", Damage::Emptied, "holds no whole record"),
        (
            "measures.jsonl",
            Damage::Deleted,
            "measures.jsonl is missing",
        ),
    ];
    for (i, (file, damage, says)) in cases.into_iter().enumerate() {
        let run = dir.path().join(format!("case-{i}"));
        std::fs::create_dir_all(run.join("checkpoint")).unwrap();
        for f in [
            "config.json",
            "metrics.jsonl",
            "activations.jsonl",
            "measures.jsonl",
        ] {
            std::fs::copy(stopped.join(f), run.join(f)).unwrap();
        }
        for f in ["state.json", "model.bpk", "optim.bpk"] {
            let at = Path::new("checkpoint").join(f);
            std::fs::copy(stopped.join(&at), run.join(&at)).unwrap();
        }
        let path = run.join(file);
        match damage {
            Damage::Cut => {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.trim_end();
                std::fs::write(&path, &text[..text.len() - 5]).unwrap();
            }
            Damage::Emptied => std::fs::write(&path, "").unwrap(),
            Damage::Deleted => std::fs::remove_file(&path).unwrap(),
        }
        let before = record_files(&run);
        let o = train(&run, &[&set[..], &["--resume"]].concat());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{file} ({says}): {err}");
        assert!(
            err.contains(file) && err.contains(says) && err.contains("--force"),
            "{file} ({says}): {err}"
        );
        if !says.contains("missing") {
            assert!(err.contains("step 150"), "{err}");
        }
        assert_eq!(record_files(&run), before, "{file} ({says}): files changed");
        assert!(!run.join("summary.json").exists());
    }
}

#[test]
fn a_second_process_is_refused_while_the_first_holds_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let out = dir.path().join("run");
    assert!(train(&straight, &[]).status.success());
    let mut first = smoke_train(&out)
        .args(["--quiet", "--hold-after", "150"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first_err = std::io::BufReader::new(first.stderr.take().unwrap());
    let holding = std::io::BufRead::lines(first_err)
        .map(|l| l.unwrap())
        .any(|l| l.contains("holding at step 150"));
    assert!(holding, "the first run never held");
    let before = folder(&out);
    let second = train(&out, &["--resume"]);
    assert_eq!(second.status.code(), Some(2));
    let message = stderr(&second);
    assert!(
        message.contains("in use by another bn-exp process")
            && message.contains(&format!("process {}", first.id())),
        "{message}"
    );
    assert_eq!(
        folder(&out),
        before,
        "the refused process changed the folder"
    );
    // The holder is killed: its lock is stale, the next resume takes it over and completes.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(out.join("run.lock").is_file());
    let third = smoke_train(&out).args(["--resume"]).output().unwrap();
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(
        stderr(&third).contains("which was killed"),
        "{}",
        stderr(&third)
    );
    let lock = std::fs::read_to_string(out.join("run.lock")).unwrap_or_default();
    assert!(lock.is_empty(), "the lock still names a holder: {lock}");
    for f in ["metrics.jsonl", "activations.jsonl"] {
        assert_eq!(
            without_timing(read_lines(&straight.join(f))),
            without_timing(read_lines(&out.join(f))),
            "{f}"
        );
    }
}

#[test]
fn io_errors_and_a_damaged_checkpoint_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(train(&out, &["--stop-after", "150"]).status.success());

    // A truncated checkpoint: the file is named, with the way out.
    let model = out.join("checkpoint/model.bpk");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let o = train(&out, &["--resume"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("checkpoint/model.bpk") && err.contains("--force"),
        "{err}"
    );
    std::fs::write(&model, &bytes).unwrap();

    // A folder nobody may write into (immutable, so even root is refused): the error names the
    // path it could not write, not only "Operation not permitted".
    let chattr = |flag: &str| {
        Command::new("chattr")
            .args([flag, out.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        // No chattr (not Linux, or a file system without attributes): nothing to test here.
        eprintln!("chattr +i is not available here; the unwritable-folder case is not checked");
        return;
    }
    let o = train(&out, &["--resume"]);
    chattr("-i");
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(
        err.contains(&out.display().to_string()),
        "no path in: {err}"
    );
}

#[test]
fn bad_command_lines_are_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let cases: [(Vec<String>, &str); 3] = [
        (
            vec![
                "bench".into(),
                "--reps".into(),
                "0".into(),
                "--only".into(),
                "mlp".into(),
            ],
            "--reps must be at least 1",
        ),
        (
            vec!["bench".into(), "--only".into(), "mlp,nothing".into()],
            "unknown workload \"nothing\"",
        ),
        (
            vec![
                "train".into(),
                "--config".into(),
                repo().join("configs/smoke.json").display().to_string(),
                "--out".into(),
                file.display().to_string(),
            ],
            "exists and is not a folder",
        ),
    ];
    for (args, needle) in cases {
        let o = bn_exp().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed before failing");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a folder");
}

#[test]
fn killed_run_resumes_identically() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let killed = dir.path().join("killed");
    // Measures every 100 steps: the resume must drop the ones taken after the checkpoint
    // (1000 to 1400) and take them again, once each.
    let set = common::set_flags(&[
        "steps=4000",
        "eval_every=200",
        "checkpoint_every=1000",
        "measures.every=100",
    ]);
    assert!(train(&straight, &set).status.success());
    // Step 1500: after the checkpoint at 1000 and the evaluations at 1200 and 1400, which the
    // resume must replay from the checkpoint. The run holds there (saving nothing) until the
    // SIGKILL, so the kill point does not depend on how fast this machine is.
    let mut child = smoke_train(&killed)
        .args(["--quiet", "--hold-after", "1500"])
        .args(&set)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child_err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in std::io::BufRead::lines(child_err) {
        let line = line.unwrap();
        let holding = line.contains("holding at step 1500");
        seen.push(line);
        if holding {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("holding at step 1500")),
        "the run never reached step 1500: {seen:?}"
    );
    assert!(killed.join("checkpoint/state.json").exists());
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!killed.join("summary.json").exists());
    let o = train(&killed, &[&set[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_lines(&straight.join("measures.jsonl")).len(), 40);
    for f in ["metrics.jsonl", "activations.jsonl", "measures.jsonl"] {
        assert_eq!(
            without_timing(read_lines(&straight.join(f))),
            without_timing(read_lines(&killed.join(f))),
            "{f} differs after the kill and resume"
        );
    }
    // The event file was rewritten from the trimmed records: each step once, as straight's.
    crate::tensorboard::assert_events_match_metrics(&killed);
    let scalars = |run: &Path| crate::tensorboard::scalars(run).1;
    assert_eq!(
        scalars(&killed),
        scalars(&straight),
        "the event files differ"
    );
}

/// Test loss of each evaluation in a run folder's `metrics.jsonl`, by step.
fn test_losses(run: &Path) -> Vec<(u64, f64)> {
    read_lines(&run.join("metrics.jsonl"))
        .iter()
        .map(|m| {
            (
                m["step"].as_u64().unwrap(),
                m["test_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cnn_trains_on_the_small_cifar_set_with_and_without_bn() {
    let dir = tempfile::tempdir().unwrap();
    let set = common::write_small_cifar(&dir.path().join("cifar"));
    for kind in ["batch", "none"] {
        let placement = kind;
        let out = dir.path().join(placement);
        let o = bn_exp()
            .args(["train", "--quiet", "--config"])
            .arg(repo().join("configs/cifar10_cnn_relu_bn.json"))
            .arg("--data-dir")
            .arg(&set.data_dir)
            .arg("--out")
            .arg(&out)
            .env(bn_exp::data::CATALOGUE_ENV, &set.catalogue_path)
            .args(["--set", &format!("norm.kind={kind}")])
            .args(["--set", "model.channels=[8,16]", "--set", "batch_size=25"])
            .args([
                "--set",
                "steps=60",
                "--set",
                "eval_every=20",
                "--set",
                "eval_batch_size=30",
            ])
            .args([
                "--set",
                "probe.batch_size=50",
                "--set",
                "norm.population_batches=5",
            ])
            .args(["--set", "checkpoint_every=30"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{placement}: {}", stderr(&o));
        for file in [
            "config.json",
            "metrics.jsonl",
            "activations.jsonl",
            "summary.json",
        ] {
            assert!(out.join(file).is_file(), "{placement}: no {file}");
        }
        assert!(out.join("checkpoint/state.json").is_file(), "{placement}");
        let losses = test_losses(&out);
        let steps: Vec<u64> = losses.iter().map(|l| l.0).collect();
        assert_eq!(steps, [0, 20, 40, 60], "{placement}");
        let (first, last) = (losses[0].1, losses[3].1);
        eprintln!("{placement}: test loss {losses:?}");
        assert!(
            last < 0.7 * first,
            "{placement}: the test loss did not fall: {losses:?}"
        );
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["status"], "finished", "{placement}");
        assert_eq!(summary["steps"], 60, "{placement}");
        let activations = read_lines(&out.join("activations.jsonl"));
        assert_eq!(activations.len(), 4, "{placement}");
        assert_eq!(activations[0]["layers"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Hidden layers of 100 make the first layer's products (60×784×100) big enough to be split
    // over the helper thread; with one thread they are computed as the same two halves.
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<PathBuf> = ["1", "2"]
        .iter()
        .map(|threads| {
            let out = dir.path().join(format!("threads-{threads}"));
            let o = smoke_train(&out)
                .args(["--quiet"])
                .args(["--set", "model.hidden=[100,100]", "--set", "steps=200"])
                .args(["--set", "augment.pad=3", "--set", "augment.flip=true"])
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .unwrap();
            assert!(o.status.success(), "{threads} threads: {}", stderr(&o));
            out
        })
        .collect();
    for f in ["metrics.jsonl", "activations.jsonl"] {
        let [one, two] = [&runs[0], &runs[1]].map(|r| {
            without_timing(read_lines(&r.join(f)))
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        });
        assert_eq!(one, two, "{f}: one and two threads differ");
    }
}

#[test]
fn diverging_run_is_marked_diverged_with_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // tanh without BN at lr 1e38: the output weights reach ~1e37 after one step and the logits
    // become infinite (float32 overflow) at step 3; the loss itself is computed max-shifted in
    // f64, so the huge but finite logits of step 2 do not overflow it.
    let o = train(
        &out,
        &[
            "--set",
            "norm.kind=none",
            "--set",
            "model.activation=tanh",
            "--set",
            "optim.lr=1e38",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "diverged");
    assert_eq!(summary["diverged_at"], 3);
    assert!(String::from_utf8_lossy(&o.stdout).contains("DIVERGED at step 3"));
}

#[test]
fn each_bad_config_gets_its_own_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "optim.lr=-0.1"],
            "optim.lr must be a positive finite number",
        ),
        (&["--set", "batch_size=0"], "batch_size must be at least 1"),
        (&["--set", "batch_size=1"], "no variance"),
        (
            &["--set", "model.activation=swish"],
            "unknown variant `swish`",
        ),
        (
            &["--set", "optim.learning_rate=0.1"],
            "unknown field `learning_rate`",
        ),
        (
            &["--set", "bn.placement=sideways"],
            "bn.placement must be \"none\", \"before\" or \"after\"",
        ),
        (
            &["--set", "norm.placement=sideways"],
            "unknown variant `sideways`",
        ),
        (
            &["--set", "norm.kind=instance"],
            "unknown variant `instance`",
        ),
        (
            &["--set", "norm.kind=group", "--set", "norm.groups=3"],
            "norm.groups 3 does not divide the 32 units of hidden layer 0",
        ),
        (
            &["--set", "norm.kind=group", "--set", "norm.groups=32"],
            "leaves one value per group",
        ),
        (
            &["--set", "norm.stats_batch=7"],
            "norm.stats_batch 7 does not divide batch_size 60",
        ),
        (&["--set", "norm.stats_batch=1"], "at least 2 examples"),
        (
            &["--set", "norm.kind=layer", "--set", "norm.stats_batch=4"],
            "norm.stats_batch is set, but it belongs to BN",
        ),
        (
            &["--set", "norm.kind=renorm", "--set", "norm.renorm.r_max=-2"],
            "norm.renorm.r_max must be a finite number of at least 1",
        ),
        (&["--set", "steps=0"], "steps must be at least 1"),
        (&["--set", "nonsense"], "key.path=value"),
        (&["--set", "name=."], "cannot start with a dot"),
        (&["--set", "name=../escape"], "name"),
        (
            &["--set", "seed=\"abc\""],
            "seed: expected a whole number, 0 or more, got the string \"abc\"",
        ),
        (
            &["--set", "optim.lr=1e309"],
            "optim.lr: 1e309 is not a finite number",
        ),
        (
            &["--set", "label=\"BN\\nx5\""],
            "may not hold control characters",
        ),
        (&["--set", "label=\"\""], "label must be 1 to 80 characters"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let o = train(&dir.path().join(format!("r{i}")), extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        let err = stderr(&o);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    let o = bn_exp()
        .args(["train", "--config", "/no/such/config.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read config file /no/such/config.json"));
}

/// A `norm` key of another layer than `norm.kind`'s would be ignored by the layer trained, so
/// a config file that sets one is refused by `bn-exp train --config`, naming the key, before
/// anything is written: `norm.mean_only` belongs to Weight Norm alone, `norm.groups` to Group
/// Norm alone.
#[test]
fn a_norm_key_another_layer_would_ignore_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let smoke: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("configs/smoke.json")).unwrap())
            .unwrap();
    // One key of each kind of layer, through the binary: the error reaches the user with the
    // file's name and exit 2, before anything is written. Every (key, kind) pair is refused in
    // norm::config's unit test.
    let cases = [
        (
            serde_json::json!({"kind": "none", "mean_only": true}),
            "norm.mean_only",
        ),
        (
            serde_json::json!({"kind": "layer", "groups": 2}),
            "norm.groups",
        ),
    ];
    for (i, (norm, key)) in cases.into_iter().enumerate() {
        let mut config = smoke.clone();
        config["norm"] = norm.clone();
        let file = dir.path().join(format!("config-{i}.json"));
        std::fs::write(&file, config.to_string()).unwrap();
        let out = dir.path().join(format!("run-{i}"));
        let o = common::train_on_embedded(&file, &out)
            .arg("--quiet")
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{norm}: {err}");
        assert!(
            err.contains(&format!("{key} is set, but it belongs to"))
                && err.contains(&file.display().to_string()),
            "{norm}: {err}"
        );
        assert!(!out.exists(), "{norm}: the run folder was created");
    }
}

fn smoke_config() -> Config {
    let text = std::fs::read_to_string(repo().join("configs/smoke.json")).unwrap();
    config_from_value(serde_json::from_str(&text).unwrap()).unwrap()
}

fn running_stats(net: &bn_exp::model::Net) -> Vec<Vec<f64>> {
    net.norms()
        .iter()
        .flat_map(|n| {
            let bn = n.as_batch().expect("the smoke net has BatchNorm layers");
            [
                tensor_to_f64(bn.running_mean()),
                tensor_to_f64(bn.running_var()),
            ]
        })
        .collect()
}

#[test]
fn evaluation_and_probes_do_not_change_running_statistics() {
    use burn::module::Module;
    let config = smoke_config();
    let device = Device::flex().autodiff();
    let net = config.build_net(&device);
    let mut r = bn_exp::rng::Rng::new(5);
    let x: Vec<f32> = (0..16 * 784).map(|_| r.uniform() as f32).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [16, 784]), &device);
    let train = Mode::Train {
        update_running: true,
        dropout_seed: None,
        noise_seed: None,
    };
    net.forward(x.clone(), Pass::untraced(train)).unwrap();
    let before = running_stats(&net);
    let probe = Mode::Train {
        update_running: false,
        dropout_seed: None,
        noise_seed: None,
    };
    let mut trace = bn_exp::model::Trace::default();
    net.forward(x.clone(), Pass::traced(probe, &mut trace))
        .unwrap();
    net.valid()
        .forward(x.clone().inner(), Pass::untraced(probe))
        .unwrap();
    for stats in [
        bn_exp::norm::InferenceStats::Moving,
        bn_exp::norm::InferenceStats::Batch,
        bn_exp::norm::InferenceStats::Population,
    ] {
        net.valid()
            .forward(x.clone().inner(), Pass::untraced(Mode::Infer(stats)))
            .unwrap();
    }
    assert_eq!(before, running_stats(&net));
    assert_eq!(trace.pre_activations.len(), 2);
    assert_eq!(trace.bn_stats.len(), 2);
    // A training step does move them, so the comparison above can fail.
    net.forward(x, Pass::untraced(train)).unwrap();
    assert_ne!(before, running_stats(&net));
}

/// Santurkar et al.'s measures only observe: a run that takes them every 50 steps (with BN,
/// and with dropout, whose masks the measures' passes draw too) trains, evaluates and probes
/// exactly as the same run without them.
#[test]
fn taking_the_measures_leaves_the_run_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--set", "model.dropout=0.2"][..]] {
        let plain = dir.path().join(format!("plain{}", extra.len()));
        let measured = dir.path().join(format!("measured{}", extra.len()));
        assert!(train(&plain, extra).status.success());
        let with = [extra, &["--set", "measures.every=50"]].concat();
        let o = train(&measured, &with);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(read_lines(&measured.join("measures.jsonl")).len(), 6);
        for f in ["metrics.jsonl", "activations.jsonl"] {
            assert_eq!(
                without_timing(read_lines(&plain.join(f))),
                without_timing(read_lines(&measured.join(f))),
                "{f} with {extra:?}"
            );
        }
    }
}
