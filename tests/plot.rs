//! `bn-exp plot` on small synthetic runs written per docs/formats.md: every figure is written
//! and decodes, is not blank, has readable text, keeps one colour per group, and damaged or
//! missing inputs give warnings or clear errors instead of panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use bn_exp::compare::{Baseline, CompareOptions, compare_runs, find_runs, load_run};
use bn_exp::plot::{ImageFormat, PlotReport, PlotRequest, make_plots};
use image::RgbImage;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{self, run_bn_exp, text};

const BLUE: (u8, u8, u8) = (0, 114, 178); // Okabe–Ito, first group (no BN)
const VERMILLION: (u8, u8, u8) = (213, 94, 0); // second group

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Settings that make one synthetic run.
struct Spec<'a> {
    placement: &'a str,
    lr: f64,
    seed: u64,
    evals: u64,
    diverge_at: Option<u64>,
}

/// A run of 20 evaluations that does not diverge.
fn spec(placement: &str, lr: f64, seed: u64) -> Spec<'_> {
    Spec {
        placement,
        lr,
        seed,
        evals: 20,
        diverge_at: None,
    }
}

fn config(spec: &Spec) -> Value {
    let name = format!("mnist_{}_lr{}_s{}", spec.placement, spec.lr, spec.seed);
    json!({
        "name": name, "study": "fixture", "seed": spec.seed, "dataset": "mnist",
        "model": {"arch": "mlp", "hidden": [100, 100, 100], "activation": "sigmoid", "dropout": 0.0},
        "bn": {"placement": spec.placement, "eps": 1e-5},
        "optim": {"kind": "sgd", "lr": spec.lr},
        "batch_size": 60, "steps": (spec.evals - 1) * 100, "eval_every": 100,
        "thresholds": [0.9, 0.95, 0.97, 0.98]
    })
}

/// Deterministic wiggle in [-1, 1] so seeds differ without a random number generator.
fn wiggle(seed: u64, i: u64) -> f64 {
    ((seed as f64 * 12.9898 + i as f64 * 78.233).sin() * 43758.5453).fract()
}

fn accuracy(spec: &Spec, step: u64) -> f64 {
    let speed = if spec.placement == "none" {
        600.0
    } else {
        200.0
    } / spec.lr.sqrt();
    let acc = 0.1 + 0.88 * (1.0 - (-(step as f64) / speed).exp());
    (acc + 0.004 * wiggle(spec.seed, step)).min(0.995)
}

fn metrics_lines(spec: &Spec) -> Vec<Value> {
    (0..spec.evals)
        .map(|i| {
            let step = i * 100;
            if spec.diverge_at.is_some_and(|d| step >= d) {
                return json!({"step": step, "train_loss": null, "test_loss": null,
                              "test_acc": 0.098, "lr": spec.lr, "elapsed_s": i as f64 * 0.1});
            }
            let acc = accuracy(spec, step);
            json!({"step": step, "train_loss": if i == 0 { Value::Null } else { json!(2.0 * (1.0 - acc)) },
                   "test_loss": 2.3 * (1.0 - acc) + 0.01, "test_acc": acc, "lr": spec.lr,
                   "elapsed_s": i as f64 * 0.1})
        })
        .collect()
}

/// A layer histogram of a normal(mu, sigma) sample of 1000 values over 20 bins in [-4, 4).
fn histogram(mu: f64, sigma: f64) -> Value {
    let (lo, hi, bins, n) = (-4.0, 4.0, 20, 1000.0);
    let width = (hi - lo) / bins as f64;
    let pdf = |x: f64| (-(x - mu).powi(2) / (2.0 * sigma * sigma)).exp() / (sigma * 2.5066);
    let counts: Vec<u64> = (0..bins)
        .map(|b| (n * width * pdf(lo + (b as f64 + 0.5) * width)).round() as u64)
        .collect();
    let inside: u64 = counts.iter().sum();
    let outside = (n as u64).saturating_sub(inside);
    json!({"lo": lo, "hi": hi, "counts": counts, "below": outside / 2, "above": outside - outside / 2})
}

