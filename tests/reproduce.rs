//! `bn-exp reproduce`: the verdict rule on synthetic seed results, and the whole command on
//! two small studies of the smoke config, its HTML report read with an HTML parser.

use std::path::{Path, PathBuf};
use std::process::Command;

use bn_exp::reproduce::verdict::{Better, Bootstrap, Verdict, combine, judge};
use scraper::{Html, Selector};
use serde_json::{Value, json};

use crate::common::{bn_exp, list_tree, repo, stderr};

const BOOT: Bootstrap = Bootstrap {
    resamples: 10_000,
    seed: 7,
};

fn some(values: &[f64]) -> Vec<Option<f64>> {
    values.iter().map(|&v| Some(v)).collect()
}

#[test]
fn a_clear_win_is_supported_with_its_effect_and_ci() {
    let a = some(&[0.981, 0.982, 0.980]);
    let b = some(&[0.973, 0.974, 0.972]);
    let j = judge(&a, &b, Better::Higher, 0.002, 2, BOOT);
    assert_eq!(j.verdict, Verdict::Supported, "{j:?}");
    assert!((j.effect - 0.008).abs() < 1e-12);
    // Every resample's difference lies between the extreme pairings: 0.006 and 0.010.
    assert!(
        j.ci_low >= 0.006 - 1e-12 && j.ci_high <= 0.010 + 1e-12,
        "{j:?}"
    );
    assert!(j.ci_low > 0.0);
    assert_eq!(j.p_a_better, 1.0);
    // Lower-is-better metrics are oriented: fewer steps is the claimed direction.
    let fast = some(&[2000.0, 2500.0, 2000.0]);
    let slow = some(&[14000.0, 15000.0, 14500.0]);
    let j = judge(&fast, &slow, Better::Lower, 1000.0, 2, BOOT);
    assert_eq!(j.verdict, Verdict::Supported);
    assert!((j.effect - 12333.333333333334).abs() < 1e-6, "{}", j.effect);
}

#[test]
fn a_clear_loss_is_not_supported() {
    let a = some(&[0.60, 0.61, 0.62]);
    let b = some(&[0.70, 0.71, 0.69]);
    let j = judge(&a, &b, Better::Higher, 0.01, 2, BOOT);
    assert_eq!(j.verdict, Verdict::NotSupported, "{j:?}");
    assert!(j.ci_high < 0.0);
    assert_eq!(j.p_a_better, 0.0);
    // An effect in the right direction that the CI shows is below the minimum: also not.
    let a = some(&[0.7001, 0.7002, 0.7001]);
    let b = some(&[0.7000, 0.7001, 0.7000]);
    let j = judge(&a, &b, Better::Higher, 0.01, 2, BOOT);
    assert_eq!(j.verdict, Verdict::NotSupported, "{j:?}");
    assert!(j.reason.contains("minimum"), "{}", j.reason);
}

#[test]
fn a_ci_straddling_zero_is_inconclusive() {
    let a = some(&[0.95, 0.99, 0.96]);
    let b = some(&[0.97, 0.96, 0.98]);
    let j = judge(&a, &b, Better::Higher, 0.0, 2, BOOT);
    assert!(j.ci_low < 0.0 && j.ci_high > 0.0, "{j:?}");
    assert_eq!(j.verdict, Verdict::Inconclusive);
    assert!(j.p_a_better > 0.0 && j.p_a_better < 1.0);
}

#[test]
fn a_group_that_never_reaches_the_threshold_counts_as_never() {
    // B never reaches it in any seed: A is better in every resample, by an unbounded margin.
    let a = some(&[3000.0, 3500.0, 2500.0]);
    let b = vec![None, None, None];
    let j = judge(&a, &b, Better::Lower, 1000.0, 2, BOOT);
    assert_eq!(j.verdict, Verdict::Supported, "{j:?}");
    assert_eq!((j.effect, j.ci_low), (f64::INFINITY, f64::INFINITY));
    assert_eq!((j.mean_b, j.failed_b), (None, 3));
    // One seed of B never gets there: the effect is unbounded, but some resamples miss that
    // seed, so the CI's lower end is a number, still above zero here.
    let b = vec![Some(9000.0), None, Some(9500.0)];
    let j = judge(&a, &b, Better::Lower, 1000.0, 2, BOOT);
    assert_eq!(j.verdict, Verdict::Supported, "{j:?}");
    assert!(j.ci_low.is_finite() && j.ci_low > 0.0 && j.ci_high.is_infinite());
    // Both never: nothing to judge.
    let j = judge(&[None, None], &[None, None], Better::Lower, 0.0, 2, BOOT);
    assert_eq!(j.verdict, Verdict::Inconclusive);
    // The JSON of a verdict says "inf", not null.
    let text = serde_json::to_string(&judge(&a, &[None, None, None], Better::Lower, 0.0, 2, BOOT))
        .unwrap();
    assert!(text.contains("\"effect\":\"inf\""), "{text}");
}

