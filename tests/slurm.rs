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

use crate::common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

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
    let data = common::embedded_data().display().to_string();
    let o = common::run_bn_exp(&[
        "compare",
        "--study",
        &study.display().to_string(),
        "--plan",
        "--emit",
        "slurm",
        "--max-parallel",
        "2",
        "--results-dir",
        &results.display().to_string(),
        "--data-dir",
        &data,
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    results.join("slurm_smoke/slurm.sh")
}

fn collect(study: &Path, results: &Path) {
    let o = common::run_bn_exp(&[
        "compare",
        "--study",
        &study.display().to_string(),
        "--results-dir",
        &results.display().to_string(),
        "--data-dir",
        &common::embedded_data().display().to_string(),
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(text(&o.stderr).contains("0 to train"), "{}", describe(&o));
}

fn assert_same_as_local(local: &Path, other: &Path) {
    for name in [
        "kind-none_seed-0",
        "kind-none_seed-1",
        "kind-batch_seed-0",
        "kind-batch_seed-1",
    ] {
        assert_eq!(
            common::metrics_without_timing(&local.join("slurm_smoke").join(name)),
            common::metrics_without_timing(&other.join("slurm_smoke").join(name)),
            "{name}"
        );
    }
    assert_eq!(
        common::group_table_without_timing(&local.join("slurm_smoke")),
        common::group_table_without_timing(&other.join("slurm_smoke"))
    );
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
    let o = common::run_bn_exp(&[
        "compare",
        "--study",
        &study.display().to_string(),
        "--results-dir",
        &local.display().to_string(),
        "--data-dir",
        &common::embedded_data().display().to_string(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", describe(&o));

    // The whole array, waited for.
    let array = tmp.path().join("array");
    let script = plan_and_emit(&study, &array);
    let o = Command::new("sbatch")
        .arg("--wait")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch: {}", describe(&o));
    collect(&study, &array);
    assert_same_as_local(&local, &array);
    let array_s = started.elapsed().as_secs_f64();

    // Cancel task 0 after its first checkpoint, then resubmit it alone.
    let cancelled = tmp.path().join("cancelled");
    let script = plan_and_emit(&study, &cancelled);
    let o = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch: {}", describe(&o));
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
    let o = Command::new("sbatch")
        .args(["--wait", "--array=0"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "resubmit: {}", describe(&o));
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
