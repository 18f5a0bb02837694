//! Tests of `bn-exp compare`: table maths on hand-made run folders (every expected number is
//! recomputed here from the fixture data), study files and grid expansion, and the whole command
//! end to end through the real binary (which trains with `configs/smoke.json`).

use std::path::{Path, PathBuf};
use std::process::Output;

use bn_exp::compare::{
    Baseline, CompareOptions, Comparison, GroupRow, Study, check_run_configs, compare_runs,
    find_runs, load_run, load_study, normalize_thresholds, parse_study,
};
use serde_json::{Value, json};

use crate::common::{self, bn_exp, describe, repo, text};

const THRESHOLDS: [f64; 4] = [0.9, 0.95, 0.97, 0.98];
/// The slack compare allows when testing `acc >= target` (docs/studies.md).
const TOLERANCE: f64 = 1e-9;

// ---------------------------------------------------------------------------------------------
// Fixture run folders, written as docs/formats.md describes them.

/// One hand-made run: its test accuracies at steps 0, 100, 200, ...
struct Fixture {
    name: &'static str,
    placement: &'static str,
    lr: f64,
    seed: u64,
    accs: Vec<Option<f64>>,
    diverged_at: Option<u64>,
    wall_s: f64,
    steps_per_s: f64,
}

impl Fixture {
    fn evals(&self) -> Vec<(u64, Option<f64>)> {
        self.accs
            .iter()
            .enumerate()
            .map(|(i, &acc)| (i as u64 * 100, acc))
            .collect()
    }

    fn finished(&self) -> bool {
        self.diverged_at.is_none()
    }
}

fn fixture(name: &'static str, placement: &'static str, seed: u64, accs: &[f64]) -> Fixture {
    Fixture {
        name,
        placement,
        lr: 1.0,
        seed,
        accs: accs.iter().map(|&a| Some(a)).collect(),
        diverged_at: None,
        wall_s: 10.0 + seed as f64,
        steps_per_s: 500.0 + 10.0 * seed as f64,
    }
}

/// Three conditions: "none" (3 seeds), "before" (2 finished seeds and 1 diverged) and "after"
/// (1 seed that never gets far). Accuracies are chosen so that thresholds are reached by all,
/// some (partial) or none of a group's runs, and one run meets the speed-up target exactly.
fn fixtures() -> Vec<Fixture> {
    // (placement, seed, accuracy at each evaluation); "before" seed 2 diverges.
    let finished: [(&str, u64, [f64; 6]); 6] = [
        ("none", 0, [0.1, 0.85, 0.91, 0.95, 0.96, 0.955]),
        ("none", 1, [0.1, 0.80, 0.90, 0.93, 0.97, 0.965]),
        ("none", 2, [0.1, 0.70, 0.88, 0.92, 0.94, 0.95]),
        ("before", 0, [0.1, 0.95, 0.97, 0.98, 0.985, 0.99]),
        ("before", 1, [0.1, 0.96, 0.975, 0.98, 0.98, 0.981]),
        ("after", 0, [0.1, 0.5, 0.6, 0.7, 0.8, 0.85]),
    ];
    let mut runs: Vec<Fixture> = finished
        .iter()
        .map(|(placement, seed, accs)| {
            let name = format!("placement-{placement}_seed-{seed}").leak();
            fixture(name, placement, *seed, accs)
        })
        .collect();
    let mut diverged = fixture("placement-before_seed-2", "before", 2, &[]);
    diverged.accs = vec![Some(0.1), Some(0.5), None];
    diverged.diverged_at = Some(250);
    runs.insert(5, diverged);
    runs
}

