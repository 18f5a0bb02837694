//! `bn-exp bench`: time the training step of each workload and the Figure 1 study.
//!
//! Each step workload runs in a child process of its own (`bn-exp bench --worker W`), so that
//! its peak memory (VmHWM) is its own and one workload's allocations do not warm the next.
//! Inputs are random tensors of the real shapes: a step's cost does not depend on pixel values,
//! and the bench then needs no data set. Reported: the median of `reps` timed steps after
//! warm-up, with min and max, because this machine is shared and noisy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::backend::{self, DeviceKind};
use crate::config::{Config, config_from_value};
use crate::model::CLASSES;
use crate::progress::Progress;

pub mod estimate;
use crate::rng::Rng;

/// The step workloads, in the order they run: the shipped nets, then the paper's MLP with each
/// other normalisation layer before its sigmoids, timed against `mlp-bn` (see [`NORM_WORKLOADS`]).
pub const STEP_WORKLOADS: [&str; 11] = [
    "mlp",
    "mlp-bn",
    "cnn",
    "cnn-bn",
    "mlp-renorm",
    "mlp-layer",
    "mlp-group",
    "mlp-weight",
    "mlp-weight-mean-only",
    "mlp-bn-stats4",
    "mlp-renorm-stats4",
];

/// The paper's MLP with another normalisation layer: workload name, a label people read, and the
/// config overrides on top of `mlp-bn`. Each step's median is printed against BN's, measured in
/// the same invocation; the target is at most [`NORM_STEP_TARGET`] times BN's step.
pub const NORM_WORKLOADS: [(&str, &str, &str); 7] = [
    ("mlp-renorm", "Batch Renorm", r#"{"kind": "renorm"}"#),
    ("mlp-layer", "Layer Norm", r#"{"kind": "layer"}"#),
    (
        "mlp-group",
        "Group Norm (4 groups)",
        r#"{"kind": "group", "groups": 4}"#,
    ),
    ("mlp-weight", "Weight Norm", r#"{"kind": "weight"}"#),
    (
        "mlp-weight-mean-only",
        "Weight Norm + mean-only BN",
        r#"{"kind": "weight", "mean_only": true}"#,
    ),
    (
        "mlp-bn-stats4",
        "BN, statistics over 4 examples",
        r#"{"stats_batch": 4}"#,
    ),
    (
        "mlp-renorm-stats4",
        "Batch Renorm, statistics over 4",
        r#"{"kind": "renorm", "stats_batch": 4}"#,
    ),
];

/// The workloads that train whole runs rather than time steps (CPU only): the Figure 1 study
/// and the cost of the measures.
pub const RUN_WORKLOADS: [&str; 2] = [FIG1, MEASURES];
const FIG1: &str = "fig1";
const MEASURES: &str = "measures";

/// The most a normalisation layer may cost, as a multiple of BN's step on the paper's MLP.
pub const NORM_STEP_TARGET: f64 = 1.25;

/// One workload's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    pub workload: String,
    pub batch_size: usize,
    pub reps: usize,
    pub median_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub steps_per_s: f64,
    pub peak_rss_mb: f64,
    pub threads: usize,
    /// Burn's backend ("flex", "wgpu") and the device it ran on, with every figure.
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub device: String,
}

/// What Santurkar et al.'s measures cost: the paper's MLP with BN trained twice in a row, one
/// thread each, without measures and with them every [`MEASURES_EVERY`] steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasuresCost {
    pub steps: u64,
    pub every: u64,
    /// `wall_s` of each run's summary (training and evaluations, not process start-up).
    pub plain_s: f64,
    pub measured_s: f64,
    pub ratio: f64,
}

/// Steps of each run of the measures bench, and how often it takes the measures.
pub const MEASURES_STEPS: u64 = 5000;
pub const MEASURES_EVERY: u64 = 100;
/// The most the measures may cost, as a multiple of the run without them.
pub const MEASURES_TARGET: f64 = 1.5;

/// The Figure 1 study: both MLPs, 50,000 steps each, run side by side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fig1Result {
    pub projected_s: Option<f64>,
    pub measured_s: f64,
    pub steps: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub backend: String,
    /// The device every step figure ran on: "CPU (flex, 2 threads)" or the GPU adapter's name.
    #[serde(default)]
    pub device: String,
    pub steps: Vec<StepResult>,
    pub fig1: Option<Fig1Result>,
    pub measures: Option<MeasuresCost>,
    pub pytorch: Option<serde_json::Value>,
}

