//! Batch Renormalization (Ioffe 2017, Algorithm 1): BN whose training output is corrected
//! towards its moving averages, so that training and inference compute nearly the same function
//! even when the mini-batch statistics are noisy.
//!
//! # Formula
//!
//! Per channel, over the m values of a statistics batch (as BN: `[N, C]` or `[N, C, H, W]`):
//!
//! ```text
//! μ_B = (1/m) Σ x_i                    σ_B = √((1/m) Σ (x_i − μ_B)² + ε)
//! r   = clip(σ_B / σ, 1/r_max, r_max)   d = clip((μ_B − μ) / σ, −d_max, d_max)
//! y_i = γ·((x_i − μ_B)/σ_B · r + d) + β
//! μ  ← μ + momentum·(μ_B − μ)          σ ← σ + momentum·(σ_B − σ)       (σ: a STD, ε inside)
//! inference: y = γ·(x − μ)/σ + β
//! ```
//!
//! r and d are constants in the backward pass (`stop_gradient` in the paper). Leaving them in
//! the graph is a different method, and an unstable one. Here the fused BN kernel computes x̂ and
//! the batch statistics (with γ = 1, β = 0, so its closed-form backward carries ∂x̂ back to x),
//! r and d are computed on the host from the detached statistics, which makes them constants by
//! construction, and y = x̂·(γ·r) + (γ·d + β) is two broadcast ops.
//!
//! With r_max = 1 and d_max = 0 (the paper's warm-up) r = 1 and d = 0, and the layer is BN.
//! [`RenormConfig::limits_at`] gives the schedule; the training loop tells every layer the
//! current step through [`BatchRenorm::begin_step`].
//!
//! Inference with population statistics (Algorithm 2's pass, as for BN) uses
//! γ·(x − E[x])/√(Var[x] + ε) + β.

use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor, TensorCreationOptions, TensorData};
use serde::{Deserialize, Serialize};

use super::affine::affine_accessors;
use super::batch::{
    BatchConfig, BnError, BnMode, InferenceStats, apply_per_channel, blend_running, check_channels,
    check_train_channels, store_running,
};
use super::ghost::{BatchStats, GroupedOutput, normalise_in_groups, tile};
use crate::kernels::{FusedOutput, batch_norm_train_fused};
use crate::tensor::tensor_to_f64;

/// Batch Renorm's own settings in a config: BN's (`norm.stats_batch`) and `norm.renorm`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenormConfig {
    pub bn: BatchConfig,
    pub schedule: RenormSchedule,
}

impl RenormConfig {
    /// The statistics batch against the training batch, and the limits and their schedule.
    pub fn check(&self, batch_size: usize) -> Result<()> {
        self.bn.check(batch_size)?;
        self.schedule.check()
    }
}

/// Batch Renormalization's limits on r and d, and their schedule (`norm.renorm`). The paper
/// (Ioffe 2017) trains with r_max = 1, d_max = 0 (plain BN) for 5k steps, then ramps d_max to 5
/// by 25k steps and r_max to 3 by 40k. Here the schedule is in fractions of the run's `steps`,
/// so a 50,000-step run gets exactly the paper's numbers and a shorter run the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenormSchedule {
    /// r is clipped to [1/r_max, r_max] once the ramp is done (at least 1).
    pub r_max: f64,
    /// d is clipped to [−d_max, d_max] once the ramp is done (at least 0).
    pub d_max: f64,
    /// Fraction of the run trained as plain BN (r_max = 1, d_max = 0) before the ramps start.
    pub warmup: f64,
    /// Fraction of the run at which r_max reaches its final value.
    pub r_max_at: f64,
    /// Fraction of the run at which d_max reaches its final value.
    pub d_max_at: f64,
}

impl Default for RenormSchedule {
    fn default() -> Self {
        Self {
            r_max: 3.0,
            d_max: 5.0,
            warmup: 0.1,
            r_max_at: 0.8,
            d_max_at: 0.5,
        }
    }
}

