//! Batch Normalization as the paper defines it (Ioffe & Szegedy 2015, Algorithms 1 and 2).
//!
//! # Formula
//!
//! Training (Algorithm 1), per feature (MLP) or channel (conv) k, over the m values of the
//! mini-batch (m = N for `[N, C]`, m = N·H·W for `[N, C, H, W]`: the paper's "effective
//! mini-batch" of a conv layer):
//!
//! ```text
//! μ_B  = (1/m) Σ x_i
//! σ²_B = (1/m) Σ (x_i − μ_B)²          biased: divides by m
//! x̂_i  = (x_i − μ_B) / √(σ²_B + ε)
//! y_i  = γ x̂_i + β                      γ starts at 1, β at 0
//! ```
//!
//! Inference (Algorithm 2) replaces μ_B and σ²_B by fixed statistics, so BN becomes the affine
//! map `y = γ/√(Var+ε) · x + (β − γ·E[x]/√(Var+ε))` ([`BatchNorm::inference_affine`]).
//! Which statistics is a choice ([`InferenceStats`]):
//! - `Moving`: moving averages updated at every training step,
//!   `running = (1 − momentum)·running + momentum·batch` (PyTorch's convention), where the
//!   variance fed in is the *unbiased* batch variance m/(m−1)·σ²_B.
//! - `Population`: the paper's exact pass: E[x] = mean of μ_B and Var = m/(m−1)·mean of σ²_B over
//!   K training mini-batches, computed after training ([`PopulationAccumulator`]).
//! - `Batch`: the test batch's own statistics. A known pitfall (a prediction then depends on the
//!   other images in its batch); kept so users can see its effect.
//!
//! # Conventions, compared
//! | | training variance | running variance | momentum |
//! |---|---|---|---|
//! | bn-exp | biased (÷m) | unbiased (÷(m−1)) | new = (1−0.1)·old + 0.1·batch |
//! | PyTorch `BatchNorm1d/2d` | biased | unbiased | same |
//! | Burn `burn::nn::BatchNorm` | biased | **biased** | same |
//!
//! bn-exp matches PyTorch, and the tests check it against vectors PyTorch computed.
//!
//! # Modes
//! The caller says which path to take with [`BnMode`]; nothing is inferred from the device.
//! Evaluation (`BnMode::Inference`) never writes the running statistics, and neither does
//! `BnMode::Train { update_running: false }` (used for the paper's activation probes and the
//! population pass).
//!
//! # Shapes and errors
//! Input `[N, C]` or `[N, C, H, W]`; output the same shape. γ, β and every statistic are `[C]`.
//! [`BatchNorm::forward`] returns [`BnError::Channels`] when the input's second axis is not C,
//! [`BnError::Rank`] for other ranks, and [`BnError::SingleValue`] for a training batch with one
//! value per channel (m = 1), where the variance, and so the gradient, is undefined (PyTorch
//! raises the same error). It does not panic.
//!
//! The training path is one fused kernel with a hand-written backward ([`crate::kernels`]): the
//! paper's closed-form gradients (∂ℓ/∂x̂, ∂ℓ/∂σ²_B and ∂ℓ/∂μ_B folded into one expression),
//! computed channel by channel in place, instead of differentiating through the reductions one op
//! at a time.

use anyhow::Result;
use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::affine::affine_accessors;
use super::ghost::{BatchStats, GroupedOutput, check_stats_batch, normalise_in_groups, tile};
use crate::kernels::batch_norm_train_fused;
use crate::tensor::tensor_to_f64;

/// BN's own settings in a config: `norm.stats_batch` (its shared ones, ε and momentum, are
/// [`super::NormConfig`]'s).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchConfig {
    /// Normalise each group of this many examples of a training batch by its own statistics
    /// (the papers' "images per GPU", [`super::ghost`]); `None`: the whole batch.
    pub stats_batch: Option<usize>,
}

impl BatchConfig {
    /// The statistics batch against the training batch.
    pub fn check(&self, batch_size: usize) -> Result<()> {
        check_stats_batch(self.stats_batch, batch_size)
    }
}

/// Which statistics BN uses in inference (`norm.inference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceStats {
    /// Moving averages kept during training (the default; what evaluation during training uses).
    Moving,
    /// The paper's Algorithm 2: averages over K training mini-batches after training.
    Population,
    /// The test batch's own statistics: a known pitfall, kept to show its effect.
    Batch,
}