/// The shipped config behind each workload, embedded so the bench needs no file.
const MLP_BN: &str = include_str!("../configs/mnist_mlp_sigmoid_bn.json");
const MLP_NOBN: &str = include_str!("../configs/mnist_mlp_sigmoid_nobn.json");
const CNN_BN: &str = include_str!("../configs/cifar10_cnn_relu_bn.json");
const CNN_NOBN: &str = include_str!("../configs/cifar10_cnn_relu_nobn.json");

/// The config a step workload trains (the shipped configs' shapes, init and optimiser).
pub fn workload_config(name: &str) -> Result<Config> {
    if let Some((_, _, norm)) = NORM_WORKLOADS.iter().find(|(w, _, _)| *w == name) {
        let mut value: serde_json::Value = serde_json::from_str(MLP_BN)?;
        let norm: serde_json::Value = serde_json::from_str(norm)?;
        for (key, v) in norm
            .as_object()
            .context("workload overrides are an object")?
        {
            value["norm"][key] = v.clone();
        }
        return config_from_value(value);
    }
    let (base, bn) = match name {
        "mlp" => (MLP_NOBN, false),
        "mlp-bn" => (MLP_BN, true),
        "cnn" => (CNN_NOBN, false),
        "cnn-bn" => (CNN_BN, true),
        other => bail!(
            "unknown workload {other:?}; choose from {}, {FIG1}",
            STEP_WORKLOADS.join(", ")
        ),
    };
    let config = config_from_value(serde_json::from_str(base)?)?;
    ensure!(
        config.norm.has_norm() == bn,
        "workload {name} config has the wrong BN placement"
    );
    Ok(config)
}

/// One `bn-exp bench`, resolved from its flags.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// Timed steps per workload (after warm-up).
    pub reps: usize,
    /// Workloads to run ([`STEP_WORKLOADS`], [`RUN_WORKLOADS`]); `None`: all of them.
    pub only: Option<Vec<String>>,
    /// Also write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Also time the same workloads in PyTorch and print the ratios.
    pub compare_pytorch: bool,
    /// Threads for each step workload; `None`: `$RAYON_NUM_THREADS`, else every core.
    pub threads: Option<usize>,
    /// The data folder for the Figure 1 study (MNIST).
    pub data_dir: PathBuf,
    /// Where the step workloads run. On the GPU only step workloads are timed.
    pub device: DeviceKind,
}