fn activation_lines(spec: &Spec) -> Vec<Value> {
    let bn = spec.placement != "none";
    (0..spec.evals)
        .map(|i| {
            let t = i as f64 / spec.evals as f64;
            // Without BN the tracked input drifts and widens; with BN it stays put.
            let (mu, sigma) = if bn { (0.0, 1.0) } else { (1.5 * t, 0.5 + 1.5 * t) };
            let layers: Vec<Value> = (0..3)
                .map(|l| {
                    let m = mu * (l as f64 + 1.0) / 3.0;
                    json!({"layer": l, "units": 100, "p15": m - sigma, "p50": m, "p85": m + sigma,
                           "mean": m, "std": sigma, "hist": histogram(m, sigma)})
                })
                .collect();
            json!({"step": i * 100,
                   "tracked": {"layer": 2, "unit": 0, "p15": mu - sigma, "p50": mu, "p85": mu + sigma},
                   "layers": layers})
        })
        .collect()
}

fn summary(spec: &Spec, metrics: &[Value]) -> Value {
    let last = metrics.last().unwrap();
    let steps_to = |t: f64| {
        metrics
            .iter()
            .find(|m| m["test_loss"].is_number() && m["test_acc"].as_f64().unwrap() >= t)
            .map(|m| m["step"].clone())
            .unwrap_or(Value::Null)
    };
    json!({"name": config(spec)["name"], "study": "fixture",
           "status": if spec.diverge_at.is_some() { "diverged" } else { "finished" },
           "diverged_at": spec.diverge_at, "steps": last["step"],
           "final_test_acc": last["test_acc"], "final_test_loss": last["test_loss"],
           "steps_to": {"0.9": steps_to(0.9), "0.95": steps_to(0.95), "0.97": steps_to(0.97),
                        "0.98": steps_to(0.98)},
           "population": null, "wall_s": 1.0, "steps_per_s": 100.0})
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(path, text).unwrap();
}

/// Write a complete, well-formed run folder and return it.
fn write_run(study: &Path, spec: &Spec) -> PathBuf {
    let cfg = config(spec);
    let dir = study.join(cfg["name"].as_str().unwrap());
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let metrics = metrics_lines(spec);
    write_lines(&dir.join("metrics.jsonl"), &metrics);
    write_lines(&dir.join("activations.jsonl"), &activation_lines(spec));
    fs::write(
        dir.join("summary.json"),
        summary(spec, &metrics).to_string(),
    )
    .unwrap();
    dir
}

/// Two groups (no BN / BN before) × two seeds, 20 evaluations each.
fn placement_study(root: &Path) -> PathBuf {
    let study = root.join("placement");
    for placement in ["none", "before"] {
        for seed in [0, 1] {
            write_run(&study, &spec(placement, 1.0, seed));
        }
    }
    study
}

/// Learning-rate sweep: two placements × three rates × two seeds; no BN at the top rate
/// diverges in one seed.
fn lr_sweep_study(root: &Path) -> PathBuf {
    let study = root.join("lr_sweep");
    for placement in ["none", "before"] {
        for lr in [0.1, 0.5, 2.0] {
            for seed in [0, 1] {
                let diverge_at = (placement == "none" && lr == 2.0 && seed == 1).then_some(400);
                write_run(
                    &study,
                    &Spec {
                        placement,
                        lr,
                        seed,
                        evals: 12,
                        diverge_at,
                    },
                );
            }
        }
    }
    study
}

/// Santurkar et al.'s measures of one run: 20 probes, two weight layers, seeds a little apart.
/// At one probe β-smoothness is 1e-30, thirty decades below the rest.
fn measure_lines(spec: &Spec) -> Vec<Value> {
    (0..20)
        .map(|i| {
            let w = 1.0 + 0.2 * wiggle(spec.seed, i);
            let decay = (-(i as f64) / 8.0).exp();
            let ics = |layer: usize| {
                json!({"layer": layer, "name": format!("fc{}", layer + 1), "l2": w * decay,
                       "relative": 0.1 * w, "cosine": 0.9 - 0.05 * w})
            };
            json!({"step": i * 50, "lr": spec.lr, "loss": 2.0 * decay, "grad_norm": w,
                   "ics": [ics(0), ics(1)], "step_sizes": [0.5, 1.0], "losses": [1.0, 1.2],
                   "loss_min": decay * w, "loss_max": 2.0 * decay * w, "loss_range": decay * w,
                   "grad_change": [0.1, 0.2], "grad_change_min": 0.1 * w,
                   "grad_change_max": 0.2 * w,
                   "beta_smoothness": if i == 5 { 1e-30 } else { 3.0 * w }})
        })
        .collect()
}