fn write_fixture(study_dir: &Path, run: &Fixture) -> PathBuf {
    let dir = study_dir.join(run.name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({
        "name": run.name, "study": "fixture", "seed": run.seed, "dataset": "mnist",
        "model": {"arch": "mlp", "hidden": [100, 100, 100], "activation": "sigmoid"},
        "bn": {"placement": run.placement, "eps": 1e-5},
        "optim": {"lr": run.lr, "momentum": 0.0},
        "batch_size": 60, "steps": 500, "eval_every": 100,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let metrics: String = run
        .evals()
        .iter()
        .map(|(step, acc)| {
            format!(
                "{}\n",
                json!({"step": step, "train_loss": null, "test_loss": 0.3, "test_acc": acc,
                       "lr": run.lr, "elapsed_s": *step as f64 / 100.0})
            )
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    let population = match population_acc_of(run) {
        Some(acc) => json!({"test_acc": acc, "test_loss": 0.3, "batches": 10}),
        None => Value::Null,
    };
    let summary = json!({
        "name": run.name, "study": "fixture",
        "status": if run.finished() { "finished" } else { "diverged" },
        "diverged_at": run.diverged_at, "steps": 500,
        "final_test_acc": 0.5, "best_test_acc": 0.5, "best_step": 0, "steps_to": {},
        "population": population, "drift": null,
        "wall_s": run.wall_s, "steps_per_s": run.steps_per_s, "backend": "flex", "threads": 1,
    });
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    dir
}

fn write_fixture_study(root: &Path, runs: &[Fixture]) -> PathBuf {
    let study_dir = root.join("fixture");
    for run in runs {
        write_fixture(&study_dir, run);
    }
    study_dir
}

fn compare_fixture_dirs(dirs: &[PathBuf], baseline: Baseline) -> Comparison {
    let found = find_runs(dirs).unwrap();
    let records: Vec<_> = found
        .done
        .iter()
        .map(|dir| load_run(dir).unwrap())
        .collect();
    let options = CompareOptions {
        thresholds: THRESHOLDS.to_vec(),
        baseline,
    };
    compare_runs(&records, &options).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Independent recomputation of the documented definitions.

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn sample_std(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

fn accs_of(run: &Fixture) -> Vec<f64> {
    run.accs.iter().flatten().copied().collect()
}

fn best_of(run: &Fixture) -> f64 {
    accs_of(run).into_iter().fold(f64::MIN, f64::max)
}

fn last_of(run: &Fixture) -> f64 {
    *accs_of(run).last().unwrap()
}

/// What train would put in `summary.population` for a fixture: BN runs that finished get a
/// population-statistics accuracy (made distinct from the last evaluation); others `null`.
fn population_acc_of(run: &Fixture) -> Option<f64> {
    (run.placement != "none" && run.finished()).then(|| last_of(run) - 0.002 * run.seed as f64)
}

fn first_reaching(run: &Fixture, target: f64) -> Option<u64> {
    run.evals()
        .into_iter()
        .find(|(_, acc)| acc.is_some_and(|a| a >= target - TOLERANCE))
        .map(|(step, _)| step)
}

fn finished_in<'a>(runs: &'a [Fixture], placement: &str) -> Vec<&'a Fixture> {
    runs.iter()
        .filter(|run| run.placement == placement && run.finished())
        .collect()
}

/// The label `compare` gives the fixtures' groups (`bn.placement` of an older run folder, read
/// as `norm.kind` and `norm.placement`).
fn label(placement: &str) -> &'static str {
    match placement {
        "none" => "no BN",
        "before" => "BN before sigmoid",
        "after" => "BN after sigmoid",
        other => panic!("no fixture placement {other}"),
    }
}

fn group<'a>(cmp: &'a Comparison, label: &str) -> &'a GroupRow {
    cmp.groups
        .iter()
        .find(|group| group.label == label)
        .unwrap_or_else(|| panic!("no group {label}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

// ---------------------------------------------------------------------------------------------
// Table maths.

#[test]
fn accuracy_columns_are_mean_and_sample_std_of_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = fixtures();
    let study = write_fixture_study(tmp.path(), &runs);
    let cmp = compare_fixture_dirs(&[study], Baseline::FirstGroup);

    let labels: Vec<&str> = cmp.groups.iter().map(|g| g.label.as_str()).collect();
    // Groups come in the figures' order (src/groups.rs): no BN first, then by placement, not in
    // the folder-name order the runs are read in.
    assert_eq!(labels, ["no BN", "BN after sigmoid", "BN before sigmoid"]);
    // Without a baseline, it is the group of the first run read (placement-after_seed-0).
    assert!(group(&cmp, "BN after sigmoid").is_baseline);
    for placement in ["none", "before", "after"] {
        let row = group(&cmp, label(placement));
        let ok = finished_in(&runs, placement);
        let finals: Vec<f64> = ok.iter().map(|run| last_of(run)).collect();
        let bests: Vec<f64> = ok.iter().map(|run| best_of(run)).collect();
        let final_acc = row.final_acc.unwrap();
        let best_acc = row.best_acc.unwrap();
        assert!(close(final_acc.mean, mean(&finals)), "{placement}");
        assert!(close(best_acc.mean, mean(&bests)), "{placement}");
        assert_eq!(final_acc.n, ok.len());
        if ok.len() > 1 {
            assert!(close(final_acc.std.unwrap(), sample_std(&finals)));
            assert!(close(best_acc.std.unwrap(), sample_std(&bests)));
        } else {
            assert_eq!(final_acc.std, None, "a single run has no spread");
        }
        let pops: Vec<f64> = ok.iter().filter_map(|run| population_acc_of(run)).collect();
        match row.population_acc {
            Some(pop) => {
                assert!(close(pop.mean, mean(&pops)), "{placement}");
                assert_eq!(pop.n, pops.len());
            }
            None => assert!(pops.is_empty(), "{placement}: population accuracy missing"),
        }
        let walls: Vec<f64> = ok.iter().map(|run| run.wall_s).collect();
        let rates: Vec<f64> = ok.iter().map(|run| run.steps_per_s).collect();
        assert!(close(row.mean_wall_s.unwrap(), mean(&walls)));
        assert!(close(row.mean_steps_per_s.unwrap(), mean(&rates)));
    }
}

#[test]
fn steps_to_threshold_counts_partial_and_never() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = fixtures();
    let study = write_fixture_study(tmp.path(), &runs);
    let cmp = compare_fixture_dirs(&[study], Baseline::FirstGroup);

    let mut seen_partial = false;
    let mut seen_never = false;
    for placement in ["none", "before", "after"] {
        let row = group(&cmp, label(placement));
        let ok = finished_in(&runs, placement);
        for (i, &threshold) in THRESHOLDS.iter().enumerate() {
            let reached: Vec<f64> = ok
                .iter()
                .filter_map(|run| first_reaching(run, threshold))
                .map(|step| step as f64)
                .collect();
            let cell = row.steps_to[i];
            assert_eq!(cell.reached, reached.len(), "{placement} {threshold}");
            assert_eq!(cell.of, ok.len());
            if reached.is_empty() {
                assert_eq!(cell.mean_steps, None);
                seen_never = true;
            } else {
                assert!(close(cell.mean_steps.unwrap(), mean(&reached)));
                seen_partial |= reached.len() < ok.len();
            }
        }
    }
    assert!(seen_partial && seen_never, "the fixture covers both cases");

    let text = bn_exp::compare::render_text(&Default::default(), &cmp);
    let none_line = text.lines().find(|line| line.starts_with("no BN")).unwrap();
    assert!(none_line.contains("400 (1/3)"), "{none_line}");
    assert!(none_line.contains("never"), "{none_line}");
}

#[test]
fn speedup_is_baseline_steps_to_its_mean_best_over_group_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = fixtures();
    let study = write_fixture_study(tmp.path(), &runs);
    let spec = Baseline::Spec(vec![("bn.placement".into(), json!("none"))]);
    let cmp = compare_fixture_dirs(&[study], spec);

    let base_runs = finished_in(&runs, "none");
    let target = mean(&base_runs.iter().map(|r| best_of(r)).collect::<Vec<_>>());
    let steps_to_target = |placement: &str| -> Vec<f64> {
        finished_in(&runs, placement)
            .iter()
            .filter_map(|run| first_reaching(run, target))
            .map(|s| s as f64)
            .collect()
    };
    let base_steps = mean(&steps_to_target("none"));
    let baseline = cmp.baseline.as_ref().unwrap();
    assert_eq!(baseline.label, "no BN");
    assert!(close(baseline.target_acc, target));
    assert!(close(baseline.mean_steps, base_steps));

    let before = group(&cmp, "BN before sigmoid");
    let before_steps = steps_to_target("before");
    let speedup = before.speedup.unwrap();
    assert!(close(
        speedup.factor.unwrap(),
        base_steps / mean(&before_steps)
    ));
    assert!(
        speedup.factor.unwrap() > 1.0,
        "BN reaches the target sooner"
    );
    // One "before" run meets the target at exactly the baseline mean: it must count.
    assert_eq!(speedup.reached, before_steps.len());
    assert_eq!(speedup.reached, 2);

    let none = group(&cmp, "no BN").speedup.unwrap();
    assert!(close(none.factor.unwrap(), 1.0));
    assert!(
        none.reached < none.of,
        "a seed below the mean best misses the target"
    );

    let after = group(&cmp, "BN after sigmoid").speedup.unwrap();
    assert!(steps_to_target("after").is_empty());
    assert_eq!((after.factor, after.reached), (None, 0));
    let text = bn_exp::compare::render_text(&Default::default(), &cmp);
    let after_line = text
        .lines()
        .find(|l| l.starts_with("BN after sigmoid"))
        .unwrap();
    assert!(after_line.contains("never"), "{after_line}");
}

#[test]
fn diverged_runs_are_counted_and_left_out_of_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = fixtures();
    let study = write_fixture_study(tmp.path(), &runs);
    let cmp = compare_fixture_dirs(&[study], Baseline::FirstGroup);
    for placement in ["none", "before", "after"] {
        let row = group(&cmp, label(placement));
        let all: Vec<&Fixture> = runs.iter().filter(|r| r.placement == placement).collect();
        let diverged = all.iter().filter(|r| !r.finished()).count();
        assert_eq!(row.n, all.len());
        assert_eq!(row.diverged, diverged);
        assert_eq!(row.finished, all.len() - diverged);
    }
    let before = group(&cmp, "BN before sigmoid");
    let diverged_run = before
        .runs
        .iter()
        .find(|r| r.diverged_at.is_some())
        .unwrap();
    assert_eq!(diverged_run.diverged_at, Some(250));
}

#[test]
fn baseline_label_picks_a_group_and_bad_labels_list_the_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = fixtures();
    let mut fast = fixture("placement-none_lr-5", "none", 0, &[0.1, 0.9, 0.95]);
    fast.lr = 5.0;
    runs.push(fast);
    let study = write_fixture_study(tmp.path(), &runs);
    let found = find_runs(std::slice::from_ref(&study)).unwrap();
    let records: Vec<_> = found.done.iter().map(|d| load_run(d).unwrap()).collect();
    let with = |baseline: Baseline| {
        compare_runs(
            &records,
            &CompareOptions {
                thresholds: THRESHOLDS.to_vec(),
                baseline,
            },
        )
    };

    // The label as printed picks its group, and so do key=value parts of the config.
    let cmp = with(Baseline::Label("BN before sigmoid, lr 1".into())).unwrap();
    assert_eq!(cmp.baseline.unwrap().label, "BN before sigmoid, lr 1");
    let cmp = with(Baseline::Label("placement=before,lr=1.0".into())).unwrap();
    assert_eq!(cmp.baseline.unwrap().label, "BN before sigmoid, lr 1");
    let labels: Vec<&str> = cmp.groups.iter().map(|g| g.label.as_str()).collect();
    assert!(labels.contains(&"no BN, lr 5"), "{labels:?}");
    // Part of a label, or a full key path, is enough when it picks one group; numbers compare
    // by value.
    let cmp = with(Baseline::Label("optim.lr=5".into())).unwrap();
    assert_eq!(cmp.baseline.unwrap().label, "no BN, lr 5");
    let cmp = with(Baseline::Label("placement=before, lr=1".into())).unwrap();
    assert_eq!(cmp.baseline.unwrap().label, "BN before sigmoid, lr 1");

    // The fixtures' older `bn.placement: none` is read as `norm.kind: none`.
    let err = format!(
        "{:#}",
        with(Baseline::Label("kind=none".into())).unwrap_err()
    );
    assert!(err.contains("matches 2 groups"), "{err}");
    let err = format!(
        "{:#}",
        with(Baseline::Label("placement=sideways".into())).unwrap_err()
    );
    assert!(
        err.contains("matches no group") && err.contains("BN after sigmoid, lr 1"),
        "{err}"
    );
}