impl RenormSchedule {
    /// (r_max, d_max) at training step `step` of a run of `steps` steps: 1 and 0 during the
    /// warm-up, then each rises linearly to its final value.
    pub fn limits_at(&self, step: u64, steps: u64) -> (f64, f64) {
        let t = step as f64 / steps.max(1) as f64;
        let ramp = |end: f64| -> f64 {
            if t <= self.warmup {
                0.0
            } else if t >= end || end <= self.warmup {
                1.0
            } else {
                (t - self.warmup) / (end - self.warmup)
            }
        };
        (
            1.0 + (self.r_max - 1.0) * ramp(self.r_max_at),
            self.d_max * ramp(self.d_max_at),
        )
    }

    /// The limits and the ramps must describe a schedule. Each failure names its key.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.r_max.is_finite() && self.r_max >= 1.0,
            "norm.renorm.r_max must be a finite number of at least 1 (r is clipped to \
             [1/r_max, r_max]), got {}",
            self.r_max
        );
        ensure!(
            self.d_max.is_finite() && self.d_max >= 0.0,
            "norm.renorm.d_max must be a finite number of at least 0 (d is clipped to \
             [-d_max, d_max]), got {}",
            self.d_max
        );
        for (key, value) in [
            ("norm.renorm.warmup", self.warmup),
            ("norm.renorm.r_max_at", self.r_max_at),
            ("norm.renorm.d_max_at", self.d_max_at),
        ] {
            ensure!(
                value.is_finite() && (0.0..=1.0).contains(&value),
                "{key} is a fraction of the run's steps, in [0, 1], got {value}"
            );
        }
        for (key, value) in [
            ("norm.renorm.r_max_at", self.r_max_at),
            ("norm.renorm.d_max_at", self.d_max_at),
        ] {
            ensure!(
                value >= self.warmup,
                "{key} ({value}) comes before the end of norm.renorm.warmup ({}): a ramp \
                 cannot end before it starts",
                self.warmup
            );
        }
        Ok(())
    }
}

/// The correction a training batch got: r and d per channel (and per statistics group,
/// group-major, when `norm.stats_batch` splits the batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Correction {
    pub r: Vec<f64>,
    pub d: Vec<f64>,
}

/// Shared, mutable state the optimiser's copies of the layer all see: the current limits and
/// the last correction (for tests and tools).
#[derive(Debug, Clone, Default)]
pub struct RenormState {
    limits: (f64, f64),
    last: Correction,
}

/// Our Batch Renormalization layer. See the module documentation.
#[derive(Module, Debug)]
pub struct BatchRenorm {
    gamma: Param<Tensor<1>>,
    beta: Param<Tensor<1>>,
    /// Moving average μ of μ_B.
    running_mean: RunningState<Tensor<1>>,
    /// Moving average σ of σ_B = √(σ²_B + ε): a standard deviation, not a variance.
    running_std: RunningState<Tensor<1>>,
    /// E[x] and Var[x] from the population pass, as BN's.
    population_mean: RunningState<Tensor<1>>,
    population_var: RunningState<Tensor<1>>,
    eps: f64,
    momentum: f64,
    #[module(skip)]
    stats_batch: Option<usize>,
    /// The schedule of r_max and d_max, over a run of `steps` steps.
    #[module(skip)]
    schedule: RenormSchedule,
    #[module(skip)]
    steps: u64,
    #[module(skip)]
    state: Arc<Mutex<RenormState>>,
}

impl BatchRenorm {
    /// A layer over `channels` channels: γ = 1, β = 0, μ = 0, σ = 1; limits r_max = 1, d_max = 0
    /// (plain BN) until [`BatchRenorm::begin_step`] or [`BatchRenorm::set_limits`] says otherwise.
    pub fn new(
        channels: usize,
        eps: f64,
        momentum: f64,
        schedule: RenormSchedule,
        steps: u64,
        device: &Device,
    ) -> Self {
        let ones = || Tensor::<1>::ones([channels], device);
        let zeros = || Tensor::<1>::zeros([channels], device);
        Self {
            gamma: Param::from_tensor(ones()),
            beta: Param::from_tensor(zeros()),
            running_mean: RunningState::new(zeros()),
            running_std: RunningState::new(ones()),
            population_mean: RunningState::new(zeros()),
            population_var: RunningState::new(ones()),
            eps,
            momentum,
            stats_batch: None,
            schedule,
            steps,
            state: Arc::new(Mutex::new(RenormState {
                limits: (1.0, 0.0),
                last: Correction::default(),
            })),
        }
    }

