//! Each run's TensorBoard event file (`events.out.tfevents.bn-exp`): read back with a decoder
//! written here from the format's definition (TFRecord framing, `Event` and `Summary` protocol
//! buffers), it says what the run's records say, each step once, after a kill and a resume too
//! (`tests/train.rs`, `killed_run_resumes_identically`); `bn-exp export --tensorboard` writes it
//! for older runs; and, in the real-data group, TensorBoard's own reader
//! (`scripts/check_tensorboard.py`) agrees with the records.

use std::path::Path;

use serde_json::Value;

use crate::common::{self, bn_exp, describe, smoke_train, stderr};

/// One scalar of an event file: step, tag, value.
pub type Scalar = (u64, String, f32);

/// A protocol buffer varint at `*at`.
fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            break;
        }
    }
    v
}

/// The fields of one message: (field number, wire type, payload bytes).
fn fields(bytes: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let (field, wire) = (key >> 3, key & 7);
        let len = match wire {
            0 => {
                let start = at;
                varint(bytes, &mut at);
                out.push((field, wire, bytes[start..at].to_vec()));
                continue;
            }
            1 => 8,
            2 => varint(bytes, &mut at) as usize,
            5 => 4,
            other => panic!("wire type {other}"),
        };
        out.push((field, wire, bytes[at..at + len].to_vec()));
        at += len;
    }
    out
}

/// The records of a TFRecord file, checking each header's length against the file.
fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        assert!(
            at + 12 + len + 4 <= bytes.len(),
            "a record runs past the end"
        );
        out.push(bytes[at + 12..at + 12 + len].to_vec());
        at += 12 + len + 4;
    }
    out
}