/// Seeds of one condition form one group, labelled `all`, with no settings to tell it apart.
#[test]
fn one_condition_is_one_group_called_all() {
    let tmp = tempfile::tempdir().unwrap();
    let runs: Vec<Fixture> = fixtures()
        .into_iter()
        .filter(|run| run.placement == "none")
        .collect();
    let study = write_fixture_study(tmp.path(), &runs);
    let cmp = compare_fixture_dirs(&[study], Baseline::FirstGroup);
    assert_eq!(cmp.groups.len(), 1);
    assert_eq!(cmp.groups[0].label, "all");
    assert!(cmp.groups[0].settings.is_empty());
    assert_eq!(cmp.groups[0].n, runs.len());
}

#[test]
fn thresholds_take_fractions_or_percents() {
    assert_eq!(
        normalize_thresholds(&[90.0, 0.95, 97.5]).unwrap(),
        [0.9, 0.95, 0.975]
    );
    assert!(normalize_thresholds(&[0.0]).is_err());
    assert!(normalize_thresholds(&[101.0]).is_err());
    assert!(normalize_thresholds(&[]).is_err());
}

#[test]
fn metrics_lines_repeated_by_a_resume_replace_the_earlier_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_fixture(tmp.path(), &fixture("run", "none", 0, &[0.1, 0.5, 0.6]));
    let lines = [
        json!({"step": 0, "test_acc": 0.1}),
        json!({"step": 100, "test_acc": 0.5}),
        json!({"step": 200, "test_acc": 0.6}),
        json!({"step": 100, "test_acc": 0.55}),
        json!({"step": 200, "test_acc": 0.65}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    let run = load_run(&dir).unwrap();
    let seen: Vec<(u64, Option<f64>)> = run.evals().iter().map(|e| (e.step, e.test_acc)).collect();
    assert_eq!(seen, [(0, Some(0.1)), (100, Some(0.55)), (200, Some(0.65))]);
}

// ---------------------------------------------------------------------------------------------
// Study files.

fn study_from(text: &str) -> anyhow::Result<Study> {
    parse_study(text, Path::new("inline-study.json"))
}

fn study_error(text: &str) -> String {
    format!("{:#}", study_from(text).unwrap_err())
}

/// Each study text is refused with an error that holds its needle.
fn assert_studies_refused(cases: &[(&str, &str)]) {
    for (text, needle) in cases {
        let err = study_error(text);
        assert!(
            err.contains(needle),
            "{text}\n  gave: {err}\n  wanted: {needle}"
        );
    }
}

fn names(study: &Study) -> Vec<&str> {
    study.runs.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn grid_expands_to_the_product_first_key_slowest() {
    let study = study_from(
        r#"{"study": "t", "base": {"steps": 10, "bn": {"placement": "before", "eps": 1e-5}},
            "set": {"optim.lr": 0.5},
            "grid": {"bn.placement": ["none", "before"], "seed": [0, 1, 2]}}"#,
    )
    .unwrap();
    assert_eq!(
        names(&study),
        [
            "placement-none_seed-0",
            "placement-none_seed-1",
            "placement-none_seed-2",
            "placement-before_seed-0",
            "placement-before_seed-1",
            "placement-before_seed-2",
        ]
    );
    let run = &study.runs[4];
    // The legacy `bn` key is resolved into `norm`, as train reads it.
    assert_eq!(run.config["norm"]["kind"], "batch");
    assert_eq!(run.config["norm"]["placement"], "before");
    assert_eq!(run.config["norm"]["eps"], 1e-5, "base values are kept");
    assert!(run.config.get("bn").is_none());
    assert_eq!(study.runs[0].config["norm"]["kind"], "none");
    assert_eq!(run.config["seed"], 1);
    assert_eq!(run.config["optim"]["lr"], 0.5, "`set` applies to every run");
    assert_eq!(run.config["study"], "t");
    assert_eq!(run.config["name"], "placement-before_seed-1");
}

#[test]
fn zip_keys_vary_together() {
    let study = study_from(
        r#"{"study": "bs", "base": {},
            "zip": {"batch_size": [2, 60, 120], "optim.lr": [0.05, 1.5, 3.0]},
            "grid": {"seed": [0, 1]}}"#,
    )
    .unwrap();
    assert_eq!(study.runs.len(), 6);
    assert_eq!(study.runs[0].name, "batch_size-2_lr-0.05_seed-0");
    for run in &study.runs {
        let batch = run.config["batch_size"].as_f64().unwrap();
        let lr = run.config["optim"]["lr"].as_f64().unwrap();
        assert!((lr - batch * 1.5 / 60.0).abs() < 1e-12, "{}", run.name);
    }
    // Several zip sets multiply with each other.
    let study = study_from(
        r#"{"base": {}, "zip": [{"batch_size": [2, 4], "optim.lr": [0.1, 0.2]},
                                {"bn.placement": ["none", "before"], "bn.eps": [0.1, 0.2]}]}"#,
    )
    .unwrap();
    assert_eq!(
        study.name, "inline-study",
        "the study name defaults to the file name"
    );
    assert_eq!(study.runs.len(), 4);
}