/// Which path [`BatchNorm::forward`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Algorithm 1: normalise with the mini-batch's own statistics. `update_running` says
    /// whether the moving averages absorb this batch (true only for real training steps).
    Train { update_running: bool },
    /// Algorithm 2 with the chosen statistics.
    Inference(InferenceStats),
}

impl BnMode {
    /// Whether the moving averages absorb this batch: only in a real training step.
    pub fn updates_running(self) -> bool {
        self == BnMode::Train {
            update_running: true,
        }
    }
}

/// What can go wrong in a BN forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BnError {
    /// The input's channel axis does not match the layer.
    Channels { expected: usize, got: usize },
    /// The input is neither `[N, C]` nor `[N, C, H, W]`.
    Rank(usize),
    /// A training batch with a single value per channel: its variance is undefined.
    SingleValue { shape: Vec<usize> },
}

impl std::fmt::Display for BnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BnError::Channels { expected, got } => write!(
                f,
                "BatchNorm expects {expected} channels on axis 1 but the input has {got}"
            ),
            BnError::Rank(rank) => write!(
                f,
                "BatchNorm takes [N, C] or [N, C, H, W] inputs, got rank {rank}"
            ),
            BnError::SingleValue { shape } => write!(
                f,
                "BatchNorm in training needs more than one value per channel, got input shape \
                 {shape:?}: the batch variance is undefined (use a batch size of at least 2)"
            ),
        }
    }
}

impl std::error::Error for BnError {}

/// Our BatchNorm layer. See the module documentation for the formulas and conventions.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// Scale γ, initialised to 1.
    gamma: Param<Tensor<1>>,
    /// Shift β, initialised to 0.
    beta: Param<Tensor<1>>,
    /// Moving average of μ_B.
    running_mean: RunningState<Tensor<1>>,
    /// Moving average of the unbiased batch variance m/(m−1)·σ²_B.
    running_var: RunningState<Tensor<1>>,
    /// E[x] from the population pass (0 until one has run).
    population_mean: RunningState<Tensor<1>>,
    /// Var[x] = m/(m−1)·E[σ²_B] from the population pass (1 until one has run).
    population_var: RunningState<Tensor<1>>,
    /// ε inside the square root.
    eps: f64,
    /// Weight of the newest batch in the moving averages.
    momentum: f64,
    /// Examples per statistics group in training (`norm.stats_batch`); `None`: the whole batch.
    #[module(skip)]
    stats_batch: Option<usize>,
}

impl BatchNorm {
    /// A layer over `channels` features: γ = 1, β = 0, running mean 0 and variance 1 (as PyTorch).
    pub fn new(channels: usize, eps: f64, momentum: f64, device: &Device) -> Self {
        let ones = || Tensor::<1>::ones([channels], device);
        let zeros = || Tensor::<1>::zeros([channels], device);
        Self {
            gamma: Param::from_tensor(ones()),
            beta: Param::from_tensor(zeros()),
            running_mean: RunningState::new(zeros()),
            running_var: RunningState::new(ones()),
            population_mean: RunningState::new(zeros()),
            population_var: RunningState::new(ones()),
            eps,
            momentum,
            stats_batch: None,
        }
    }

    /// The same layer, taking its training statistics over groups of `k` examples
    /// (`norm.stats_batch`; `None` for the whole batch).
    pub fn with_stats_batch(mut self, k: Option<usize>) -> Self {
        self.stats_batch = k;
        self
    }

    /// Algorithm 1 on a training batch, per statistics group: the output, and the statistics
    /// (averaged over groups) that the running averages absorb.
    fn normalise_batch<const D: usize>(&self, x: Tensor<D>) -> GroupedOutput<D> {
        let (gamma, beta, eps) = (self.gamma.val(), self.beta.val(), self.eps);
        normalise_in_groups(x, self.stats_batch, &|x, groups| {
            batch_norm_train_fused(
                x,
                tile(gamma.clone(), groups),
                tile(beta.clone(), groups),
                eps,
            )
        })
    }

    /// The same layer with its moving averages set to (mean, var), and its population
    /// statistics to 0 and 1 in their dtype: for tests against reference vectors, which start
    /// from given statistics.
    pub fn with_running(mut self, mean: Tensor<1>, var: Tensor<1>) -> Self {
        self.population_mean = RunningState::new(mean.zeros_like());
        self.population_var = RunningState::new(var.ones_like());
        self.running_mean = RunningState::new(mean);
        self.running_var = RunningState::new(var);
        self
    }

