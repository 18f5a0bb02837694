//! A study as a Slurm job array, on a real one-node Slurm (`scripts/slurm-local.sh`, Debian's
//! slurm-wlm and munge, as root): in the real-data group, because it installs and starts
//! daemons. It fails, never skips, where that cannot be done.
//!
//! The smoke study is planned, emitted as `slurm.sh`, submitted with `sbatch --wait` and
//! collected by `compare --study`; every run's `metrics.jsonl` and the comparison table must
//! equal the same study run locally. Then one array task is cancelled after its first
//! checkpoint, resubmitted alone, and the result must still be identical. The cluster is
//! stopped at the end, after a failure too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, describe, repo, text};

fn slurm_local(action: &str) -> Output {
    Command::new(repo().join("scripts/slurm-local.sh"))
        .arg(action)
        .output()
        .expect("scripts/slurm-local.sh runs")
}

/// Stops the cluster however the test ends.
struct Cluster;

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = slurm_local("stop");
    }
}

fn study_file(dir: &Path) -> PathBuf {
    // Runs long enough (about 3 s each) to be cancelled between checkpoints.
    let study = json!({
        "study": "slurm_smoke", "description": "the smoke net, BN or not, as a job array",
        "base": repo().join("configs/smoke.json").display().to_string(),
        "set": {"steps": 20000, "eval_every": 1000, "checkpoint_every": 1000},
        "grid": {"norm.kind": ["none", "batch"], "seed": [0, 1]}
    });
    let path = dir.join("slurm_smoke.json");
    std::fs::write(&path, study.to_string()).unwrap();
    path
}

fn plan_and_emit(study: &Path, results: &Path) -> PathBuf {
    let plan = ["--plan", "--emit", "slurm", "--max-parallel", "2"];
    let o = run_compare(study, results, &plan);
    assert!(o.status.success(), "{}", describe(&o));
    results.join("slurm_smoke/slurm.sh")
}

/// `bn-exp compare --study` of `study` into `results` on the embedded MNIST, with `extra` flags.
fn run_compare(study: &Path, results: &Path, extra: &[&str]) -> Output {
    let [study, results, data] =
        [study, results, &common::embedded_data()].map(|p| p.display().to_string());
    let args = [
        "compare",
        "--study",
        &study,
        "--results-dir",
        &results,
        "--data-dir",
        &data,
    ];
    common::run_bn_exp(&[&args[..], extra].concat())
}

fn collect(study: &Path, results: &Path) {
    let o = run_compare(study, results, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(text(&o.stderr).contains("0 to train"), "{}", describe(&o));
}

fn assert_same_as_local(local: &Path, other: &Path) {
    let runs = [
        "kind-none_seed-0",
        "kind-none_seed-1",
        "kind-batch_seed-0",
        "kind-batch_seed-1",
    ];
    common::assert_same_study(
        &local.join("slurm_smoke"),
        &other.join("slurm_smoke"),
        &runs,
    );
}

/// `sbatch ARGS SCRIPT`, which must succeed.
fn sbatch(args: &[&str], script: &Path) -> Output {
    let o = Command::new("sbatch")
        .args(args)
        .arg(script)
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch {args:?}: {}", describe(&o));
    o
}

#[test]
#[ignore = "installs and starts a one-node Slurm (root, apt); run by .ci/run"]
fn a_study_as_a_slurm_array_equals_it_run_locally_even_after_a_cancelled_task() {
    let started = Instant::now();
    let start = slurm_local("start");
    let _cluster = Cluster;
    assert!(start.status.success(), "{}", describe(&start));
    let tmp = tempfile::tempdir().unwrap();
    let study = study_file(tmp.path());
    let local = tmp.path().join("local");
    let o = run_compare(&study, &local, &["--quiet"]);
    assert!(o.status.success(), "{}", describe(&o));

    // The whole array, waited for.
    let array = tmp.path().join("array");
    let script = plan_and_emit(&study, &array);
    sbatch(&["--wait"], &script);
    collect(&study, &array);
    assert_same_as_local(&local, &array);
    let array_s = started.elapsed().as_secs_f64();

    // Cancel task 0 after its first checkpoint, then resubmit it alone.
    let cancelled = tmp.path().join("cancelled");
    let script = plan_and_emit(&study, &cancelled);
    let o = sbatch(&["--parsable"], &script);
    let job = text(&o.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let task0 = cancelled.join("slurm_smoke/kind-none_seed-0");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !task0.join("checkpoint/state.json").exists() {
        assert!(Instant::now() < deadline, "task 0 never wrote a checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = Command::new("scancel")
        .arg(format!("{job}_0"))
        .output()
        .unwrap();
    assert!(o.status.success(), "scancel: {}", describe(&o));
    // Wait for the rest of the array to end.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if text(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the array did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !task0.join("summary.json").exists(),
        "task 0 was cancelled before it finished"
    );
    // What the resubmitted task must continue from, not redo: its checkpoint's step, and its
    // first record, whose wall-clock field a fresh start would rewrite.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(task0.join("checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    let resumed_from = state["step"].as_u64().unwrap();
    assert!(resumed_from > 0, "task 0 was cancelled before a checkpoint");
    let first_record = |dir: &Path| {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .map(str::to_string)
    };
    let first_before = first_record(&task0);
    sbatch(&["--wait", "--array=0"], &script);
    assert_eq!(
        first_record(&task0),
        first_before,
        "the resubmitted task started over instead of resuming from step {resumed_from}"
    );
    collect(&study, &cancelled);
    assert_same_as_local(&local, &cancelled);
    eprintln!(
        "slurm: array {:.1} s, whole test {:.1} s",
        array_s,
        started.elapsed().as_secs_f64()
    );
}