#[test]
fn run_names_use_varying_keys_and_stay_unique() {
    let study = study_from(
        r#"{"base": {}, "grid": {"bn.momentum": [0.1, 0.2], "optim.momentum": [0, 0.9],
            "optim.lr": [0.5], "model.hidden": [[100, 100]]}}"#,
    )
    .unwrap();
    assert_eq!(
        names(&study),
        [
            "bn.momentum-0.1_optim.momentum-0",
            "bn.momentum-0.1_optim.momentum-0.9",
            "bn.momentum-0.2_optim.momentum-0",
            "bn.momentum-0.2_optim.momentum-0.9",
        ],
        "keys with one value are left out; shared last segments keep their parent"
    );
    let study = study_from(
        r#"{"base": {}, "grid": {"model.hidden": [[100, 100], [50]], "probe.unit": ["a b", "a/b"]}}"#,
    )
    .unwrap();
    assert_eq!(
        names(&study),
        [
            "hidden-100x100_unit-a_b",
            "hidden-100x100_unit-a_b-2",
            "hidden-50_unit-a_b",
            "hidden-50_unit-a_b-2",
        ]
    );
}

/// A zip that names its conditions (`label`) names its runs by the label alone.
#[test]
fn a_labelled_zip_names_runs_by_its_label() {
    let study = study_from(
        r#"{"base": {}, "zip": {"label": ["Inception", "BN-x5"], "bn.placement": ["none", "before"],
            "optim.lr": [0.005, 0.025]}, "grid": {"seed": [0, 1]}}"#,
    )
    .unwrap();
    assert_eq!(
        names(&study),
        [
            "label-Inception_seed-0",
            "label-Inception_seed-1",
            "label-BN-x5_seed-0",
            "label-BN-x5_seed-1",
        ]
    );
}