/// Run the bench, printing each figure as it is measured, and return them all.
pub fn bench(args: &BenchRequest, progress: &dyn Progress) -> Result<BenchReport> {
    ensure!(args.reps > 0, "--reps must be at least 1");
    if let Some(only) = &args.only {
        for name in only {
            ensure!(
                STEP_WORKLOADS.contains(&name.as_str()) || RUN_WORKLOADS.contains(&name.as_str()),
                "unknown workload {name:?} in --only; choose from {}, {}",
                STEP_WORKLOADS.join(", "),
                RUN_WORKLOADS.join(", ")
            );
        }
    }
    let on_gpu = args.device == DeviceKind::Gpu;
    let is_run = |w: &String| RUN_WORKLOADS.contains(&w.as_str());
    let wanted: Vec<String> = args.only.clone().unwrap_or_else(|| {
        let whole_runs = if on_gpu { &[][..] } else { &RUN_WORKLOADS[..] };
        STEP_WORKLOADS
            .iter()
            .chain(whole_runs)
            .map(|s| s.to_string())
            .collect()
    });
    ensure!(
        !on_gpu || !wanted.iter().any(is_run),
        "{} are timed on the CPU only; on --device gpu, time the step workloads ({})",
        RUN_WORKLOADS.join(" and "),
        STEP_WORKLOADS.join(", ")
    );
    let threads = args.threads.unwrap_or_else(backend::threads);
    // Name the device in this process too: a missing GPU fails here, once, with its remedy.
    // Not `device_name` on the CPU: the workers' threads, which `--threads` sets, are named.
    let device = match args.device {
        DeviceKind::Cpu => format!("CPU (flex, {threads} threads)"),
        DeviceKind::Gpu => backend::device_name(DeviceKind::Gpu)?,
    };
    let backend_name = args.device.backend_name();
    let mut report = BenchReport {
        backend: backend_name.into(),
        device: device.clone(),
        steps: Vec::new(),
        fig1: None,
        measures: None,
        pytorch: None,
    };
    progress.result(&format!("bn-exp bench on {backend_name}: {device}"));
    progress.result(&format!(
        "{:<20} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10}  {}",
        "workload",
        "batch",
        "median µs",
        "min µs",
        "max µs",
        "steps/s",
        "peak MB",
        "backend: device"
    ));
    for w in wanted.iter().filter(|w| !is_run(w)) {
        let r = run_worker(w, args.reps, threads, args.device)?;
        progress.result(&format!(
            "{:<20} {:>6} {:>12.0} {:>12.0} {:>12.0} {:>10.1} {:>10.1}  {}: {}",
            r.workload,
            r.batch_size,
            r.median_us,
            r.min_us,
            r.max_us,
            r.steps_per_s,
            r.peak_rss_mb,
            r.backend,
            r.device
        ));
        report.steps.push(r);
    }
    for line in norm_ratio_lines(&report.steps) {
        progress.result(&line);
    }
    if wanted.iter().any(|w| w == FIG1) {
        let fig1 = time_fig1(&report.steps, &args.data_dir)?;
        if let Some(p) = fig1.projected_s {
            progress.result(&format!(
                "fig1: projected {p:.1} s from the step medians (two nets in parallel)"
            ));
        }
        progress.result(&format!(
            "fig1: measured {:.1} s wall for both nets, {} steps each, run side by side",
            fig1.measured_s, fig1.steps
        ));
        report.fig1 = Some(fig1);
    }
    if wanted.iter().any(|w| w == MEASURES) {
        let cost = time_measures(&args.data_dir)?;
        let verdict = if cost.ratio <= MEASURES_TARGET {
            "within target"
        } else {
            "OVER target"
        };
        progress.result(&format!(
            "measures: the paper's MLP with BN, {} steps: {:.1} s without, {:.1} s with the \
             measures every {} steps, {:.2}x (target ≤ {MEASURES_TARGET:.1}x)  {verdict}",
            cost.steps, cost.plain_s, cost.measured_s, cost.every, cost.ratio
        ));
        report.measures = Some(cost);
    }
    if args.compare_pytorch {
        report.pytorch = compare_pytorch(&report, args.reps, threads, args.device, progress)?;
    }
    if let Some(path) = &args.json {
        crate::run::write_json_atomic(path, &report)?;
        progress.result(&format!("wrote {}", path.display()));
    }
    Ok(report)
}

/// Each normalisation workload's step against BN's, from the same invocation's medians, with
/// the target; empty when `mlp-bn` or every normalisation workload was left out.
pub fn norm_ratio_lines(steps: &[StepResult]) -> Vec<String> {
    let Some(bn) = steps.iter().find(|s| s.workload == "mlp-bn") else {
        return Vec::new();
    };
    let rows: Vec<String> = NORM_WORKLOADS
        .iter()
        .filter_map(|(name, label, _)| {
            let s = steps.iter().find(|s| s.workload == *name)?;
            let ratio = s.median_us / bn.median_us;
            let verdict = if ratio <= NORM_STEP_TARGET {
                "within target"
            } else {
                "OVER target"
            };
            Some(format!(
                "{label:<34} {:>10.0} {:>8.2}x  {verdict}",
                s.median_us, ratio
            ))
        })
        .collect();
    if rows.is_empty() {
        return rows;
    }
    let mut lines = vec![format!(
        "step time against BN's on the paper's MLP (BN: {:.0} µs; target ≤ {NORM_STEP_TARGET:.2}x)",
        bn.median_us
    )];
    lines.push(format!(
        "{:<34} {:>10} {:>9}",
        "layer", "median µs", "ratio"
    ));
    lines.extend(rows);
    lines
}

/// Time `reps` steps of a workload in a child process on one thread, as `compare` runs each of
/// several runs at once (`reproduce` estimates its time from these).
pub fn time_steps_on_one_thread(workload: &str, reps: usize) -> Result<StepResult> {
    run_worker(workload, reps, 1, DeviceKind::Cpu)
}