    /// The same layer, taking its training statistics over groups of `k` examples.
    pub fn with_stats_batch(mut self, k: Option<usize>) -> Self {
        self.stats_batch = k;
        self
    }

    /// The same layer with its moving averages set to (μ, σ), and its population statistics
    /// to 0 and 1 in their dtype, for tests.
    pub fn with_running(mut self, mean: Tensor<1>, std: Tensor<1>) -> Self {
        self.population_mean = RunningState::new(mean.zeros_like());
        self.population_var = RunningState::new(std.ones_like());
        self.running_mean = RunningState::new(mean);
        self.running_std = RunningState::new(std);
        self
    }

    affine_accessors!();

    /// The moving average μ of μ_B.
    pub fn running_mean(&self) -> Tensor<1> {
        self.running_mean.value_sync()
    }

    /// The moving average σ of σ_B (a standard deviation).
    pub fn running_std(&self) -> Tensor<1> {
        self.running_std.value_sync()
    }

    /// Set r_max and d_max for the coming training step from the schedule.
    pub fn begin_step(&self, step: u64) {
        let (r_max, d_max) = self.schedule.limits_at(step, self.steps);
        self.set_limits(r_max, d_max);
    }

    /// Set r_max and d_max directly.
    pub fn set_limits(&self, r_max: f64, d_max: f64) {
        self.lock().limits = (r_max, d_max);
    }

    /// (r_max, d_max) in force.
    pub fn limits(&self) -> (f64, f64) {
        self.lock().limits
    }