#[test]
fn study_file_errors_say_what_is_wrong() {
    let cases = [
        (r#"{"grid": {"seed": [0, 1]}}"#, "no `base`"),
        (
            r#"{"base": "configs/no_such_config.json", "grid": {"seed": [0]}}"#,
            "base config `configs/no_such_config.json` not found",
        ),
        (
            r#"{"base": 3, "grid": {"seed": [0]}}"#,
            "`base` is a number",
        ),
        (r#"{"base": {}, "grid": {}}"#, "empty grid"),
        (r#"{"base": {}}"#, "empty grid"),
        (
            r#"{"base": {}, "grid": {"seed": 3}}"#,
            "`grid` key `seed` must be a list of values, not a number",
        ),
        (
            r#"{"base": {}, "grid": {"seed": {"a": 1}}}"#,
            "must be a list of values, not an object",
        ),
        (r#"{"base": {}, "grid": {"seed": []}}"#, "empty list"),
        (
            r#"{"base": {}, "zip": {"batch_size": [1, 2], "optim.lr": [1]}}"#,
            "equally long",
        ),
        (
            r#"{"base": {}, "set": {"seed": 1}, "grid": {"seed": [0]}}"#,
            "given twice",
        ),
        (r#"{"base": {}, "grid": {"name": ["a"]}}"#, "cannot be set"),
        (
            r#"{"base": {}, "grid": {"bn..eps": [1]}}"#,
            "not a key path",
        ),
        (
            r#"{"base": {}, "grids": {"seed": [0]}}"#,
            "unknown field `grids`",
        ),
        (
            r#"{"study": "a/b", "base": {}, "grid": {"seed": [0]}}"#,
            "bad `study` name",
        ),
        (
            r#"{"base": {}, "grid": {"bn.placement": ["none"]}, "baseline": {"bn.placement": "before"}}"#,
            "matches no run",
        ),
        (
            r#"{"base": {}, "grid": {"bn.placement": ["none"], "optim.lr": [1, 2]},
                "baseline": {"bn.placement": "none"}}"#,
            "matches 2 groups",
        ),
        (
            r#"{"base": {}, "grid": {"seed": [0]}, "thresholds": [150]}"#,
            "bad `thresholds`",
        ),
        (
            r#"{"base": {"model": 3}, "grid": {"model.hidden": [[1]]}}"#,
            "not an object",
        ),
    ];
    assert_studies_refused(&cases);
}

/// A value listed twice on an axis plans one run twice under two names, and every table and
/// claim counts it twice (one seed judged as two): refused by key, as the same value however
/// it is written; whole numbers are compared exactly.
#[test]
fn a_grid_or_zip_that_lists_a_point_twice_is_refused() {
    let cases = [
        (
            r#"{"base": {}, "grid": {"norm.kind": ["none", "batch"], "seed": [0, 1, 0]}}"#,
            "`grid` key `seed` lists value 0 twice (entries 1 and 3)",
        ),
        (
            r#"{"base": {}, "grid": {"optim.lr": [1, 0.5, 1.0]}}"#,
            "`grid` key `optim.lr` lists value 1.0 twice",
        ),
        (
            r#"{"base": {}, "zip": {"batch_size": [2, 4, 2], "optim.lr": [0.1, 0.2, 0.1]},
                "grid": {"seed": [0, 1]}}"#,
            "`zip` set (batch_size, optim.lr) lists values (2, 0.1) twice",
        ),
        (
            r#"{"base": {}, "grid": {"model.hidden": [[100, 100], [50], [100, 100]]}}"#,
            "`grid` key `model.hidden` lists value",
        ),
    ];
    assert_studies_refused(&cases);
    // The same seed in two zip points with another key that differs is two runs, and two
    // seeds a float cannot tell apart are two seeds.
    let study = study_from(
        r#"{"base": {}, "zip": {"seed": [0, 0], "optim.lr": [0.1, 0.2]},
            "grid": {"norm.kind": ["none"]}}"#,
    )
    .unwrap();
    assert_eq!(study.runs.len(), 2);
    let study =
        study_from(r#"{"base": {}, "grid": {"seed": [9007199254740992, 9007199254740993]}}"#)
            .unwrap();
    assert_eq!(study.runs.len(), 2);
}

/// `--plan` writes a study's plan; beside run folders (`compare --plan DIR`), or with the
/// flags only a comparison reads, it would do nothing, and is refused rather than ignored.
#[test]
fn plan_without_a_study_or_with_flags_it_ignores_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let trained = common::smoke_train(&run)
        .args(["--quiet", "--set", "steps=20", "--set", "eval_every=10"])
        .output()
        .unwrap();
    assert!(trained.status.success(), "{}", describe(&trained));
    let study = write_study(
        tmp.path(),
        json!({"study": "planned", "base": smoke(), "grid": {"seed": [0, 1]}}),
    );
    let results = tmp.path().join("results");
    let dir = run.display().to_string();
    let study = study.display().to_string();
    let cases: [&[&str]; 4] = [
        &["compare", "--plan", &dir],
        &["compare", &dir, "--plan"],
        &["compare", "--study", &study, "--plan", "--jobs", "2"],
        &[
            "compare",
            "--study",
            &study,
            "--plan",
            "--baseline",
            "no BN",
        ],
    ];
    for args in cases {
        let o = bn_exp()
            .args(args)
            .arg("--results-dir")
            .arg(&results)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", describe(&o));
        let err = text(&o.stderr);
        assert!(
            err.contains("--plan") && err.contains("cannot be used"),
            "{args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?} printed: {}", text(&o.stdout));
        assert!(!results.exists(), "{args:?} wrote {}", results.display());
    }
}

#[test]
fn run_configs_are_checked_with_trains_own_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (json!({"bn_placement": ["none", "before"]}), "bn_placement"),
        (json!({"optim.lr": [0.1, -1.0]}), "optim.lr"),
        (json!({"model.activation": ["sigmoid", "swish"]}), "swish"),
    ];
    for (grid, needle) in cases {
        let file = tmp.path().join("bad.json");
        let study = json!({"study": "bad", "base": {}, "grid": grid});
        std::fs::write(&file, study.to_string()).unwrap();
        let err = format!("{:#}", load_study(&file).unwrap_err());
        assert!(
            err.contains(needle) && err.contains("would be refused by train"),
            "{grid}: {err}"
        );
    }
}

#[test]
fn base_path_is_found_from_the_study_file_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let configs = tmp.path().join("configs");
    std::fs::create_dir_all(configs.join("studies")).unwrap();
    std::fs::write(configs.join("base.json"), r#"{"steps": 7}"#).unwrap();
    let file = configs.join("studies").join("s.json");
    std::fs::write(
        &file,
        r#"{"base": "configs/base.json", "grid": {"seed": [0, 1]}}"#,
    )
    .unwrap();
    let study = load_study(&file).unwrap();
    assert_eq!(study.runs[1].config["steps"], 7);
    assert_eq!(study.name, "s");
}

#[test]
fn shipped_studies_are_valid() {
    let dir = repo().join("configs/studies");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let raw: Value = serde_json::from_str(&text).unwrap();
        let name = raw["study"].as_str().unwrap().to_string();
        assert!(
            !raw["description"].as_str().unwrap_or("").is_empty(),
            "{name} needs a description"
        );
        // With its real base config where it exists (cwd is the repository root here), else
        // against train's defaults; either way every run must pass train's own checks.
        let base = raw["base"].as_str().unwrap();
        let study = if repo().join(base).is_file() {
            load_study(&path)
        } else {
            let mut inline = raw.clone();
            inline["base"] = json!({});
            parse_study(&inline.to_string(), &path)
                .and_then(|study| check_run_configs(&study).map(|()| study))
        }
        .unwrap_or_else(|err| panic!("{}: {err:#}", path.display()));
        assert!(study.runs.len() > 1, "{name}");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "batch_size",
            "cifar_cnn",
            "dropout",
            "inception_accelerate",
            "inception_lr_search",
            "large_batch",
            "lr_multipliers",
            "norm_zoo",
            "paper_fig1",
            "placement",
            "santurkar",
            "santurkar_cnn",
            "small_batch_norms",
            "small_batch_norms_cnn"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The binary.

#[test]
fn compare_dirs_prints_and_writes_into_the_one_study_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = fixtures();
    let study = write_fixture_study(tmp.path(), &runs);
    // An unfinished run is skipped, and hidden folders are not runs.
    let unfinished = study.join("placement-after_seed-1");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::copy(
        study.join("placement-after_seed-0/config.json"),
        unfinished.join("config.json"),
    )
    .unwrap();
    std::fs::create_dir_all(study.join(".configs")).unwrap();

    let output = bn_exp()
        .arg("compare")
        .arg(&study)
        .args(["--thresholds", "90,95"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("no BN"), "{stdout}");
    assert!(stdout.contains("steps to 95%"), "{stdout}");
    assert!(!stdout.contains("steps to 97%"), "{stdout}");
    assert!(
        text(&output.stderr).contains("skipping"),
        "{}",
        describe(&output)
    );

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("comparison.json")).unwrap())
            .unwrap();
    assert_eq!(json["groups"].as_array().unwrap().len(), 3);
    assert_eq!(json["thresholds"], json!([0.9, 0.95]));
    let csv = std::fs::read_to_string(study.join("comparison.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("group,baseline,n,"), "{csv}");
    let md = std::fs::read_to_string(study.join("comparison.md")).unwrap();
    assert!(md.contains("| BN before sigmoid |"), "{md}");
    assert!(md.contains("## Runs"), "{md}");

    // Two run folders: printed, no files unless --out.
    let out = tmp.path().join("out");
    let output = bn_exp()
        .arg("compare")
        .arg(study.join("placement-none_seed-0"))
        .arg(study.join("placement-before_seed-0"))
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(out.join("comparison.md").is_file());

    let output = bn_exp().arg("compare").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("nothing to compare"));
    let output = bn_exp()
        .arg("compare")
        .arg(tmp.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("is not a folder"));
}