    affine_accessors!();

    /// ε inside the square root.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The moving average of μ_B, as the next step reads it.
    pub fn running_mean(&self) -> Tensor<1> {
        self.running_mean.value_sync()
    }

    /// The moving average of the unbiased batch variance, as the next step reads it.
    pub fn running_var(&self) -> Tensor<1> {
        self.running_var.value_sync()
    }

    /// Whether the layer takes its training statistics over the whole batch (no
    /// `norm.stats_batch`), as the fused dense kernel does.
    pub fn uses_whole_batch(&self) -> bool {
        self.stats_batch.is_none()
    }

    /// Normalise `x` as `mode` says. See the module documentation.
    pub fn forward<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<Tensor<D>, BnError> {
        self.forward_with_stats(x, mode).map(|(y, _)| y)
    }

    /// Like [`forward`](Self::forward), also returning the batch statistics in training mode
    /// (what the population pass averages).
    pub fn forward_with_stats<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<(Tensor<D>, Option<BatchStats>), BnError> {
        match mode {
            BnMode::Train { .. } => {
                self.check_train_batch(&x.dims())?;
                let out = self.normalise_batch(x);
                let stats = self.absorb_batch(out.stats, mode);
                Ok((out.output, Some(stats)))
            }
            BnMode::Inference(InferenceStats::Batch) => {
                // Batch statistics without gradients or running updates: the pitfall mode.
                self.check_train_batch(&x.dims())?;
                Ok((self.normalise_batch(x).output, None))
            }
            BnMode::Inference(stats) => {
                self.check_input(&x.dims())?;
                let (mean, var) = self.inference_stats(stats);
                let device = x.device();
                let (scale, shift) = affine_from_stats(
                    self.gamma.val(),
                    self.beta.val(),
                    mean.to_device(&device),
                    var.to_device(&device),
                    self.eps,
                );
                Ok((apply_per_channel(x, scale, shift), None))
            }
        }
    }

    /// The fixed statistics (E[x], Var[x]) that inference with `stats` uses.
    /// `Batch` has none; it returns the moving averages.
    pub fn inference_stats(&self, stats: InferenceStats) -> (Tensor<1>, Tensor<1>) {
        match stats {
            InferenceStats::Population => (
                self.population_mean.value_sync(),
                self.population_var.value_sync(),
            ),
            InferenceStats::Moving | InferenceStats::Batch => (
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
            ),
        }
    }

    /// Algorithm 2, line 11: inference BN as `y = scale·x + shift`, returning (scale, shift).
    pub fn inference_affine(&self, stats: InferenceStats) -> (Tensor<1>, Tensor<1>) {
        let (mean, var) = self.inference_stats(stats);
        affine_from_stats(self.gamma.val(), self.beta.val(), mean, var, self.eps)
    }

    /// Store population statistics computed by a [`PopulationAccumulator`].
    pub fn set_population(&self, mean: Tensor<1>, var: Tensor<1>) {
        store_running(&self.population_mean, mean);
        store_running(&self.population_var, var);
    }

    /// Check an input of shape `dims` for normalising with its own batch statistics: rank,
    /// channels, and more than one value per channel. Returns m, the values per channel.
    pub fn check_train_batch(&self, dims: &[usize]) -> Result<usize, BnError> {
        check_train_channels(dims, self.channels())
    }

    /// Take the batch statistics a fused op computed with this layer's γ and β, exactly as
    /// [`BatchNorm::forward_with_stats`] does with its own: the moving averages absorb them
    /// when `mode` is `Train { update_running: true }`.
    pub fn absorb_batch(&self, stats: BatchStats, mode: BnMode) -> BatchStats {
        let stats = stats.detach();
        if mode.updates_running() {
            self.update_running(&stats);
        }
        stats
    }

    /// Fold one training batch into the moving averages (PyTorch's convention, unbiased var),
    /// on the device.
    fn update_running(&self, stats: &BatchStats) {
        let m = self.momentum;
        let unbias = stats.count as f64 / (stats.count as f64 - 1.0);
        blend_running(&self.running_mean, stats.mean.clone(), 1.0 - m, m);
        blend_running(
            &self.running_var,
            stats.biased_var.clone(),
            1.0 - m,
            m * unbias,
        );
    }

    /// Check the input's rank and channels; return m, the values per channel.
    fn check_input(&self, dims: &[usize]) -> Result<usize, BnError> {
        check_channels(dims, self.channels())
    }
}

