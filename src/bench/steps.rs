//! The step workloads: which configs they train, and timing their steps, each in a child
//! process of its own (`bn-exp bench --worker W`), so that its peak memory (VmHWM) is its own
//! and one workload's allocations do not warm the next. Inputs are random tensors of the real
//! shapes: a step's cost does not depend on pixel values, and the bench then needs no data set.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::backend::{self, DeviceKind};
use crate::config::{Config, config_from_value};
use crate::model::CLASSES;
use crate::rng::Rng;

/// The step workloads, in the order they run: the shipped nets (the Inception, with its 1×1
/// convolutions, stride-2 3×3 convolutions, concatenations, 3×3 stride-2 max-pools and global
/// average pooling, at the shipped width, with and without BN), then the paper's MLP with each
/// other normalisation layer before its sigmoids, timed against `mlp-bn` (see [`NORM_WORKLOADS`]),
/// then the Inception of the `inception_accelerate` study (BN-x5: width 0.125, batch 64), whose
/// step `reproduce` times to estimate that study.
pub const STEP_WORKLOADS: [&str; 14] = [
    // The shipped nets (`SHIPPED_NETS` of them), which scripts/pytorch_reference.py has too.
    "mlp",
    "mlp-bn",
    "cnn",
    "cnn-bn",
    "inception",
    "inception-bn",
    "mlp-renorm",
    "mlp-layer",
    "mlp-group",
    "mlp-weight",
    "mlp-weight-mean-only",
    "mlp-bn-stats4",
    "mlp-renorm-stats4",
    "inception-study",
];

/// How many of [`STEP_WORKLOADS`] are the shipped nets, first in the list: the workloads
/// `scripts/pytorch_reference.py` has, with the same shapes.
pub const SHIPPED_NETS: usize = 6;

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
pub(super) const FIG1: &str = "fig1";
pub(super) const MEASURES: &str = "measures";

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
    /// Floating-point operations of one training step: 3 times the forward pass's weight-layer
    /// FLOPs (forward, ∂x and ∂W, each one product of the same size; the first layer's ∂x,
    /// which is never computed, is counted, so the GFLOP/s is an upper estimate by that much).
    #[serde(default)]
    pub flops_per_step: f64,
}

/// The shipped config behind each workload, embedded so the bench needs no file.
pub(super) const MLP_BN: &str = include_str!("../../configs/mnist_mlp_sigmoid_bn.json");
pub(super) const MLP_NOBN: &str = include_str!("../../configs/mnist_mlp_sigmoid_nobn.json");
const CNN_BN: &str = include_str!("../../configs/cifar10_cnn_relu_bn.json");
const CNN_NOBN: &str = include_str!("../../configs/cifar10_cnn_relu_nobn.json");
const INCEPTION_BN: &str = include_str!("../../configs/cifar10_inception_relu_bn.json");
const INCEPTION_STUDY: &str = include_str!("../../configs/cifar10_inception_bn_x5.json");

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
    if name == "inception" {
        let mut value: serde_json::Value = serde_json::from_str(INCEPTION_BN)?;
        value["norm"]["kind"] = "none".into();
        return config_from_value(value);
    }
    let (base, bn) = match name {
        "mlp" => (MLP_NOBN, false),
        "mlp-bn" => (MLP_BN, true),
        "cnn" => (CNN_NOBN, false),
        "cnn-bn" => (CNN_BN, true),
        "inception-bn" => (INCEPTION_BN, true),
        "inception-study" => (INCEPTION_STUDY, true),
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

/// Time `reps` steps of a workload in a child process on one thread, as `compare` runs each of
/// several runs at once (`reproduce` estimates its time from these).
pub fn time_steps_on_one_thread(workload: &str, reps: usize) -> Result<StepResult> {
    run_worker(workload, reps, 1, DeviceKind::Cpu)
}

/// `kind` as a `--device` value: bn-exp's own (`cpu`, `gpu`), or with `pytorch` that of
/// `scripts/pytorch_reference.py` (`cpu`, `cuda`).
pub(super) fn device_flag(kind: DeviceKind, pytorch: bool) -> &'static str {
    match (kind, pytorch) {
        (DeviceKind::Cpu, _) => "cpu",
        (DeviceKind::Gpu, false) => "gpu",
        (DeviceKind::Gpu, true) => "cuda",
    }
}

/// Run one workload in a child process and read its JSON line.
pub(super) fn run_worker(
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
        flops_per_step: training_step_flops(&config),
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

/// See [`StepResult::flops_per_step`].
pub fn training_step_flops(config: &Config) -> f64 {
    let arch = config.model.arch.geometry();
    3.0 * arch.forward_flops(config.image()) as f64 * config.batch_size as f64
}