/// Two groups (no BN / BN before) × `seeds` seeds, each with `measures.jsonl`.
fn measured_study(root: &Path, seeds: u64) -> PathBuf {
    let study = root.join(format!("measured_{seeds}"));
    for placement in ["none", "before"] {
        for seed in 0..seeds {
            let spec = spec(placement, 1.0, seed);
            let dir = write_run(&study, &spec);
            write_lines(&dir.join("measures.jsonl"), &measure_lines(&spec));
        }
    }
    study
}

/// A run with every kind of damage: last metrics line cut mid-JSON, a `null` and a bare `NaN`,
/// no activations.jsonl, no summary.json.
fn damaged_run(root: &Path) -> PathBuf {
    let dir = write_run(&root.join("damaged"), &spec("none", 1.0, 0));
    fs::remove_file(dir.join("activations.jsonl")).unwrap();
    fs::remove_file(dir.join("summary.json")).unwrap();
    let mut text = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text = text.replacen("\"test_loss\":", "\"test_loss\":null,\"was\":", 1);
    text.push_str("{\"step\": 2000, \"test_loss\": NaN, \"test_acc\": 0.5}\n");
    text.push_str("{\"step\": 2100, \"train_loss\": 0.1, \"test_lo");
    fs::write(dir.join("metrics.jsonl"), text).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn request(inputs: Vec<PathBuf>, out: &Path, format: ImageFormat) -> PlotRequest {
    PlotRequest {
        inputs,
        out: out.to_path_buf(),
        format,
        write_index: false,
    }
}

fn plot(inputs: Vec<PathBuf>, out: &Path) -> PlotReport {
    make_plots(&request(inputs, out, ImageFormat::Png)).expect("plotting failed")
}

fn png(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
        .to_rgb8()
}

/// Pixels of exactly `colour` within the fractional box `[x0, x1) × [y0, y1)` of the image.
fn count_colour(img: &RgbImage, colour: (u8, u8, u8), bx: (f64, f64), by: (f64, f64)) -> usize {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let mut n = 0;
    for y in (by.0 * h) as u32..(by.1 * h) as u32 {
        for x in (bx.0 * w) as u32..(bx.1 * w) as u32 {
            let p = img.get_pixel(x, y).0;
            n += usize::from((p[0], p[1], p[2]) == colour);
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn placement_study_writes_every_figure_as_a_decodable_png() {
    let tmp = TempDir::new().unwrap();
    let study = placement_study(tmp.path());
    let out = tmp.path().join("out");
    let report = plot(vec![study], &out);
    let expected = [
        "fig1a_accuracy.png",
        "fig1bc_percentiles.png",
        "distributions_no_BN.png",
        "distributions_BN_before_sigmoid.png",
    ];
    let written: Vec<String> = report
        .figures
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        written, expected,
        "no study plots without an lr or batch-size sweep"
    );
    for name in expected {
        let img = png(&out.join(name));
        let (w, h) = img.dimensions();
        assert!((1200..=1600).contains(&w), "{name}: width {w}");
        assert!((700..=1100).contains(&h), "{name}: height {h}");
    }
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn figures_are_not_blank_and_titles_render() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    plot(vec![placement_study(tmp.path())], &out);
    let fig1a = png(&out.join("fig1a_accuracy.png"));
    // Inside the accuracy panel (left half, below the title, above the legend).
    for colour in [BLUE, VERMILLION] {
        let n = count_colour(&fig1a, colour, (0.08, 0.48), (0.15, 0.75));
        assert!(n > 100, "fig1a accuracy panel has {n} pixels of {colour:?}");
        let n = count_colour(&fig1a, colour, (0.58, 0.98), (0.15, 0.75));
        assert!(n > 100, "fig1a loss panel has {n} pixels of {colour:?}");
    }
    for name in [
        "fig1a_accuracy.png",
        "fig1bc_percentiles.png",
        "distributions_no_BN.png",
    ] {
        let img = png(&out.join(name));
        let dark = (0..50)
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|c| *c < 80))
            .count();
        assert!(dark > 200, "{name}: title area has only {dark} dark pixels");
    }
}

#[test]
fn each_group_keeps_its_colour_in_every_figure() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    let report = plot(vec![placement_study(tmp.path())], &out);
    let labels: Vec<(&str, (u8, u8, u8))> = report
        .groups
        .iter()
        .map(|g| (g.label.as_str(), g.rgb))
        .collect();
    assert_eq!(labels, [("no BN", BLUE), ("BN before sigmoid", VERMILLION)]);

    let panels = png(&out.join("fig1bc_percentiles.png"));
    let (left, right, rows) = ((0.0, 0.5), (0.5, 1.0), (0.1, 0.8));
    assert!(count_colour(&panels, BLUE, left, rows) > 100);
    assert_eq!(count_colour(&panels, VERMILLION, left, rows), 0);
    assert!(count_colour(&panels, VERMILLION, right, rows) > 100);
    assert_eq!(count_colour(&panels, BLUE, right, rows), 0);

    for (file, own, other) in [
        ("distributions_no_BN.png", BLUE, VERMILLION),
        ("distributions_BN_before_sigmoid.png", VERMILLION, BLUE),
    ] {
        let img = png(&out.join(file));
        assert!(
            count_colour(&img, own, (0.0, 1.0), (0.0, 1.0)) > 500,
            "{file}"
        );
        assert_eq!(
            count_colour(&img, other, (0.0, 1.0), (0.0, 1.0)),
            0,
            "{file}"
        );
    }
}