#[test]
fn a_changed_study_refuses_runs_made_with_the_old_config() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let old = results.join("changed").join("seed-0");
    std::fs::create_dir_all(&old).unwrap();
    let config = json!({"name": "seed-0", "study": "changed", "seed": 0, "steps": 300});
    std::fs::write(old.join("config.json"), config.to_string()).unwrap();
    let study = write_study(
        tmp.path(),
        json!({"study": "changed", "base": {"steps": 200}, "grid": {"seed": [0, 1]}}),
    );
    let output = run_study(&study, &results, true);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("seed-0: steps is 300 there, 200 in the study"),
        "{stderr}"
    );
    assert!(
        !results.join("changed").join("seed-1").exists(),
        "nothing is trained when a run is stale"
    );
}

// End to end: these train for real with configs/smoke.json and MNIST from `<repo>/data`.

fn write_study(dir: &Path, study: Value) -> PathBuf {
    let name = study["study"].as_str().unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&study).unwrap()).unwrap();
    path
}

fn smoke() -> String {
    repo().join("configs/smoke.json").display().to_string()
}

fn run_study(study: &Path, results: &Path, quiet: bool) -> Output {
    run_study_with_data(study, results, quiet, &repo().join("data"))
}

fn run_study_with_data(study: &Path, results: &Path, quiet: bool, data: &Path) -> Output {
    let mut command = common::compare_study(study, results);
    command.args(["--jobs", "2", "--data-dir"]).arg(data);
    if quiet {
        command.arg("--quiet");
    }
    command.output().unwrap()
}

/// Mean absolute change of the tracked unit's p15, p50 and p85 between consecutive lines of a
/// run's activations.jsonl.
fn tracked_drift(run_dir: &Path) -> [f64; 3] {
    let lines: Vec<Value> = std::fs::read_to_string(run_dir.join("activations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut sums = [0.0; 3];
    for pair in lines.windows(2) {
        for (k, key) in ["p15", "p50", "p85"].iter().enumerate() {
            let (a, b) = (&pair[0]["tracked"][key], &pair[1]["tracked"][key]);
            sums[k] += (b.as_f64().unwrap() - a.as_f64().unwrap()).abs();
        }
    }
    sums.map(|s| s / (lines.len() - 1) as f64)
}

/// The `run_id` of each run's summary: it changes only when an invocation rewrites the summary.
fn summary_ids(study_dir: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let path = study_dir.join(name).join("summary.json");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{name}: {err}"));
            let summary: Value = serde_json::from_str(&text).unwrap();
            let id = summary["run_id"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "{name}: summary without a run_id");
            id
        })
        .collect()
}

fn metrics_of(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["step"].as_u64().unwrap(), v["test_acc"].as_f64().unwrap())
        })
        .collect()
}

/// A study with Santurkar et al.'s measures: `compare` adds their table, whose every number is
/// the mean over each run's `measures.jsonl` (recomputed here from the raw lines), then over
/// the group's runs; the CSV gets their columns; `plot --study` draws both measure figures.
#[test]
fn a_study_with_measures_tables_and_plots_them() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let study = write_study(
        tmp.path(),
        json!({"study": "measured", "description": "smoke with the measures",
               "base": smoke(),
               "set": {"measures.every": 50},
               "zip": {"norm.kind": ["none", "batch"], "norm.noise": [false, true]},
               "grid": {"seed": [0, 1]}}),
    );
    let output = run_study(&study, &results, true);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Optimisation measures"), "{stdout}");
    let dir = results.join("measured");
    let md = std::fs::read_to_string(dir.join("comparison.md")).unwrap();
    assert!(
        md.contains("## Optimisation measures")
            && md.contains("ICS ‖G−G′‖ (hidden 0 / hidden 1 / output)"),
        "{md}"
    );
    let csv = std::fs::read_to_string(dir.join("comparison.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for column in [
        "ics_l2_hidden_1_mean",
        "ics_cosine_output_mean",
        "beta_smoothness_early_mean",
    ] {
        assert!(header.contains(column), "{header}");
    }
    // Two per-layer measures over three layers, six scalar ones: a cell each in every row.
    let measure_columns: Vec<&str> = header
        .split(',')
        .skip_while(|c| *c != "ics_l2_hidden_0_mean")
        .collect();
    assert_eq!(measure_columns.len(), 2 * 3 + 6, "{header}");
    for line in csv.lines().skip(1) {
        assert_eq!(line.split(',').count(), header.split(',').count(), "{csv}");
    }
    // Each run's means, from its raw lines: steps 0..300 every 50, "early" is below step 30.
    let per_run = |run: &str, key: &str, early: bool| -> f64 {
        let text = std::fs::read_to_string(dir.join(run).join("measures.jsonl")).unwrap();
        let values: Vec<f64> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| !early || v["step"].as_u64().unwrap() < 30)
            .map(|v| v[key].as_f64().unwrap())
            .collect();
        assert_eq!(values.len(), if early { 1 } else { 6 }, "{run}");
        values.iter().sum::<f64>() / values.len() as f64
    };
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("comparison.json")).unwrap())
            .unwrap();
    for (g, kind) in [(0, "kind-none_noise-false"), (1, "kind-batch_noise-true")] {
        let group = &json["groups"][g]["measures"];
        for (field, key, early) in [
            ("beta", "beta_smoothness", false),
            ("beta_early", "beta_smoothness", true),
            ("grad_change", "grad_change_max", false),
            ("loss_range", "loss_range", false),
        ] {
            let want = (per_run(&format!("{kind}_seed-0"), key, early)
                + per_run(&format!("{kind}_seed-1"), key, early))
                / 2.0;
            let got = group[field]["mean"].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "{kind} {field}: {got} vs {want}"
            );
        }
        // ICS of the first layer is 0 in every probe, so in every mean.
        assert_eq!(group["ics_l2"][0]["mean"], json!(0.0), "{kind}");
        let mut fields: Vec<&str> = group
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "beta",
                "beta_early",
                "grad_change",
                "grad_change_early",
                "ics_cosine",
                "ics_l2",
                "ics_relative",
                "layers",
                "loss_range",
                "loss_range_early"
            ],
            "{kind}"
        );
        assert_eq!(group["ics_relative"].as_array().unwrap().len(), 3, "{kind}");
    }

    let output = bn_exp()
        .args(["plot", "--study"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    for figure in ["measures.png", "measures_landscape.png"] {
        let path = dir.join("plots").join(figure);
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "{} missing or empty",
            path.display()
        );
    }
    let index = std::fs::read_to_string(dir.join("plots/index.md")).unwrap();
    assert!(index.contains("measures_landscape.png"), "{index}");
}

