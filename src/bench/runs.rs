//! The workloads that train whole runs (CPU only): the Figure 1 study, and what Santurkar et
//! al.'s measures cost a run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use super::steps::{MLP_BN, MLP_NOBN, StepResult, workload_config};

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

/// Train both Figure 1 nets (full length) side by side, one thread each, and time the wall.
pub(super) fn time_fig1(steps: &[StepResult], data_dir: &Path) -> Result<Fig1Result> {
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
pub(super) fn time_measures(data_dir: &Path) -> Result<MeasuresCost> {
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