#[test]
fn svg_output_holds_svg_and_title_text() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("svg");
    let report = make_plots(&request(
        vec![placement_study(tmp.path())],
        &out,
        ImageFormat::Svg,
    ))
    .unwrap();
    assert_eq!(report.figures.len(), 4);
    for figure in &report.figures {
        assert_eq!(figure.path.extension().unwrap(), "svg");
        let svg = fs::read_to_string(&figure.path).unwrap();
        assert!(svg.contains("<svg"), "{}", figure.path.display());
    }
    let fig1a = fs::read_to_string(out.join("fig1a_accuracy.svg")).unwrap();
    assert!(fig1a.contains("Figure 1(a)"));
    assert!(fig1a.contains("test accuracy (%)"));
    let fig1bc = fs::read_to_string(out.join("fig1bc_percentiles.svg")).unwrap();
    assert!(fig1bc.contains("Figure 1(b, c)"));
}

#[test]
fn measure_figures_speak_of_a_std_band_only_where_one_is_drawn() {
    let tmp = TempDir::new().unwrap();
    for (seeds, shaded) in [(2, true), (1, false)] {
        let out = tmp.path().join(format!("svg_{seeds}"));
        let study = measured_study(tmp.path(), seeds);
        let report = make_plots(&request(vec![study], &out, ImageFormat::Svg)).unwrap();
        let figure = report
            .figures
            .iter()
            .find(|f| f.path.ends_with("measures.svg"));
        let caption = &figure.expect("no measures figure").caption;
        let measures = fs::read_to_string(out.join("measures.svg")).unwrap();
        let landscape = fs::read_to_string(out.join("measures_landscape.svg")).unwrap();
        // The legend entry, the subtitle and the caption follow the band; the landscape
        // figure shades ranges over η, never a std.
        let std_legend = measures.contains("±1 std across seeds");
        assert_eq!(std_legend, shaded, "{seeds} seeds");
        assert_eq!(measures.contains("shaded ±1 std"), shaded, "{seeds} seeds");
        assert_eq!(caption.contains("±1 std"), shaded, "{seeds} seeds");
        assert!(!landscape.contains("±1 std"), "{seeds} seeds");
        for text in [&measures, &landscape] {
            let one_seed = text.contains("one seed per group");
            assert_eq!(one_seed, !shaded, "{seeds} seeds");
            // One legend line per group.
            for group in &report.groups {
                let lines = text.matches(group.label.as_str()).count();
                assert_eq!(lines, 1, "{}", group.label);
            }
        }
        // β-smoothness of 1e-30 among values near 3: its log axis keeps 12 decades, so no
        // tick is labelled 1e-13 or below.
        for exponent in 13..=31 {
            let tick = format!("\n1e-{exponent}\n");
            assert!(!measures.contains(&tick), "a tick at 1e-{exponent}");
        }
    }
}