#[test]
fn study_trains_then_reuses_then_resumes_an_interrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let study = write_study(
        tmp.path(),
        json!({"study": "e2e", "description": "smoke: BN or not",
               "base": smoke(),
               "grid": {"norm.kind": ["none", "batch"], "seed": [0, 1]},
               "baseline": {"norm.kind": "none"}}),
    );
    let names = [
        "kind-none_seed-0",
        "kind-none_seed-1",
        "kind-batch_seed-0",
        "kind-batch_seed-1",
    ];
    let study_dir = results.join("e2e");

    let output = run_study(&study, &results, true);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = text(&output.stdout);
    // Groups are labelled by what differs in the runs' resolved configs: the norm kind.
    assert!(
        stdout.contains("no BN") && stdout.contains("\nBN "),
        "{stdout}"
    );
    for file in ["comparison.md", "comparison.csv", "comparison.json"] {
        assert!(study_dir.join(file).is_file(), "{file}");
    }
    let cmp: Value =
        serde_json::from_str(&std::fs::read_to_string(study_dir.join("comparison.json")).unwrap())
            .unwrap();
    assert_eq!(cmp["baseline"]["label"], "no BN");
    for group in cmp["groups"].as_array().unwrap() {
        assert_eq!(group["n"], 2);
        for run in group["runs"].as_array().unwrap() {
            let dir = study_dir.join(run["name"].as_str().unwrap());
            let best = metrics_of(&dir)
                .iter()
                .map(|(_, acc)| *acc)
                .fold(f64::MIN, f64::max);
            assert_eq!(run["best_acc"].as_f64().unwrap(), best, "{dir:?}");
        }
    }
    // The drift column, by hand from each run's activations.jsonl: the mean absolute change of
    // the tracked unit's percentiles between consecutive probes, averaged over the group.
    for group in cmp["groups"].as_array().unwrap() {
        let per_run: Vec<[f64; 3]> = group["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| tracked_drift(&study_dir.join(run["name"].as_str().unwrap())))
            .collect();
        for (k, key) in ["p15", "p50", "p85"].iter().enumerate() {
            let want = per_run.iter().map(|d| d[k]).sum::<f64>() / per_run.len() as f64;
            let got = group["drift"][k]["mean"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "drift {key}: {got} vs {want}");
        }
    }
    assert!(stdout.contains("drift p15/p50/p85"), "{stdout}");
    let before = summary_ids(&study_dir, &names);

    // Second invocation: everything is done, nothing is trained again.
    let output = run_study(&study, &results, false);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("4 already done, 0 to train"),
        "{}",
        describe(&output)
    );
    assert_eq!(summary_ids(&study_dir, &names), before);

    // Interrupt one run: train it again but stop it after 100 steps, as a Ctrl-C would.
    let victim = study_dir.join(names[3]);
    std::fs::remove_dir_all(&victim).unwrap();
    let output = bn_exp()
        .arg("train")
        .arg("--config")
        .arg(
            study_dir
                .join(".configs")
                .join(format!("{}.json", names[3])),
        )
        .arg("--out")
        .arg(&victim)
        .args(["--stop-after", "100", "--quiet", "--data-dir"])
        .arg(repo().join("data"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!victim.join("summary.json").exists());

    let output = run_study(&study, &results, false);
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("3 already done, 1 to train"), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming {}", names[3])),
        "{stderr}"
    );
    assert!(
        std::fs::read_to_string(victim.join("train.log"))
            .unwrap()
            .contains("--resume")
    );
    assert!(victim.join("summary.json").is_file());
    let steps: Vec<u64> = metrics_of(&victim).iter().map(|(s, _)| *s).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(summary_ids(&study_dir, &names[..3]), before[..3]);
}

#[test]
fn diverged_runs_are_counted_and_the_study_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let study = write_study(
        tmp.path(),
        json!({"study": "unstable", "description": "a learning rate no net survives",
               "base": smoke(),
               "set": {"norm.kind": "none", "model.activation": "relu",
                       "model.init": "he", "steps": 100, "eval_every": 50},
               "grid": {"optim.lr": [0.1, 1e6]}}),
    );
    let output = run_study(&study, &results, true);
    assert!(output.status.success(), "{}", describe(&output));
    let cmp: Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("unstable/comparison.json")).unwrap(),
    )
    .unwrap();
    let groups = cmp["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["diverged"], 0, "{cmp:#}");
    assert_eq!(groups[1]["diverged"], 1, "{cmp:#}");
    assert_eq!(groups[1]["label"], "lr 1000000");
}

#[test]
fn a_study_whose_data_or_batch_train_would_refuse_is_refused_before_anything_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    // A data folder with MNIST but no CIFAR-10, and a batch larger than MNIST's training set.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(repo().join("data/mnist"), data.join("mnist")).unwrap();
    let cases = [
        (json!({"dataset": ["mnist", "cifar10"]}), "needs CIFAR-10"),
        (
            json!({"batch_size": [60, 60001]}),
            "batch_size 60001 exceeds the 60000",
        ),
    ];
    for (grid, needle) in cases {
        let study = write_study(
            tmp.path(),
            json!({"study": "broken", "base": smoke(), "grid": grid}),
        );
        let output = run_study_with_data(&study, &results, true, &data);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        assert!(
            text(&output.stderr).contains(needle),
            "{}",
            describe(&output)
        );
        assert!(!results.exists(), "a refused study wrote {:?}", results);
    }
}