/// `kind` as a `--device` value: bn-exp's own (`cpu`, `gpu`), or with `pytorch` that of
/// `scripts/pytorch_reference.py` (`cpu`, `cuda`).
fn device_flag(kind: DeviceKind, pytorch: bool) -> &'static str {
    match (kind, pytorch) {
        (DeviceKind::Cpu, _) => "cpu",
        (DeviceKind::Gpu, false) => "gpu",
        (DeviceKind::Gpu, true) => "cuda",
    }
}

/// Run one workload in a child process and read its JSON line.
fn run_worker(
    workload: &str,
    reps: usize,
    threads: usize,
    device: DeviceKind,
) -> Result<StepResult> {
    let exe = std::env::current_exe().context("cannot find the bn-exp executable")?;
    let out = Command::new(exe)
        .args(["bench", "--worker", workload, "--reps", &reps.to_string()])
        .args(["--device", device_flag(device, false)])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .context("cannot start a bench worker")?;
    ensure!(
        out.status.success(),
        "bench worker {workload} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).context("bench worker printed no result")
}

/// Time `reps` training steps (after warm-up) of one workload in this process, on `kind`.
/// A timed step ends with the loss read back to the host, as in training, so a GPU's queued
/// kernels are all inside it.
pub fn time_steps(workload: &str, reps: usize, kind: DeviceKind) -> Result<StepResult> {
    ensure!(reps > 0, "--reps must be at least 1");
    let mut config = workload_config(workload)?;
    config.device = kind;
    let device = backend::device(kind)?;
    let train_device = backend::train_device(kind)?;
    let features = config.dataset.features();
    let b = config.batch_size;
    // A pool of random examples to gather batches from, as training does.
    let pool = 1024.max(b);
    let mut rng = Rng::new(1);
    let images: Vec<f32> = (0..pool * features).map(|_| rng.normal() as f32).collect();
    let labels: Vec<u8> = (0..pool).map(|_| rng.below(CLASSES) as u8).collect();
    let (channels, side) = config.dataset.image_shape();
    let split = crate::train::DeviceSplit::upload(
        crate::data::Split {
            images,
            labels,
            len: pool,
            channels,
            height: side,
            width: side,
        },
        &device,
        backend::max_buffer_bytes(kind),
    );
    let mut net = config.build_net(&train_device);
    let mut optim = crate::train::build_optimizer(&config);
    let warmup = (reps / 5).clamp(2, 20);
    let mut times = Vec::with_capacity(reps);
    for i in 0..warmup + reps {
        let idx: Vec<usize> = (0..b).map(|_| rng.below(pool)).collect();
        let t0 = Instant::now();
        let (x, y) = split.batch(&idx, &device);
        let (_, next) = crate::train::sgd_step(
            net,
            &mut optim,
            x,
            y,
            crate::train::StepSeeds::default(),
            config.optim.lr,
        )?;
        net = next.context("bench loss is not finite")?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(StepResult {
        workload: workload.into(),
        batch_size: b,
        reps,
        median_us: median,
        min_us: times[0],
        max_us: times[times.len() - 1],
        steps_per_s: 1e6 / median,
        peak_rss_mb: peak_rss_mb(),
        threads: backend::threads(),
        backend: kind.backend_name().into(),
        device: backend::device_name(kind)?,
    })
}

/// Peak resident memory of this process (Linux VmHWM), in MB; 0 where unknown.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Train both Figure 1 nets (full length) side by side, one thread each, and time the wall.
fn time_fig1(steps: &[StepResult], data_dir: &Path) -> Result<Fig1Result> {
    let tmp = std::env::temp_dir().join(format!("bn-exp-bench-fig1-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let nets = [
        ("mnist_mlp_sigmoid_bn", MLP_BN),
        ("mnist_mlp_sigmoid_nobn", MLP_NOBN),
    ];
    let bn = workload_config("mlp-bn")?;
    let t0 = Instant::now();
    // Start both before waiting for either, so that they run side by side.
    let mut children = Vec::new();
    for (name, text) in nets {
        let cfg_path = tmp.join(format!("{name}.json"));
        std::fs::write(&cfg_path, text)?;
        let child = start_train(&cfg_path, &[], &tmp.join(name), data_dir)
            .context("cannot start a Figure 1 run")?;
        children.push((name, child));
    }
    let finished: Vec<Result<()>> = children
        .into_iter()
        .map(|(name, child)| wait_train(child, &format!("Figure 1 run {name}")))
        .collect();
    let measured_s = t0.elapsed().as_secs_f64();
    finished.into_iter().collect::<Result<()>>()?;
    let _ = std::fs::remove_dir_all(&tmp);
    let step_of = |w: &str| steps.iter().find(|s| s.workload == w).map(|s| s.median_us);
    let projected_s = match (step_of("mlp"), step_of("mlp-bn")) {
        (Some(a), Some(b)) => Some(a.max(b) * bn.steps as f64 / 1e6),
        _ => None,
    };
    Ok(Fig1Result {
        projected_s,
        measured_s,
        steps: bn.steps,
    })
}

/// Train the paper's MLP with BN for [`MEASURES_STEPS`] steps without measures, then with them
/// every [`MEASURES_EVERY`] steps, one after the other on one thread, and compare the two runs'
/// own wall times.
fn time_measures(data_dir: &Path) -> Result<MeasuresCost> {
    let tmp = std::env::temp_dir().join(format!("bn-exp-bench-measures-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let cfg_path = tmp.join("mnist_mlp_sigmoid_bn.json");
    std::fs::write(&cfg_path, MLP_BN)?;
    let mut wall = Vec::new();
    for every in [0, MEASURES_EVERY] {
        let out_dir = tmp.join(format!("every-{every}"));
        let sets = [
            format!("steps={MEASURES_STEPS}"),
            "eval_every=1000".to_string(),
            "checkpoint_every=0".to_string(),
            format!("measures.every={every}"),
        ];
        let child = start_train(&cfg_path, &sets, &out_dir, data_dir)
            .context("cannot start a measures bench run")?;
        wait_train(child, "measures bench run")?;
        let summary = crate::run::Run::read(&out_dir)
            .summary
            .context("the measures bench run wrote no summary")?;
        wall.push(summary.wall_s);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(MeasuresCost {
        steps: MEASURES_STEPS,
        every: MEASURES_EVERY,
        plain_s: wall[0],
        measured_s: wall[1],
        ratio: wall[1] / wall[0],
    })
}

/// Start `bn-exp train` on one thread in a child process: `config` with each `--set` of `sets`,
/// into `out` (replaced), its stderr kept for [`wait_train`].
fn start_train(config: &Path, sets: &[String], out: &Path, data_dir: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the bn-exp executable")?;
    let mut command = Command::new(exe);
    command
        .args(["train", "--quiet", "--force", "--config"])
        .arg(config);
    for set in sets {
        command.args(["--set", set]);
    }
    Ok(command
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Wait for a run [`start_train`] started; an error with its stderr when it failed.
fn wait_train(child: Child, what: &str) -> Result<()> {
    let out = child
        .wait_with_output()
        .with_context(|| format!("{what} did not finish"))?;
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Run `scripts/pytorch_reference.py` (needs PyTorch) and print our time over theirs.
fn compare_pytorch(
    report: &BenchReport,
    reps: usize,
    threads: usize,
    device: DeviceKind,
    progress: &dyn Progress,
) -> Result<Option<serde_json::Value>> {
    let script = Path::new("scripts/pytorch_reference.py");
    if !script.exists() {
        progress.note(&format!(
            "--compare-pytorch: {} not found (run from the repository root)",
            script.display()
        ));
        return Ok(None);
    }
    let python = std::env::var("BN_EXP_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(script)
        .args([
            "--reps",
            &reps.to_string(),
            "--threads",
            &threads.to_string(),
            "--device",
            device_flag(device, true),
        ])
        .output()
        .with_context(|| format!("cannot run {python} {}", script.display()))?;
    if !out.status.success() {
        progress.note(&format!(
            "--compare-pytorch: the PyTorch reference failed (is torch installed for {python}?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return Ok(None);
    }
    let theirs: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the PyTorch reference printed no JSON")?;
    progress.result(&format!(
        "PyTorch {} on {}",
        theirs["torch"].as_str().unwrap_or("?"),
        theirs["device"].as_str().unwrap_or("?")
    ));
    progress.result(&format!(
        "{:<8} {:>14} {:>14} {:>10}",
        "workload", "bn-exp µs", "PyTorch µs", "ratio"
    ));
    for s in &report.steps {
        if let Some(t) = theirs["steps"][&s.workload]["median_us"].as_f64() {
            progress.result(&format!(
                "{:<8} {:>14.0} {:>14.0} {:>9.2}x",
                s.workload,
                s.median_us,
                t,
                s.median_us / t
            ));
        }
    }
    Ok(Some(theirs))
}
