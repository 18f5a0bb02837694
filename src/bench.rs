//! `bn-exp bench`: time the training step of each workload and the Figure 1 study.
//!
//! Each step workload runs in a child process of its own (`bn-exp bench --worker W`), so that
//! its peak memory (VmHWM) is its own and one workload's allocations do not warm the next.
//! Inputs are random tensors of the real shapes: a step's cost does not depend on pixel values,
//! and the bench then needs no data set. Reported: the median of `reps` timed steps after
//! warm-up, with min and max, because this machine is shared and noisy.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::backend::{self, DeviceKind};
use crate::progress::Progress;

mod contended;
pub mod estimate;
mod peak;
mod pytorch;
mod runs;
mod steps;

pub use contended::{CONTENDED_TARGET, ContendedResult, busy_loop};
pub use peak::fma_peak_gflops;
pub use runs::{Fig1Result, MEASURES_EVERY, MEASURES_STEPS, MEASURES_TARGET, MeasuresCost};
use steps::{FIG1, MEASURES, run_worker};
pub use steps::{
    NORM_WORKLOADS, RUN_WORKLOADS, STEP_WORKLOADS, StepResult, time_steps,
    time_steps_on_one_thread, workload_config,
};

/// The most a normalisation layer may cost, as a multiple of BN's step on the paper's MLP.
pub const NORM_STEP_TARGET: f64 = 1.25;

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
    /// This machine's float32 FMA throughput at the start of the bench, GFLOP/s: on one core,
    /// and on the step workloads' threads together (see `bench/peak.rs`).
    #[serde(default)]
    pub peak_gflops_one_core: f64,
    #[serde(default)]
    pub peak_gflops: f64,
    /// `--contended`: each step workload timed beside a busy process.
    #[serde(default)]
    pub contended: Vec<ContendedResult>,
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
    /// Also time each step workload beside a busy process, on one thread and on `threads`.
    pub contended: bool,
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
    ensure!(
        !(on_gpu && args.contended),
        "--contended times the CPU under load; leave out --device gpu"
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
        peak_gflops_one_core: 0.0,
        peak_gflops: 0.0,
        contended: Vec::new(),
    };
    progress.result(&format!("bn-exp bench on {backend_name}: {device}"));
    if !on_gpu {
        report.peak_gflops_one_core = fma_peak_gflops(1);
        report.peak_gflops = fma_peak_gflops(threads);
        progress.result(&format!(
            "peak: {:.1} GFLOP/s on one core, {:.1} on {threads} (float32 FMA loop, measured now)",
            report.peak_gflops_one_core, report.peak_gflops
        ));
    }
    progress.result(&format!(
        "{:<20} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>8} {:>7}  {}",
        "workload",
        "batch",
        "median µs",
        "min µs",
        "max µs",
        "steps/s",
        "peak MB",
        "MFLOP",
        "GFLOP/s",
        "% peak",
        "backend: device"
    ));
    for w in wanted.iter().filter(|w| !is_run(w)) {
        let r = run_worker(w, args.reps, threads, args.device)?;
        let gflops = r.flops_per_step / r.median_us / 1e3;
        let peak_pct = if report.peak_gflops > 0.0 {
            format!("{:.1}", 100.0 * gflops / report.peak_gflops)
        } else {
            "-".to_string()
        };
        progress.result(&format!(
            "{:<20} {:>6} {:>12.0} {:>12.0} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>8.2} {:>7}  {}: {}",
            r.workload,
            r.batch_size,
            r.median_us,
            r.min_us,
            r.max_us,
            r.steps_per_s,
            r.peak_rss_mb,
            r.flops_per_step / 1e6,
            gflops,
            peak_pct,
            r.backend,
            r.device
        ));
        report.steps.push(r);
    }
    if args.contended {
        report.contended = time_all_contended(&report.steps, args.reps, threads, progress)?;
    }
    for line in norm_ratio_lines(&report.steps) {
        progress.result(&line);
    }
    if wanted.iter().any(|w| w == FIG1) {
        let fig1 = runs::time_fig1(&report.steps, &args.data_dir)?;
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
        let cost = runs::time_measures(&args.data_dir)?;
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
        report.pytorch =
            pytorch::compare_pytorch(&report.steps, args.reps, threads, args.device, progress)?;
    }
    if let Some(path) = &args.json {
        crate::run::write_json_atomic(path, &report)?;
        progress.result(&format!("wrote {}", path.display()));
    }
    Ok(report)
}

/// Each timed step workload again, beside a busy process: its step on one thread and on the
/// default threads under the same load, with the slowdown and the target.
fn time_all_contended(
    steps: &[StepResult],
    reps: usize,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<ContendedResult>> {
    progress.result(&format!(
        "under load (a busy process pinned to the last core): {threads} threads against 1, \
         target ≤ {CONTENDED_TARGET:.1}x"
    ));
    progress.result(&format!(
        "{:<20} {:>14} {:>14} {:>9}",
        "workload",
        "1 thread µs",
        format!("{threads} threads µs"),
        "slowdown"
    ));
    let mut results = Vec::new();
    for step in steps {
        let r = contended::time_contended(&step.workload, reps, threads)?;
        let verdict = if r.slowdown <= CONTENDED_TARGET {
            "within target"
        } else {
            "OVER target"
        };
        progress.result(&format!(
            "{:<20} {:>14.0} {:>14.0} {:>8.2}x  {verdict}",
            r.workload, r.one_thread_us, r.default_us, r.slowdown
        ));
        results.push(r);
    }
    Ok(results)
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