#[test]
fn a_single_seed_is_inconclusive_however_large_the_effect() {
    let j = judge(
        &some(&[0.99]),
        &some(&[0.10]),
        Better::Higher,
        0.01,
        2,
        BOOT,
    );
    assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
    assert!(j.reason.contains("at least 2"), "{}", j.reason);
    // One group with enough seeds is not enough.
    let j = judge(
        &some(&[0.99, 0.98, 0.99]),
        &some(&[0.10]),
        Better::Higher,
        0.01,
        2,
        BOOT,
    );
    assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
}

#[test]
fn claims_combine_their_tests() {
    use Verdict::*;
    assert_eq!(combine(&[Supported, Supported]), Supported);
    assert_eq!(combine(&[NotSupported, NotSupported]), NotSupported);
    assert_eq!(combine(&[Supported, NotSupported]), Partially);
    assert_eq!(combine(&[Supported, Inconclusive]), Partially);
    assert_eq!(combine(&[NotSupported, Inconclusive]), Inconclusive);
    assert_eq!(combine(&[]), Inconclusive);
}

/// A claims file beside a `studies/` folder of two smoke studies (the embedded MNIST).
fn write_claims(dir: &Path) -> PathBuf {
    let studies = dir.join("studies");
    std::fs::create_dir_all(&studies).unwrap();
    let smoke = repo().join("configs/smoke.json").display().to_string();
    let write = |name: &str, study: Value| {
        std::fs::write(studies.join(format!("{name}.json")), study.to_string()).unwrap();
    };
    write(
        "tiny_bn",
        json!({"study": "tiny_bn", "description": "BN or not on the smoke net",
               "base": smoke, "set": {"steps": 200, "eval_every": 50},
               "grid": {"norm.kind": ["none", "batch"], "seed": [0, 1]},
               "baseline": {"norm.kind": "none"}}),
    );
    write(
        "tiny_lr",
        json!({"study": "tiny_lr", "description": "two learning rates with BN",
               "base": smoke, "set": {"steps": 200, "eval_every": 50},
               "grid": {"optim.lr": [0.1, 1.0], "seed": [0, 1]}}),
    );
    let test = |study: &str, a: Value, b: Value, metric: &str| {
        json!({"setting": format!("{study} {metric}"), "study": study, "metric": metric,
               "threshold": 0.8, "a": a, "b": b, "better": if metric == "steps_to" {"lower"} else {"higher"},
               "min_effect": 0.0, "min_seeds": 2})
    };
    let claims = json!({
        "description": "test claims",
        "bootstrap": {"resamples": 1000, "seed": 1},
        "quick": {"seeds": [0, 1], "note": "shorter", "set": {"tiny_bn": {"steps": 100}}},
        "claims": [
            {"id": "bn_helps", "statement": "BN helps the smoke net", "source": "a test",
             "tests": [test("tiny_bn", json!({"norm.kind": "batch"}), json!({"norm.kind": "none"}), "final_acc"),
                       test("tiny_bn", json!({"norm.kind": "batch"}), json!({"norm.kind": "none"}), "steps_to")]},
            {"id": "small_lr_wins", "statement": "a small rate wins", "source": "a test",
             "tests": [test("tiny_lr", json!({"optim.lr": 0.1}), json!({"optim.lr": 1.0}), "final_acc")]}
        ]
    });
    let path = dir.join("claims.json");
    std::fs::write(&path, serde_json::to_string_pretty(&claims).unwrap()).unwrap();
    path
}

/// `bn-exp reproduce MODE` of `claims` into `<dir>/results`; a quick one is set against the
/// full report there.
fn reproduce(dir: &Path, claims: &Path, mode: &str) -> std::process::Output {
    let mut command = reproduce_command(dir, claims, &[mode]);
    if mode == "--quick" {
        command
            .arg("--full-report")
            .arg(dir.join("results/reproduce/report.json"));
    }
    command.output().unwrap()
}

/// The report a `reproduce` into `<dir>/results` wrote in `folder` (`reproduce` or
/// `reproduce-quick`).
fn report_in(dir: &Path, folder: &str) -> String {
    std::fs::read_to_string(dir.join("results").join(folder).join("report.md")).unwrap()
}

