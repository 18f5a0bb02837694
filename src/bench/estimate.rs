//! How long runs will take, from `bench`'s step timings: `reproduce` prints it before it
//! trains, and `compare --plan --emit slurm` sets each task's time limit from it.

use anyhow::Result;
use serde_json::Value;

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

/// Seconds of one core one run of `config` needs.
pub fn run_seconds(config: &Value, costs: &Costs) -> f64 {
    let num = |path: &[&str]| {
        path.iter()
            .try_fold(config, |v, k| v.get(*k))
            .and_then(Value::as_f64)
    };
    let steps = num(&["steps"]).unwrap_or(50_000.0);
    let batch = num(&["batch_size"]).unwrap_or(60.0);
    let eval_every = num(&["eval_every"]).unwrap_or(500.0).max(1.0);
    let cnn = config["model"]["arch"] == "cnn";
    let per_example = if cnn {
        costs.cnn_step_ms * 1e-3 / 128.0
    } else {
        costs.mlp_step_us * 1e-6 / 60.0
    };
    let mut step = per_example * batch;
    if config["norm"]["noise"] == true {
        step *= if cnn { 1.5 } else { 2.0 };
    }
    if num(&["measures", "every"]).unwrap_or(0.0) > 0.0 {
        step *= 1.2;
    }
    let evals = steps / eval_every + 1.0;
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