/// Every scalar of a run's event file, in file order, and its first record's file version.
pub fn scalars(run: &Path) -> (String, Vec<Scalar>) {
    let bytes = std::fs::read(run.join("events.out.tfevents.bn-exp")).unwrap();
    let mut version = String::new();
    let mut out = Vec::new();
    for event in records(&bytes) {
        let mut step = 0;
        for (field, _, payload) in fields(&event) {
            match field {
                2 => step = varint(&payload, &mut 0),
                3 => version = String::from_utf8(payload).unwrap(),
                5 => {
                    for (_, _, value) in fields(&payload) {
                        let mut tag = String::new();
                        let mut simple = None;
                        for (f, _, p) in fields(&value) {
                            match f {
                                1 => tag = String::from_utf8(p).unwrap(),
                                2 => simple = Some(f32::from_le_bytes(p.try_into().unwrap())),
                                _ => {}
                            }
                        }
                        if let Some(v) = simple {
                            out.push((step, tag, v));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (version, out)
}

/// The (step, value) of `tag` among `scalars`.
pub fn series(scalars: &[Scalar], tag: &str) -> Vec<(u64, f32)> {
    scalars
        .iter()
        .filter(|s| s.1 == tag)
        .map(|s| (s.0, s.2))
        .collect()
}

/// The (step, value as f32) of `key` in a run's `metrics.jsonl`.
pub fn metric(run: &Path, key: &str) -> Vec<(u64, f32)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|m| Some((m["step"].as_u64()?, m[key].as_f64()? as f32)))
        .collect()
}

/// A run's event scalars against its `metrics.jsonl`: the same steps, once each, the same
/// values (as float32).
pub fn assert_events_match_metrics(run: &Path) {
    let (version, all) = scalars(run);
    assert_eq!(version, "brain.Event:2");
    for (tag, key) in [
        ("accuracy/test", "test_acc"),
        ("loss/train", "train_loss"),
        ("loss/test", "test_loss"),
        ("learning rate", "lr"),
    ] {
        assert_eq!(
            series(&all, tag),
            metric(run, key),
            "{tag} in {}",
            run.display()
        );
    }
}

/// `bn-exp export --tensorboard DIR`.
fn export(dir: &Path) -> std::process::Output {
    bn_exp()
        .args(["export", "--tensorboard"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn a_run_writes_an_event_file_that_says_what_its_records_say() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = smoke_train(&run).arg("--quiet").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_events_match_metrics(&run);
    let (_, all) = scalars(&run);
    // Evaluations at 0, 100, 200 and 300, each probed: the tracked unit's percentiles, and
    // the population statistics' accuracy at the end.
    assert_eq!(series(&all, "tracked unit/p50").len(), 4);
    assert_eq!(series(&all, "layer 2/p85").len(), 4);
    let population = series(&all, "accuracy/test (population statistics)");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let want = summary["population"]["test_acc"].as_f64().unwrap() as f32;
    assert_eq!(population, [(300, want)]);
}

#[test]
fn export_writes_the_event_files_of_older_runs() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("results/smoke");
    let run = study.join("run");
    let o = smoke_train(&run)
        .args(["--quiet", "--set", "steps=100", "--set", "eval_every=50"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let events = run.join("events.out.tfevents.bn-exp");
    let written = std::fs::read(&events).unwrap();
    std::fs::remove_file(&events).unwrap();
    // A results folder of studies: the runs two levels down.
    let o = export(&dir.path().join("results"));
    assert!(o.status.success(), "{}", describe(&o));
    assert!(common::text(&o.stdout).contains("wrote 1 TensorBoard event file"));
    assert_eq!(
        std::fs::read(&events).unwrap(),
        written,
        "export differs from the run's own"
    );
    // A study folder: its runs.
    let o = export(&study);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(std::fs::read(&events).unwrap(), written);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = export(&empty);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        stderr(&o).contains("holds no run folder"),
        "{}",
        describe(&o)
    );
}

/// While a run trains, each record's event is appended as the record is written (the fast
/// path); `export` makes the file from the record files (the slow one, which also ends every
/// finished run). On a stopped run, with measures, they hold the same events in the same
/// order, values within 1e-6: the records' JSON is read back to within an ulp of what was
/// written, which can move a float32 by one.
#[test]
fn the_appended_event_file_equals_the_one_made_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = smoke_train(&run)
        .args([
            "--quiet",
            "--set",
            "measures.every=50",
            "--stop-after",
            "250",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !run.join("summary.json").exists(),
        "the run was to stop early"
    );
    let (_, appended) = scalars(&run);
    let o = export(&run);
    assert!(o.status.success(), "{}", describe(&o));
    let (_, made) = scalars(&run);
    assert!(
        series(&made, "measures/gradient norm").len() >= 5,
        "{made:?}"
    );
    assert_eq!(appended.len(), made.len());
    for (a, m) in appended.iter().zip(&made) {
        assert_eq!(
            (a.0, &a.1),
            (m.0, &m.1),
            "the events' steps and tags differ"
        );
        assert!(
            (a.2 - m.2).abs() <= 1e-6 * m.2.abs().max(1e-3),
            "{a:?} against {m:?}"
        );
    }
}

/// TensorBoard's own reader (the `tensorboard` Python package, `BN_EXP_PYTHON` or `python3`)
/// on a finished run and on a killed and resumed one: every scalar and histogram as the
/// records say, each step once. Fails, never skips, without the package.
#[test]
#[ignore = "needs the tensorboard Python package; CI installs it"]
fn tensorboard_reads_the_event_files_as_the_records_say() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = smoke_train(&run).arg("--quiet").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = dir.path().join("resumed");
    let o = smoke_train(&resumed)
        .args(["--quiet", "--stop-after", "150"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = smoke_train(&resumed)
        .args(["--quiet", "--resume"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let python = std::env::var("BN_EXP_PYTHON").unwrap_or_else(|_| "python3".into());
    for folder in [&run, &resumed] {
        let o = std::process::Command::new(&python)
            .arg(common::repo().join("scripts/check_tensorboard.py"))
            .arg(folder)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{python} scripts/check_tensorboard.py {}: {}",
            folder.display(),
            describe(&o)
        );
        eprint!("{}", common::text(&o.stdout));
    }
}