#[test]
fn lr_sweep_draws_study_plots_and_marks_the_diverged_run() {
    let tmp = TempDir::new().unwrap();
    let study = lr_sweep_study(tmp.path());
    let out = tmp.path().join("out");
    let report = plot(vec![study.clone()], &out);
    for name in ["study_final_acc_vs_lr.png", "study_steps_to_0.97_vs_lr.png"] {
        let img = png(&out.join(name));
        assert!(img.width() >= 1000 && img.height() >= 700, "{name}");
        for colour in [BLUE, VERMILLION] {
            let n = count_colour(&img, colour, (0.08, 0.97), (0.12, 0.8));
            assert!(n > 100, "{name}: {n} pixels of {colour:?}");
        }
    }
    assert!(!out.join("study_final_acc_vs_batch_size.png").exists());
    assert_eq!(report.groups.len(), 6);
    assert_eq!(report.groups[0].label, "no BN, lr 0.1");

    let svg_out = tmp.path().join("svg");
    make_plots(&request(vec![study], &svg_out, ImageFormat::Svg)).unwrap();
    let svg = fs::read_to_string(svg_out.join("study_final_acc_vs_lr.svg")).unwrap();
    assert!(svg.contains("diverged"), "legend lacks the diverged entry");
    assert!(svg.contains("no BN") && svg.contains("BN before sigmoid"));
}

#[test]
fn study_mode_writes_index_into_study_plots() {
    let tmp = TempDir::new().unwrap();
    let study = lr_sweep_study(tmp.path());
    let req = PlotRequest::study(study.clone());
    assert_eq!(req.out, study.join("plots"));
    let report = make_plots(&req).unwrap();
    let index = fs::read_to_string(study.join("plots/index.md")).unwrap();
    assert_eq!(report.index, Some(study.join("plots/index.md")));
    for figure in &report.figures {
        let file = figure
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(index.contains(&format!("]({file})")), "index lacks {file}");
        assert!(index.contains(&figure.caption));
    }
    // Plotting again does not take its own output folder for a run.
    let again = make_plots(&req).unwrap();
    assert_eq!(again.figures.len(), report.figures.len());
}

/// The folder names of runs, in name order.
fn folder_names<'a>(dirs: impl Iterator<Item = &'a Path>) -> Vec<String> {
    let mut names: Vec<String> = dirs
        .map(|dir| dir.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `compare`'s table and `plot`'s figures of the same runs have the same groups (src/groups.rs):
/// the same runs in each, in the same order (no BN first, not the folder-name order the runs are
/// read in), under the same labels.
#[test]
fn the_table_and_the_figures_agree_on_groups_and_labels() {
    let tmp = TempDir::new().unwrap();
    let study = lr_sweep_study(tmp.path());
    let report = plot(vec![study.clone()], &tmp.path().join("out"));
    let found = find_runs(std::slice::from_ref(&study)).unwrap();
    let records: Vec<_> = found.done.iter().map(|d| load_run(d).unwrap()).collect();
    let options = CompareOptions {
        thresholds: vec![0.9],
        baseline: Baseline::FirstGroup,
    };
    let table = compare_runs(&records, &options).unwrap();

    let table_groups: Vec<(String, Vec<String>)> = table
        .groups
        .iter()
        .map(|g| {
            let dirs = g.runs.iter().map(|r| Path::new(&r.dir));
            (g.label.clone(), folder_names(dirs))
        })
        .collect();
    let figure_groups: Vec<(String, Vec<String>)> = report
        .groups
        .iter()
        .map(|g| {
            (
                g.label.clone(),
                folder_names(g.runs.iter().map(PathBuf::as_path)),
            )
        })
        .collect();
    assert_eq!(table_groups, figure_groups);
    let labels: Vec<&str> = table_groups.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "no BN, lr 0.1",
            "no BN, lr 0.5",
            "no BN, lr 2",
            "BN before sigmoid, lr 0.1",
            "BN before sigmoid, lr 0.5",
            "BN before sigmoid, lr 2",
        ]
    );
    assert!(table_groups.iter().all(|(_, runs)| runs.len() == 2));
}