    /// r and d of the last training batch.
    pub fn last_correction(&self) -> Correction {
        self.lock().last.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RenormState> {
        // A poisoned lock only means another thread panicked mid-write of two floats.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Normalise `x` as `mode` says; in training also return the batch statistics.
    pub fn forward_with_stats<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<(Tensor<D>, Option<BatchStats>), BnError> {
        match mode {
            BnMode::Train { update_running } => {
                check_train_channels(&x.dims(), self.channels())?;
                let out = self.normalise_batch(x);
                let stats = out.stats.detach();
                if update_running {
                    self.update_running(&stats);
                }
                Ok((out.output, Some(stats)))
            }
            BnMode::Inference(InferenceStats::Batch) => {
                check_train_channels(&x.dims(), self.channels())?;
                Ok((self.normalise_batch(x).output, None))
            }
            BnMode::Inference(stats) => {
                self.check_input(&x.dims())?;
                let device = x.device();
                let (scale, shift) = self.inference_affine(stats);
                let y = apply_per_channel(x, scale.to_device(&device), shift.to_device(&device));
                Ok((y, None))
            }
        }
    }

    /// Inference as `y = scale·x + shift` per channel: γ/σ and β − γ·μ/σ with the moving
    /// averages, or γ/√(Var + ε) with the population statistics.
    pub fn inference_affine(&self, stats: InferenceStats) -> (Tensor<1>, Tensor<1>) {
        let (mean, std) = match stats {
            InferenceStats::Population => (
                self.population_mean.value_sync(),
                self.population_var.value_sync().add_scalar(self.eps).sqrt(),
            ),
            InferenceStats::Moving | InferenceStats::Batch => (
                self.running_mean.value_sync(),
                self.running_std.value_sync(),
            ),
        };
        let scale = self.gamma.val().div(std);
        let shift = self.beta.val().sub(scale.clone().mul(mean));
        (scale, shift)
    }

    /// Store population statistics (E[x], Var[x]) from the population pass.
    pub fn set_population(&self, mean: Tensor<1>, var: Tensor<1>) {
        store_running(&self.population_mean, mean);
        store_running(&self.population_var, var);
    }

    /// Algorithm 1 of the paper on a training batch, per statistics group.
    fn normalise_batch<const D: usize>(&self, x: Tensor<D>) -> GroupedOutput<D> {
        let (r_max, d_max) = self.limits();
        let mu = tensor_to_f64(self.running_mean.value_sync());
        let sigma = tensor_to_f64(self.running_std.value_sync());
        let (gamma, beta, eps) = (self.gamma.val(), self.beta.val(), self.eps);
        let corrections = Mutex::new(Correction::default());
        let out = normalise_in_groups(x, self.stats_batch, &|x, groups| {
            // x̂ and the batch statistics from the fused BN kernel (γ = 1, β = 0); r and d
            // computed on the host from the detached statistics, so they are constants.
            let channels = x.dims()[1];
            let device = x.device();
            let like = TensorCreationOptions::new(device.clone()).with_dtype(x.dtype());
            let standard = batch_norm_train_fused(
                x,
                Tensor::ones([channels], like.clone()),
                Tensor::zeros([channels], like),
                eps,
            );
            let mean_b = tensor_to_f64(standard.mean.clone());
            let var_b = tensor_to_f64(standard.variance.clone());
            let c = mu.len();
            let mut correction = Correction::default();
            for (i, (m_b, v_b)) in mean_b.iter().zip(&var_b).enumerate() {
                let (m, s) = (mu[i % c], sigma[i % c]);
                let sigma_b = (v_b + eps).sqrt();
                correction.r.push((sigma_b / s).clamp(1.0 / r_max, r_max));
                correction.d.push(((m_b - m) / s).clamp(-d_max, d_max));
            }
            let gamma_t = tile(gamma.clone(), groups);
            let r = vector_like(&correction.r, &gamma, &device);
            let d = vector_like(&correction.d, &gamma, &device);
            let scale = gamma_t.clone().mul(r);
            let shift = gamma_t.mul(d).add(tile(beta.clone(), groups));
            let mut all = corrections.lock().unwrap_or_else(|e| e.into_inner());
            all.r.extend(correction.r);
            all.d.extend(correction.d);
            FusedOutput {
                output: apply_per_channel(standard.output, scale, shift),
                mean: standard.mean,
                variance: standard.variance,
            }
        });
        self.lock().last = corrections.into_inner().unwrap_or_else(|e| e.into_inner());
        out
    }

    /// μ ← μ + momentum·(μ_B − μ), σ ← σ + momentum·(σ_B − σ), on the device.
    fn update_running(&self, stats: &BatchStats) {
        let m = self.momentum;
        let std_b = stats.biased_var.clone().add_scalar(self.eps).sqrt();
        blend_running(&self.running_mean, stats.mean.clone(), 1.0 - m, m);
        blend_running(&self.running_std, std_b, 1.0 - m, m);
    }

    fn check_input(&self, dims: &[usize]) -> Result<usize, BnError> {
        check_channels(dims, self.channels())
    }
}

/// Host values as a `[len]` tensor with `like`'s dtype on `device`.
fn vector_like(values: &[f64], like: &Tensor<1>, device: &Device) -> Tensor<1> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        TensorCreationOptions::new(device.clone()).with_dtype(like.dtype()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renorm_schedule_gives_the_papers_numbers_on_a_50k_run() {
        let r = RenormSchedule::default();
        let at = |step| r.limits_at(step, 50_000);
        assert_eq!(at(0), (1.0, 0.0));
        assert_eq!(at(5_000), (1.0, 0.0));
        assert_eq!(at(25_000).1, 5.0);
        assert_eq!(at(40_000).0, 3.0);
        assert_eq!(at(50_000), (3.0, 5.0));
        // Halfway through d's ramp (5k → 25k) d_max is half of 5; r at 15k is 1 + 2·(10/35).
        let (r_mid, d_mid) = at(15_000);
        assert!((d_mid - 2.5).abs() < 1e-12, "{d_mid}");
        assert!((r_mid - (1.0 + 2.0 * 10.0 / 35.0)).abs() < 1e-12, "{r_mid}");
    }
}