#[test]
fn a_failing_run_is_reported_and_the_others_still_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let study = write_study(
        tmp.path(),
        json!({"study": "broken", "base": smoke(), "grid": {"seed": [0, 1]}}),
    );
    // Run seed-1 was started and its checkpoint is damaged: its resume fails in train (exit 2).
    let broken = results.join("broken/seed-1");
    std::fs::create_dir_all(broken.join("checkpoint")).unwrap();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(smoke()).unwrap()).unwrap();
    let mut config = bn_exp::config::config_from_value(config).unwrap();
    config.name = "seed-1".into();
    config.study = "broken".into();
    config.seed = 1;
    std::fs::write(
        broken.join("config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    std::fs::write(broken.join("checkpoint/state.json"), "{\"step\": ").unwrap();
    let output = run_study(&study, &results, true);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("run seed-1 failed"), "{stderr}");
    assert!(
        stderr.contains("exited with 2") && stderr.contains("last lines of"),
        "{stderr}"
    );
    assert!(stderr.contains("state.json is damaged"), "{stderr}");
    assert!(
        results.join("broken/comparison.md").is_file(),
        "the finished run is still compared: {}",
        describe(&output)
    );
}

/// The scheduler contract: `compare --study S --plan` writes one run per line, `bn-exp run
/// --plan FILE --index I` (or with the index from `SLURM_ARRAY_TASK_ID`) trains entry I, a
/// second task for a finished entry does nothing, and `compare --study` then collects with
/// nothing left to train: the same table and the same records as the study run locally.
#[test]
fn a_plan_run_entry_by_entry_matches_the_study_run_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let study = write_study(
        tmp.path(),
        json!({"study": "planned", "description": "smoke: BN or not",
               "base": smoke(), "set": {"steps": 200, "eval_every": 50},
               "grid": {"norm.kind": ["none", "batch"], "seed": [0, 1]},
               "baseline": {"norm.kind": "none"}}),
    );
    let (local, scheduled) = (tmp.path().join("local"), tmp.path().join("scheduled"));
    let output = run_study(&study, &local, true);
    assert!(output.status.success(), "{}", describe(&output));

    let output = common::plan_study(&study, &scheduled);
    let plan = scheduled.join("planned/plan.jsonl");
    let entries: Vec<Value> = std::fs::read_to_string(&plan)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[3]["index"], 3);
    assert!(text(&output.stdout).contains("4 runs (0 already finished)"));
    let task = |index: Option<usize>, env: Option<&str>| {
        let mut command = bn_exp();
        command
            .args(["run", "--quiet", "--plan"])
            .arg(&plan)
            .arg("--data-dir")
            .arg(repo().join("data"))
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX");
        if let Some(i) = index {
            command.args(["--index", &i.to_string()]);
        }
        if let Some(i) = env {
            command.env("SLURM_ARRAY_TASK_ID", i);
        }
        command.output().unwrap()
    };
    for i in 0..3 {
        let output = task(Some(i), None);
        assert!(output.status.success(), "{}", describe(&output));
    }
    let output = task(None, Some("3"));
    assert!(output.status.success(), "{}", describe(&output));
    // A requeued task of a finished entry does nothing, and says so.
    let again = task(Some(1), None);
    assert!(again.status.success() && text(&again.stdout).contains("already finished"));
    // Out of range, or no index at all: an error that says what to do.
    let bad = task(Some(4), None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("holds 4 runs"),
        "{}",
        describe(&bad)
    );
    let none = task(None, None);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("SLURM_ARRAY_TASK_ID"),
        "{}",
        describe(&none)
    );

    // The scheduler files: an sbatch array over the 4 entries, and a Kubernetes indexed Job
    // that parses as YAML.
    for emit in ["slurm", "k8s"] {
        let output = common::compare_study(&study, &scheduled)
            .args([
                "--plan",
                "--emit",
                emit,
                "--max-parallel",
                "2",
                "--data-dir",
            ])
            .arg(repo().join("data"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
    }
    let slurm = std::fs::read_to_string(scheduled.join("planned/slurm.sh")).unwrap();
    for line in [
        "#SBATCH --array=0-3%2",
        "#SBATCH --requeue",
        "#SBATCH --time=0-00:10:00",
    ] {
        assert!(slurm.contains(line), "{slurm}");
    }
    assert!(slurm.contains(" run --quiet --plan "), "{slurm}");
    let job: Value = serde_yaml::from_str(
        &std::fs::read_to_string(scheduled.join("planned/k8s-job.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 4);
    assert_eq!(job["spec"]["parallelism"], 2);
    let command = &job["spec"]["template"]["spec"]["containers"][0]["command"];
    assert_eq!(command[1], "run");

    let output = run_study(&study, &scheduled, false);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("0 to train"),
        "{}",
        describe(&output)
    );
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    common::assert_same_study(&local.join("planned"), &scheduled.join("planned"), &names);
}

/// A damaged line in a compared run: the table is made without it, a warning on stderr names
/// the file and the line (also with --quiet), and --strict makes it an error with status 2.
#[test]
fn a_damaged_line_is_warned_about_and_strict_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let study = write_fixture_study(tmp.path(), &fixtures());
    let metrics = study.join("placement-none_seed-1").join("metrics.jsonl");
    let text_before = std::fs::read_to_string(&metrics).unwrap();
    let damaged = text_before.replacen('{', "{\"step\": ", 1);
    std::fs::write(&metrics, damaged).unwrap();

    let compare = |flags: &[&str]| {
        bn_exp()
            .arg("compare")
            .arg(&study)
            .args(flags)
            .output()
            .unwrap()
    };
    let output = compare(&["--quiet"]);
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = text(&output.stderr);
    let warned = format!("warning: {}: line 1 not valid JSON", metrics.display());
    assert!(stderr.contains(&warned), "{stderr}");
    assert!(
        text(&output.stdout).contains("no BN"),
        "{}",
        describe(&output)
    );

    let output = compare(&["--quiet", "--strict"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&warned), "{stderr}");
    assert!(stderr.contains("--strict: 1 damaged"), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", describe(&output));

    // The undamaged study passes --strict.
    std::fs::write(&metrics, text_before).unwrap();
    let output = compare(&["--quiet", "--strict"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        !text(&output.stderr).contains("warning"),
        "{}",
        describe(&output)
    );
}
