//! How long runs will take, from `bench`'s step timings: `reproduce` prints it before it
//! trains, and `compare --plan --emit slurm` sets each task's time limit from it.

use anyhow::Result;
use serde_json::Value;

use crate::config::Config;
use crate::model::{ArchConfig, Compute};

/// Seconds per forward FLOP of a training step, for each kind of net, measured on this machine.
pub struct Costs {
    dense_s_per_flop: f64,
    conv_s_per_flop: f64,
    /// The Inception's many thin layers run at a lower rate per FLOP than the CNN's: timed on
    /// the study's own net (workload `inception-study`).
    inception_s_per_flop: f64,
    /// The timed steps themselves, for people: (MLP µs at batch 60, CNN ms at batch 128).
    steps: (f64, f64),
}

impl Costs {
    /// "280 µs per MLP step at batch 60, 41 ms per CNN step at batch 128".
    pub fn describe(&self) -> String {
        format!(
            "{:.0} µs per MLP step at batch 60, {:.0} ms per CNN step at batch 128",
            self.steps.0, self.steps.1
        )
    }
}

/// One MLP step at batch 60 and one CNN step at batch 128, with BN, one thread, timed as
/// `bench` times them (a few repetitions each), each divided by its batch's forward FLOPs.
pub fn calibrate() -> Result<Costs> {
    // (median µs of one step, seconds per FLOP)
    let time = |workload: &str, reps: usize| -> Result<(f64, f64)> {
        let step = crate::bench::time_steps_on_one_thread(workload, reps)?;
        let config = crate::bench::workload_config(workload)?;
        Ok((step.median_us, step.median_us * 1e-6 / batch_flops(&config)))
    };
    let (mlp_us, dense_s_per_flop) = time("mlp-bn", 60)?;
    let (cnn_us, conv_s_per_flop) = time("cnn-bn", 4)?;
    let (_, inception_s_per_flop) = time("inception-study", 4)?;
    Ok(Costs {
        dense_s_per_flop,
        conv_s_per_flop,
        inception_s_per_flop,
        steps: (mlp_us, cnn_us / 1000.0),
    })
}

/// Forward FLOPs of one training batch of `config`.
fn batch_flops(config: &Config) -> f64 {
    let arch = config.model.arch.geometry();
    arch.forward_flops(config.image()) as f64 * config.batch_size as f64
}

/// Seconds of one core one run of `config` needs: steps × the step's cost (the calibrated
/// workload's cost per FLOP times the net's FLOPs per batch), plus the evaluations (a forward
/// pass over 10,000 test images, about a third of a training step's cost per image). Noise
/// and measures scale the step by factors fixed here, not timed by `bench`: noise ×2 on dense
/// nets and ×1.5 on conv nets (docs/config.md, `norm.noise`, reports the `santurkar` studies'
/// noisy runs at 2.2× to 3.4× on the MLP and 1.4× on the CNN), measures ×1.2 (docs/config.md,
/// `measures.every`, reports 1.07× from `bench` on the MLP at every 100 steps).
///
/// A config train would refuse, which studies and plans rule out before they are costed, is
/// costed as the default one.
pub fn run_seconds(config: &Value, costs: &Costs) -> f64 {
    let config = crate::config::config_from_value(config.clone()).unwrap_or_default();
    let arch = config.model.arch.geometry();
    let per_flop = match arch.compute() {
        Compute::Dense => costs.dense_s_per_flop,
        Compute::Conv if matches!(config.model.arch, ArchConfig::Inception(_)) => {
            costs.inception_s_per_flop
        }
        Compute::Conv => costs.conv_s_per_flop,
    };
    let per_example = per_flop * arch.forward_flops(config.image()) as f64;
    let mut step = per_example * config.batch_size as f64;
    if config.norm.noise {
        step *= match arch.compute() {
            Compute::Dense => 2.0,
            Compute::Conv => 1.5,
        };
    }
    if config.measures.every > 0 {
        step *= 1.2;
    }
    let steps = config.steps as f64;
    let evals = steps / config.eval_every.max(1) as f64 + 1.0;
    steps * step + evals * 10_000.0 * per_example / 3.0
}

pub fn format_duration(seconds: f64) -> String {
    // A sum of nothing can be -0.0, which would print as "-0 s".
    let seconds = seconds.max(0.0);
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}