/// [`check_channels`], and more than one value per channel: what a layer that normalises with
/// the batch's own statistics needs (with one value the variance is undefined).
pub fn check_train_channels(dims: &[usize], channels: usize) -> Result<usize, BnError> {
    let count = check_channels(dims, channels)?;
    if count < 2 {
        return Err(BnError::SingleValue {
            shape: dims.to_vec(),
        });
    }
    Ok(count)
}

/// Replace a `[C]` running state by `keep·old + take·batch`, on the device the state lives on,
/// in its own dtype. Every layer's moving averages update through this, so the update never
/// reads them back to the host (on a GPU, each read would wait for the queue to drain; Batch
/// Renorm still reads them, and its batch statistics, to compute r and d). The detach keeps
/// the running state out of the graph whatever the caller passes.
pub fn blend_running(state: &RunningState<Tensor<1>>, batch: Tensor<1>, keep: f64, take: f64) {
    let old = state.value_sync();
    let batch = batch.detach().to_device(&old.device()).cast(old.dtype());
    state.update(old.mul_scalar(keep).add(batch.mul_scalar(take)));
}

/// Store `value` in a running state now, on the state's device (the population pass's results).
pub fn store_running(state: &RunningState<Tensor<1>>, value: Tensor<1>) {
    let device = state.value_sync().device();
    state.update(value.to_device(&device));
    // `update` stages the value for this thread; syncing makes it the stored value now.
    state.value_sync();
}

/// Check that an input of shape `dims` is `[N, C]` or `[N, C, H, W]` with `channels` on axis 1;
/// returns the values per channel. Every normalisation layer checks its input with this.
pub fn check_channels(dims: &[usize], channels: usize) -> Result<usize, BnError> {
    if dims.len() != 2 && dims.len() != 4 {
        return Err(BnError::Rank(dims.len()));
    }
    if dims[1] != channels {
        return Err(BnError::Channels {
            expected: channels,
            got: dims[1],
        });
    }
    Ok(dims.iter().product::<usize>() / channels)
}

/// scale = γ/√(Var+ε), shift = β − scale·E[x].
fn affine_from_stats(
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> (Tensor<1>, Tensor<1>) {
    let scale = gamma.div(var.add_scalar(eps).sqrt());
    let shift = beta.sub(scale.clone().mul(mean));
    (scale, shift)
}

/// y = scale[c]·x + shift[c], broadcasting the `[C]` vectors over axis 1.
pub fn apply_per_channel<const D: usize>(
    x: Tensor<D>,
    scale: Tensor<1>,
    shift: Tensor<1>,
) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[1] = scale.dims()[0];
    x.mul(scale.reshape(shape)).add(shift.reshape(shape))
}

/// Sums μ_B and σ²_B over K training mini-batches for the paper's population statistics
/// (Algorithm 2, line 10): E[x] = E_B[μ_B], Var[x] = m/(m−1)·E_B[σ²_B].
///
/// Sums are kept in f64 on the host so that K = 1000 batches lose no precision.
#[derive(Debug, Clone, Default)]
pub struct PopulationAccumulator {
    sum_mean: Vec<f64>,
    sum_var: Vec<f64>,
    batches: usize,
    count: usize,
}

impl PopulationAccumulator {
    /// Add one mini-batch's statistics. Every batch must have the same m.
    pub fn add(&mut self, stats: &BatchStats) {
        let mean = tensor_to_f64(stats.mean.clone());
        let var = tensor_to_f64(stats.biased_var.clone());
        if self.batches == 0 {
            self.sum_mean = vec![0.0; mean.len()];
            self.sum_var = vec![0.0; var.len()];
            self.count = stats.count;
        }
        debug_assert_eq!(self.count, stats.count, "population batches differ in size");
        for (s, v) in self.sum_mean.iter_mut().zip(mean) {
            *s += v;
        }
        for (s, v) in self.sum_var.iter_mut().zip(var) {
            *s += v;
        }
        self.batches += 1;
    }

    /// Number of batches added so far.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// (E[x], Var[x]) as f64 vectors, or None before any batch.
    pub fn finish(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        if self.batches == 0 {
            return None;
        }
        let k = self.batches as f64;
        let m = self.count as f64;
        let unbias = if self.count > 1 { m / (m - 1.0) } else { 1.0 };
        let mean = self.sum_mean.iter().map(|s| s / k).collect();
        let var = self.sum_var.iter().map(|s| unbias * s / k).collect();
        Some((mean, var))
    }
}