/// `bn-exp reproduce` with `extra` flags, of `claims` into `<dir>/results`, to add flags to.
fn reproduce_command(dir: &Path, claims: &Path, extra: &[&str]) -> Command {
    let mut command = bn_exp();
    command
        .current_dir(repo())
        .arg("reproduce")
        .args(extra)
        .args(["--jobs", "2", "--quiet", "--claims"])
        .arg(claims)
        .arg("--results-dir")
        .arg(dir.join("results"))
        .arg("--data-dir")
        .arg(repo().join("data"));
    command
}

#[test]
fn reproduce_writes_a_report_a_reader_and_a_parser_can_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let claims = write_claims(tmp.path());
    let out = reproduce(tmp.path(), &claims, "--full");
    assert!(out.status.success(), "{}", stderr(&out));
    let report_dir = tmp.path().join("results/reproduce");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    let verdicts: Vec<&str> = json["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts.len(), 2);
    // The groups read as people say them, and each test has its seeds.
    let first = &json["claims"][0]["tests"][0];
    assert_eq!(
        (first["label_a"].as_str(), first["label_b"].as_str()),
        (Some("BN"), Some("no BN"))
    );
    assert_eq!(first["values_a"].as_array().unwrap().len(), 2);

    let html =
        Html::parse_document(&std::fs::read_to_string(report_dir.join("report.html")).unwrap());
    let select = |s: &str| Selector::parse(s).unwrap();
    let rows: Vec<_> = html.select(&select("table.verdicts tbody tr")).collect();
    assert_eq!(rows.len(), 2, "one verdict row per claim");
    for (row, verdict) in rows.iter().zip(&verdicts) {
        let text: String = row.text().collect();
        assert!(text.contains(verdict), "{text} lacks {verdict}");
    }
    let sections: Vec<_> = html.select(&select("section.claim")).collect();
    assert_eq!(sections.len(), 2, "one section per claim");
    for (section, claim) in sections.iter().zip(json["claims"].as_array().unwrap()) {
        let text: String = section.text().collect();
        assert!(text.contains(claim["statement"].as_str().unwrap()));
    }
    // Every figure is inline and decodes as the PNG plot drew.
    let images: Vec<_> = html.select(&select("section.claim img")).collect();
    assert!(images.len() >= 2, "{} figures", images.len());
    for img in images {
        let src = img.value().attr("src").unwrap();
        let data = src
            .strip_prefix("data:image/png;base64,")
            .expect("inline PNG");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap();
        let name = img.value().attr("alt").unwrap();
        let copy = image::open(report_dir.join("figures").join(name)).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (copy.width(), copy.height())
        );
        assert!(decoded.width() >= 1000 && decoded.height() >= 500, "{name}");
    }
    // No script is needed to read it, and nothing outside the file is loaded.
    assert_eq!(html.select(&select("script")).count(), 0);
    assert_eq!(html.select(&select("link")).count(), 0);

    // The quick mode is titled as such and sets each verdict against the full report's.
    let out = reproduce(tmp.path(), &claims, "--quick");
    assert!(out.status.success(), "{}", stderr(&out));
    let quick = report_in(tmp.path(), "reproduce-quick");
    assert!(
        quick.starts_with("# bn-exp: Batch Normalization's claims, QUICK"),
        "{quick}"
    );
    assert!(quick.contains("the full run"), "{quick}");
    // Studies the quick settings leave out are not run, and their tests say so.
    assert!(
        quick.contains("tiny_lr is not run in quick mode"),
        "{quick}"
    );
    assert!(!tmp.path().join("results/reproduce-quick/tiny_lr").exists());
}

#[test]
fn a_claims_group_that_picks_no_group_or_several_fails_before_anything_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let claims = write_claims(tmp.path());
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&claims).unwrap()).unwrap();
    for (group, expected) in [
        (json!({}), "matches 2 groups"),
        (json!({"norm.kind": "layer"}), "matches no run"),
    ] {
        let mut edited = original.clone();
        edited["claims"][0]["tests"][1]["b"] = group;
        std::fs::write(&claims, edited.to_string()).unwrap();
        let out = reproduce(tmp.path(), &claims, "--full");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("claim bn_helps (tiny_bn steps_to) of study tiny_bn: group b")
                && stderr.contains(expected),
            "{stderr}"
        );
        assert!(!tmp.path().join("results").exists(), "{stderr}");
    }
}