#[test]
fn damaged_run_is_plotted_for_what_is_there_with_warnings() {
    let tmp = TempDir::new().unwrap();
    let damaged = damaged_run(tmp.path());
    let healthy = write_run(&tmp.path().join("damaged"), &spec("before", 1.0, 0));
    let out = tmp.path().join("out");
    let report = plot(vec![damaged.parent().unwrap().to_path_buf()], &out);
    assert!(out.join("fig1a_accuracy.png").exists());
    assert!(
        out.join("fig1bc_percentiles.png").exists(),
        "the healthy run still has percentiles"
    );
    assert!(out.join("distributions_BN_before_sigmoid.png").exists());
    assert!(!out.join("distributions_no_BN.png").exists());
    let warned = |needle: &str| report.warnings.iter().any(|w| w.contains(needle));
    assert!(warned("not valid JSON"), "{:?}", report.warnings);
    assert!(
        warned("activations.jsonl: missing"),
        "{:?}",
        report.warnings
    );
    assert!(warned("no summary.json"), "{:?}", report.warnings);
    assert!(warned("test_loss"), "{:?}", report.warnings);
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.contains(&*healthy.to_string_lossy()))
    );
}

#[test]
fn binary_on_a_damaged_run_exits_zero_with_warnings() {
    let tmp = TempDir::new().unwrap();
    let run = damaged_run(tmp.path());
    let output = run_bn_exp(&["plot", run.to_str().unwrap()]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "exit {:?}\n{stderr}",
        output.status
    );
    assert!(stderr.contains("warning:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("wrote"), "{stdout}");
    assert!(run.join("plots/fig1a_accuracy.png").exists());
}

#[test]
fn missing_or_empty_inputs_fail_with_a_clear_message() {
    let tmp = TempDir::new().unwrap();
    let empty = tmp.path().join("empty_study");
    fs::create_dir_all(empty.join("not_a_run")).unwrap();
    let unreadable = tmp.path().join("nothing_drawable/run");
    fs::create_dir_all(&unreadable).unwrap();
    fs::write(unreadable.join("metrics.jsonl"), "{\"step\": 0, \"test_a").unwrap();
    let missing = tmp.path().join("does_not_exist");
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["plot", missing.to_str().unwrap()], "does not exist"),
        (vec!["plot", empty.to_str().unwrap()], "no run folders"),
        (
            vec!["plot", unreadable.to_str().unwrap()],
            "nothing could be drawn",
        ),
        (vec!["plot"], "nothing to plot"),
    ];
    for (args, message) in cases {
        let output = run_bn_exp(&args);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn extreme_and_out_of_contract_values_neither_panic_nor_hang() {
    // Spans near f64::MAX once sent plotters' tick search into an endless loop.
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("extreme");
    fs::create_dir_all(&run).unwrap();
    fs::write(
        run.join("config.json"),
        r#"{"name": "x", "seed": 0, "optim": {"lr": 1e300}}"#,
    )
    .unwrap();
    let metrics = [
        r#"{"step": 0, "test_loss": 1e-300, "test_acc": 5.0}"#,
        r#"{"step": 10, "test_loss": 1e300, "test_acc": -3}"#,
        r#"{"step": 20, "test_loss": 0.5, "test_acc": 0.5}"#,
        r#"{"step": 18446744073709551615, "test_loss": 1.0, "test_acc": 0.9}"#,
    ];
    fs::write(run.join("metrics.jsonl"), metrics.join("\n")).unwrap();
    let activations = [
        r#"{"step": 0, "tracked": {"p15": -1e308, "p50": 0, "p85": 1e308},
            "layers": [{"layer": 0, "hist": {"lo": -1e308, "hi": 1e308, "counts": [1, 2]}}]}"#,
        r#"{"step": 20, "tracked": {"p15": 1, "p50": 2, "p85": 3},
            "layers": [{"layer": 0, "hist": {"lo": 0, "hi": 1e-300, "counts": [1e300]}},
                       {"layer": 1, "hist": {"lo": -1, "hi": 1, "counts": [3, "x"], "below": -5}}]}"#,
    ];
    let activations: Vec<String> = activations.iter().map(|l| l.replace('\n', " ")).collect();
    fs::write(run.join("activations.jsonl"), activations.join("\n")).unwrap();
    fs::write(
        run.join("summary.json"),
        r#"{"status": "diverged", "diverged_at": "x"}"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    // In a child process with a deadline: a hang fails the test instead of stalling the suite.
    let output = bn_exp_within(
        &[
            "plot",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(120),
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.join("fig1a_accuracy.png").exists());
    assert!(out.join("fig1bc_percentiles.png").exists());
    assert!(stderr.contains("out of range"), "{stderr}");
}

/// Run bn-exp and wait at most `limit`; past it, kill the child and fail the test.
fn bn_exp_within(args: &[&str], limit: std::time::Duration) -> Output {
    // Output to files, not pipes: a child that filled an undrained pipe would block and look
    // like a hang.
    let logs = TempDir::new().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = common::bn_exp()
        .args(args)
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot run bn-exp");
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "bn-exp {args:?} still running after {limit:?}: it hangs. stderr: {}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    }
}

/// The small-batch study's shape: BN over statistics batches of 2, 4 and 60 (seeds 0 and 1),
/// and Layer Norm with `norm.stats_batch` null, a flat reference.
fn stats_batch_study(root: &Path) -> PathBuf {
    let study = root.join("small_batch");
    let write = |kind: &str, stats_batch: Value, lr: f64, seed: u64| {
        let spec = spec("before", lr, seed);
        let dir = write_run(&study, &spec);
        let renamed = study.join(format!("{kind}_{stats_batch}_s{seed}"));
        fs::rename(&dir, &renamed).unwrap();
        let mut cfg = config(&spec);
        cfg.as_object_mut().unwrap().remove("bn");
        cfg["name"] = json!(renamed.file_name().unwrap().to_str().unwrap());
        cfg["optim"]["lr"] = json!(1.0);
        cfg["norm"] = json!({"kind": kind, "placement": "before", "stats_batch": stats_batch});
        fs::write(renamed.join("config.json"), cfg.to_string()).unwrap();
    };
    for seed in [0, 1] {
        // The accuracy curve follows `lr`: smaller statistics batches train slower here.
        for (k, lr) in [(2, 0.05), (4, 0.2), (60, 1.0)] {
            write("batch", json!(k), lr, seed);
        }
        write("layer", Value::Null, 0.5, seed);
    }
    study
}

#[test]
fn statistics_batch_sweep_draws_bn_as_a_line_and_layer_norm_as_a_flat_reference() {
    let tmp = TempDir::new().unwrap();
    let study = stats_batch_study(tmp.path());
    let out = tmp.path().join("out");
    let report = plot(vec![study.clone()], &out);
    let name = "study_final_acc_vs_stats_batch.png";
    let img = png(&out.join(name));
    // BN (the first series: blue) and the flat Layer Norm reference (vermillion) both drawn.
    for colour in [BLUE, VERMILLION] {
        let n = count_colour(&img, colour, (0.08, 0.97), (0.12, 0.8));
        assert!(n > 100, "{name}: {n} pixels of {colour:?}");
    }
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.contains("norm.stats_batch")),
        "Layer Norm's null statistics batch must not be reported as missing: {:?}",
        report.warnings
    );
    let svg_out = tmp.path().join("svg");
    make_plots(&request(vec![study], &svg_out, ImageFormat::Svg)).unwrap();
    let svg = fs::read_to_string(svg_out.join("study_final_acc_vs_stats_batch.svg")).unwrap();
    assert!(
        svg.contains("no batch statistics: flat"),
        "legend lacks the flat reference"
    );
    assert!(svg.contains("Layer Norm") && svg.lines().any(|l| l.trim() == "BN"));
}
