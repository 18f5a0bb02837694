//! How long runs will take, from `bench`'s step timings: `reproduce` prints it before it
//! trains, and `compare --plan --emit slurm` sets each task's time limit from it.

use anyhow::Result;
use serde_json::Value;

use crate::model::Arch;

pub struct Costs {
    pub mlp_step_us: f64,
    pub cnn_step_ms: f64,
}

/// One MLP step at batch 60 and one CNN step at batch 128, with BN, one thread, timed as
/// `bench` times them (a few repetitions each).
pub fn calibrate() -> Result<Costs> {
    let mlp = crate::bench::time_steps_on_one_thread("mlp-bn", 60)?;
    let cnn = crate::bench::time_steps_on_one_thread("cnn-bn", 4)?;
    Ok(Costs {
        mlp_step_us: mlp.median_us,
        cnn_step_ms: cnn.median_us / 1000.0,
    })
}

/// Seconds of one core one run of `config` needs: steps × the step's cost scaled by the batch,
/// plus the evaluations (a forward pass over 10,000 test images, about a third of a training
/// step's cost per image). Noise and measures scale the step by factors fixed here, not timed
/// by `bench`: noise ×2 on the MLP and ×1.5 on the CNN (docs/config.md, `norm.noise`, reports
/// the `santurkar` studies' noisy runs at 2.2× to 3.4× on the MLP and 1.4× on the CNN), measures
/// ×1.2 (docs/config.md, `measures.every`, reports 1.07× from `bench` on the MLP at every 100
/// steps).
///
/// A config train would refuse, which studies and plans rule out before they are costed, is
/// costed as the default one.
pub fn run_seconds(config: &Value, costs: &Costs) -> f64 {
    let config = crate::config::config_from_value(config.clone()).unwrap_or_default();
    let cnn = config.model.arch.arch() == Arch::Cnn;
    let per_example = if cnn {
        costs.cnn_step_ms * 1e-3 / 128.0
    } else {
        costs.mlp_step_us * 1e-6 / 60.0
    };
    let mut step = per_example * config.batch_size as f64;
    if config.norm.noise {
        step *= if cnn { 1.5 } else { 2.0 };
    }
    if config.measures.every > 0 {
        step *= 1.2;
    }
    let steps = config.steps as f64;
    let evals = steps / config.eval_every.max(1) as f64 + 1.0;
    steps * step + evals * 10_000.0 * per_example / 3.0
}

pub fn format_duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}