#[test]
fn the_expanded_interval_is_wide_for_few_seeds_and_nominal_for_many() {
    use bn_exp::reproduce::verdict::expanded_tail;
    // Φ(−√(3/2)·4.303) = Φ(−5.270) ≈ 6.8e-8; Φ(−√(10/9)·2.262) = Φ(−2.384) ≈ 0.0086.
    assert!(
        (expanded_tail(3) / 6.8e-8 - 1.0).abs() < 0.05,
        "{}",
        expanded_tail(3)
    );
    assert!(
        (expanded_tail(10) - 0.0086).abs() < 0.0003,
        "{}",
        expanded_tail(10)
    );
    assert!((expanded_tail(100_000) - 0.025).abs() < 0.0002);
    // Overlapping seeds: the plain percentile interval would clear zero here, the expanded
    // one does not (A is better in 7 of 9 pairings, not all).
    let a = some(&[0.660, 0.700, 0.655]);
    let b = some(&[0.640, 0.660, 0.650]);
    let j = judge(&a, &b, Better::Higher, 0.0, 2, BOOT);
    assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
    assert!(j.ci_low < 0.0 && j.p_a_better < 1.0);
}

/// Every file under `dir` with its bytes, sorted by path: what "nothing was written" compares.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    list_tree(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap_or_default();
            (name, bytes)
        })
        .collect()
}

/// `--dry-run` prints the plan and writes nothing at all: not the quick mode's derived study
/// files, not a results folder, nothing beside the claims and the studies.
#[test]
fn a_dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let claims = write_claims(tmp.path());
    let before = snapshot(tmp.path());
    for mode in ["--quick", "--full"] {
        let out = reproduce_command(tmp.path(), &claims, &[mode, "--dry-run"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("dry run"),
            "{mode}"
        );
        assert_eq!(
            list_tree(tmp.path()),
            before.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            "{mode} --dry-run wrote files"
        );
        assert!(
            snapshot(tmp.path()) == before,
            "{mode} --dry-run changed a file"
        );
    }
}

/// A claims file that would count one seed as two, report one claim twice or ask for an
/// unbounded bootstrap is refused, naming the file and the key, before anything trains or is
/// written; so is a study grid that lists a seed twice.
#[test]
fn a_claims_file_that_counts_twice_or_has_no_bound_is_refused_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let claims = write_claims(tmp.path());
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&claims).unwrap()).unwrap();
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit, &str); 5] = [
        (
            "quick.seeds twice",
            |c| c["quick"]["seeds"] = json!([0, 1, 0]),
            "quick.seeds lists seed 0 twice",
        ),
        (
            "a claim id twice",
            |c| c["claims"][1]["id"] = json!("bn_helps"),
            "claims[1].id is \"bn_helps\", the id of claims[0] too",
        ),
        (
            "a trillion resamples",
            |c| c["bootstrap"]["resamples"] = json!(1_000_000_000_000u64),
            "bootstrap.resamples is 1000000000000: it must be from 100 to 1000000",
        ),
        (
            "resamples of the wrong type",
            |c| c["bootstrap"]["resamples"] = json!("many"),
            "bootstrap.resamples",
        ),
        (
            "no seeds",
            |c| c["quick"]["seeds"] = json!([]),
            "quick.seeds is empty",
        ),
    ];
    let refused = |what: &str, mode: &str, says: &str, file: &Path| {
        let out = reproduce_command(tmp.path(), &claims, &[mode, "--dry-run"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(says) && err.contains(&file.display().to_string()),
            "{what}: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            !tmp.path().join("results").exists(),
            "{what}: wrote results"
        );
    };
    for (what, edit, says) in edits {
        let mut edited = original.clone();
        edit(&mut edited);
        std::fs::write(&claims, edited.to_string()).unwrap();
        refused(what, "--quick", says, &claims);
    }
    // A key given twice, which serde would read as its last value.
    let text = serde_json::to_string_pretty(&original).unwrap().replacen(
        "\"seed\": 1",
        "\"seed\": 1, \"seed\": 2",
        1,
    );
    std::fs::write(&claims, text).unwrap();
    refused(
        "a key twice",
        "--full",
        "bootstrap: the key \"seed\" is given twice",
        &claims,
    );

    // A study that lists a seed twice: full mode reads its grid as written.
    std::fs::write(&claims, original.to_string()).unwrap();
    let study = tmp.path().join("studies/tiny_lr.json");
    let mut grid: Value = serde_json::from_str(&std::fs::read_to_string(&study).unwrap()).unwrap();
    grid["grid"]["seed"] = json!([0, 1, 1]);
    std::fs::write(&study, grid.to_string()).unwrap();
    refused(
        "a study seed twice",
        "--full",
        "`grid` key `seed` lists value 1 twice",
        &study,
    );
    // A key twice in a study quick mode derives from: refused as compare refuses it.
    let tiny_bn = tmp.path().join("studies/tiny_bn.json");
    let text = std::fs::read_to_string(&tiny_bn).unwrap().replacen(
        "\"steps\":200",
        "\"steps\":200,\"steps\":100",
        1,
    );
    assert!(text.contains("\"steps\":100"), "{text}");
    std::fs::write(&tiny_bn, text).unwrap();
    refused(
        "a study key twice",
        "--quick",
        "\"steps\" is given twice",
        &tiny_bn,
    );
}

/// A full report named with `--full-report` must be one: a missing or damaged file stops a
/// quick reproduction before it trains, naming the file. The committed one, not named, is
/// used when it can be and warned about when it is damaged.
#[test]
fn a_named_full_report_must_be_readable_and_the_default_one_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let claims = write_claims(tmp.path());
    let damaged = tmp.path().join("damaged.json");
    std::fs::write(&damaged, "{\"claims\": [{\"id\": \"faster\"").unwrap();
    let not_a_report = tmp.path().join("not-a-report.json");
    std::fs::write(
        &not_a_report,
        "{\"claims\": [{\"id\": \"faster\", \"verdict\": 3}]}",
    )
    .unwrap();
    let missing = tmp.path().join("missing.json");
    for (file, says) in [
        (&missing, "cannot read the full report"),
        (&damaged, "not JSON"),
        (&not_a_report, "claims[0].verdict is not one of"),
    ] {
        let out = reproduce_command(tmp.path(), &claims, &["--quick", "--dry-run"])
            .arg("--full-report")
            .arg(file)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
        assert!(
            err.contains(says) && err.contains(&file.display().to_string()),
            "{err}"
        );
    }
    // With --full it would do nothing: refused.
    let out = reproduce_command(tmp.path(), &claims, &["--full", "--dry-run"])
        .arg("--full-report")
        .arg(&damaged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--full-report"), "{}", stderr(&out));

    // The default, docs/reproduce/report.json under the working folder, damaged: a warning
    // that names it, and the reproduction goes on.
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("docs/reproduce")).unwrap();
    std::fs::write(work.join("docs/reproduce/report.json"), "not json").unwrap();
    let out = reproduce_command(tmp.path(), &claims, &["--quick", "--dry-run"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: docs/reproduce/report.json is not a report.json"),
        "{}",
        stderr(&out)
    );
}

/// `--studies` trains and judges only the named studies: the tests of the others say they were
/// left out, the report's command says what ran, a study no claim uses is refused by name, and
/// each claim names the commit of the claims file that added it.
#[test]
fn studies_limits_the_reproduction_and_claims_name_their_registering_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let claims = write_claims(tmp.path());
    // The second claim gains a test on tiny_bn, which --studies tiny_lr leaves out.
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&claims).unwrap()).unwrap();
    let extra = file["claims"][0]["tests"][0].clone();
    file["claims"][1]["tests"]
        .as_array_mut()
        .unwrap()
        .push(extra);
    std::fs::write(&claims, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    // The claims file in a repository of its own, committed once: that commit registers each claim.
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(tmp.path())
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "claims.json"]);
    git(&["commit", "-q", "-m", "claims"]);
    let commit = git(&["rev-parse", "--short", "HEAD"]);

    let out = reproduce_command(tmp.path(), &claims, &["--full", "--studies", "tiny_lr"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !tmp.path().join("results/tiny_bn").exists(),
        "tiny_bn trained"
    );
    assert!(tmp.path().join("results/tiny_lr").exists());
    let report = report_in(tmp.path(), "reproduce");
    assert!(
        report.contains("tiny_bn is not among --studies"),
        "{report}"
    );
    // The claim with a tiny_lr test is judged on it; the one without any is left out.
    assert!(report.contains("a small rate wins"), "{report}");
    assert!(!report.contains("BN helps the smoke net"), "{report}");
    assert!(
        report.contains("bn-exp reproduce --full --studies tiny_lr"),
        "{report}"
    );
    assert_eq!(
        report
            .matches(&format!("Registered in commit {commit} "))
            .count(),
        1,
        "{report}"
    );

    // Named but skipped by quick mode, a study's tests say quick mode left it out.
    let out = reproduce_command(tmp.path(), &claims, &["--quick", "--studies", "tiny_lr"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let quick = report_in(tmp.path(), "reproduce-quick");
    assert!(
        quick.contains("tiny_lr is not run in quick mode"),
        "{quick}"
    );
    assert!(quick.contains("tiny_bn is not among --studies"), "{quick}");

    let out = reproduce_command(
        tmp.path(),
        &claims,
        &["--full", "--studies", "tiny_x", "--dry-run"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no claim uses a study named \"tiny_x\""),
        "{}",
        stderr(&out)
    );
}
