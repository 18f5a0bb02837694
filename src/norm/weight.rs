//! Weight Normalization (Salimans & Kingma 2016), with its companion mean-only BN.
//!
//! # Formula
//!
//! A layer's weight is re-parametrised per output unit o as
//!
//! ```text
//! w_o = g_o · v_o / ‖v_o‖             ‖·‖ over the unit's inputs (and 3×3 taps for a conv)
//! ```
//!
//! and the layer computes x·w + b as before; v (the layer's own weight tensor) and g are trained.
//! Layout trap: Burn's `Linear` stores its weight as `[in, out]`, so the norm of unit o is over
//! axis 0; PyTorch's `nn.Linear` (and the reference vectors) store `[out, in]`. A conv weight is
//! `[out, in, 3, 3]` in both.
//!
//! Data-dependent initialisation (the paper's section 3), from one training batch, layer by
//! layer: with t = x·v/‖v‖, g = 1/σ(t) and b = −μ(t)/σ(t) per unit (σ biased, with 1e-10 under
//! the root), so every pre-activation starts with mean 0 and variance 1 (`Net::init_weight_norm`).
//!
//! Mean-only BN (`norm.mean_only`), at the layer's normalisation slot:
//!
//! ```text
//! training:  y = x − μ_B + β     (μ_B over N, or N·H·W; never divided by a std)
//! running ← (1 − momentum)·running + momentum·μ_B
//! inference: y = x − running + β
//! ```
//!
//! With mean-only BN the layer's bias is dropped (β replaces it); without it, Weight Norm does
//! nothing at the normalisation slot and the layer keeps its bias b.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor};

use super::batch::{BnError, BnMode, InferenceStats, blend_running, check_channels, store_running};
use super::ghost::BatchStats;
use crate::kernels::{center_columns, weight_norm_columns};
use crate::tensor::leaf;

/// Weight Norm's own settings in a config: `norm.mean_only` and `norm.data_init`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightConfig {
    /// Add mean-only BN (subtract the batch mean, keep a running mean for inference, never
    /// divide by a std), as Salimans & Kingma recommend.
    pub mean_only: bool,
    /// The paper's data-dependent initialisation of g (and b) from the first training batch, so
    /// every pre-activation starts with mean 0 and variance 1.
    pub data_init: bool,
}

impl Default for WeightConfig {
    fn default() -> Self {
        Self {
            mean_only: false,
            data_init: true,
        }
    }
}

impl WeightConfig {
    /// "Weight Norm", or "Weight Norm + mean-only BN".
    pub fn label(&self) -> String {
        match self.mean_only {
            true => "Weight Norm + mean-only BN".to_string(),
            false => "Weight Norm".to_string(),
        }
    }
}

/// Our Weight Norm layer: the per-unit scales g, and optionally mean-only BN.
#[derive(Module, Debug)]
pub struct WeightNorm {
    /// g, one per output unit (channel), initialised to 1 (the data-dependent initialisation
    /// replaces it before training when `norm.data_init` is on).
    g: Param<Tensor<1>>,
    /// Mean-only BN at the normalisation slot, when `norm.mean_only`.
    mean_only: Option<MeanOnlyBn>,
}

/// Mean-only batch normalisation: subtract the batch mean, add β.
#[derive(Module, Debug)]
pub struct MeanOnlyBn {
    beta: Param<Tensor<1>>,
    running_mean: RunningState<Tensor<1>>,
    population_mean: RunningState<Tensor<1>>,
    momentum: f64,
}

impl WeightNorm {
    /// Weight Norm over `channels` output units, with mean-only BN when `mean_only`.
    pub fn new(channels: usize, mean_only: bool, momentum: f64, device: &Device) -> Self {
        Self {
            g: Param::from_tensor(Tensor::ones([channels], device)),
            mean_only: mean_only.then(|| MeanOnlyBn::new(channels, momentum, device)),
        }
    }

    /// Number of output units C.
    pub fn channels(&self) -> usize {
        self.g.val().dims()[0]
    }

    /// g, as the weight uses it.
    pub fn g(&self) -> Tensor<1> {
        self.g.val()
    }

    /// Whether the layer does anything at the normalisation slot (mean-only BN).
    pub fn has_mean_only(&self) -> bool {
        self.mean_only.is_some()
    }

    /// A linear layer's weight `[in, out]` (Burn's layout) as w = g·v/‖v‖, column by column.
    /// One fused op ([`weight_norm_columns`]); its reference is the same formula in Burn's ops.
    pub fn linear_weight(&self, v: Tensor<2>) -> Tensor<2> {
        weight_norm_columns(v, self.g.val())
    }

    /// A conv weight `[out, in, kh, kw]` as w = g·v/‖v‖, filter by filter.
    pub fn conv_weight(&self, v: Tensor<4>) -> Tensor<4> {
        let out = self.channels();
        unit_filters(v).mul(self.g.val().reshape([out, 1, 1, 1]))
    }

    /// The layer at its normalisation slot: mean-only BN, or nothing.
    pub fn forward_with_stats<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<(Tensor<D>, Option<BatchStats>), BnError> {
        match &self.mean_only {
            Some(bn) => bn.forward_with_stats(x, mode),
            None => Ok((x, None)),
        }
    }

    /// The slot in inference as `y = scale·x + shift` per channel, when it is such a map (it
    /// is unless mean-only BN subtracts each test batch's own mean).
    pub fn inference_affine(&self, stats: InferenceStats) -> Option<(Tensor<1>, Tensor<1>)> {
        if !self.is_affine_in_inference(stats) {
            return None;
        }
        let g = self.g.val();
        Some(match &self.mean_only {
            Some(bn) => (g.ones_like(), bn.beta.val().sub(bn.fixed_mean(stats))),
            None => (g.ones_like(), g.zeros_like()),
        })
    }

    /// Whether [`WeightNorm::inference_affine`] gives the slot for `stats`.
    pub fn is_affine_in_inference(&self, stats: InferenceStats) -> bool {
        self.mean_only.is_none() || stats != InferenceStats::Batch
    }

    /// Store the population pass's mean in mean-only BN (it has no variance); nothing without.
    pub fn set_population(&self, mean: Tensor<1>) {
        if let Some(bn) = &self.mean_only {
            bn.set_population(mean);
        }
    }

    /// The data-dependent initialisation from t = x·v/‖v‖ of this layer's units, laid out
    /// `[units, values]`: g = 1/σ(t) (see [`init_from_outputs`]), and the bias b = −μ(t)/σ(t)
    /// the layer before should start with. g and b are fresh leaves, so they train.
    pub fn with_data_init(self, t: Tensor<2>) -> (Self, Tensor<1>) {
        let (g, b) = init_from_outputs(t);
        (self.with_g(leaf(g)), leaf(b))
    }

    /// The same layer after the data-dependent initialisation: g set to `g`, and mean-only BN's
    /// β (the bias b of a layer whose mean is subtracted) to 0, since the subtraction already
    /// centres the pre-activation.
    pub fn with_g(mut self, g: Tensor<1>) -> Self {
        if let Some(bn) = self.mean_only.as_mut() {
            let beta = bn.beta.val();
            let zeros = Tensor::zeros(beta.dims(), (&beta.device(), beta.dtype()));
            bn.beta = Param::from_tensor(zeros);
        }
        self.g = Param::from_tensor(g);
        self
    }
}

impl MeanOnlyBn {
    /// β = 0, running mean 0.
    pub fn new(channels: usize, momentum: f64, device: &Device) -> Self {
        let zeros = || Tensor::<1>::zeros([channels], device);
        Self {
            beta: Param::from_tensor(zeros()),
            running_mean: RunningState::new(zeros()),
            population_mean: RunningState::new(zeros()),
            momentum,
        }
    }

    /// The same layer with β and the running mean set, for tests against reference vectors.
    pub fn with_state(mut self, beta: Tensor<1>, running_mean: Tensor<1>) -> Self {
        self.beta = Param::from_tensor(beta);
        self.running_mean = RunningState::new(running_mean);
        self
    }

    /// Number of channels C.
    pub fn channels(&self) -> usize {
        self.beta.val().dims()[0]
    }

    /// β, as the forward pass uses it.
    pub fn beta(&self) -> Tensor<1> {
        self.beta.val()
    }

    /// The running mean, as the next step reads it.
    pub fn running_mean(&self) -> Tensor<1> {
        self.running_mean.value_sync()
    }

    /// Subtract μ_B (training, or inference with batch statistics) or the fixed mean, add β.
    pub fn forward_with_stats<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<(Tensor<D>, Option<BatchStats>), BnError> {
        let dims = x.dims();
        let c = self.channels();
        let count = check_channels(&dims, c)?;
        let mut shape = [1usize; D];
        shape[1] = c;
        let beta = self.beta.val().reshape(shape);
        match mode {
            BnMode::Train { .. } | BnMode::Inference(InferenceStats::Batch) => {
                let (y, mean) = if D == 2 {
                    // [N, C] (the MLP): one fused op, whose reference is the branch below.
                    let (y, mean) = center_columns(x.reshape([dims[0], c]), self.beta.val());
                    (y.reshape(dims), mean)
                } else {
                    let mean = channel_mean(x.clone());
                    (x.sub(mean.clone().reshape(shape)).add(beta), mean)
                };
                let stats = BatchStats {
                    mean: mean.clone().detach(),
                    biased_var: mean.detach().zeros_like(),
                    count,
                };
                if mode.updates_running() {
                    self.update_running(&stats.mean);
                }
                let stats = matches!(mode, BnMode::Train { .. }).then_some(stats);
                Ok((y, stats))
            }
            BnMode::Inference(stats) => {
                let mean = self.fixed_mean(stats).to_device(&x.device());
                Ok((x.sub(mean.reshape(shape)).add(beta), None))
            }
        }
    }

    /// The mean inference subtracts: the moving average, or the population pass's.
    pub fn fixed_mean(&self, stats: InferenceStats) -> Tensor<1> {
        match stats {
            InferenceStats::Population => self.population_mean.value_sync(),
            InferenceStats::Moving | InferenceStats::Batch => self.running_mean.value_sync(),
        }
    }

    /// Store the population pass's mean (mean-only BN has no variance to store).
    pub fn set_population(&self, mean: Tensor<1>) {
        store_running(&self.population_mean, mean);
    }

    fn update_running(&self, batch_mean: &Tensor<1>) {
        let m = self.momentum;
        blend_running(&self.running_mean, batch_mean.clone(), 1.0 - m, m);
    }
}

/// Each column of a linear weight `[in, out]` (Burn's layout) divided by its norm: v/‖v‖.
pub fn unit_columns(v: Tensor<2>) -> Tensor<2> {
    v.clone().div(v.square().sum_dim(0).sqrt())
}

/// Each filter of a conv weight `[out, in, kh, kw]` divided by its norm.
pub fn unit_filters(v: Tensor<4>) -> Tensor<4> {
    let [out, c_in, kh, kw] = v.dims();
    let norms = v
        .clone()
        .reshape([out, c_in * kh * kw])
        .square()
        .sum_dim(1)
        .sqrt();
    v.div(norms.reshape([out, 1, 1, 1]))
}

/// The data-dependent initialisation from t = x·v/‖v‖ laid out `[units, values]` (each row one
/// unit's values over the batch, and positions for a conv): g = 1/√(Var[t] + 1e-10) and
/// b = −E[t]·g per unit, with the biased variance (as the reference vectors).
pub fn init_from_outputs(t: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
    let units = t.dims()[0];
    let (var, mean) = t.var_mean_bias(1);
    let g = var.add_scalar(1e-10).sqrt().recip().reshape([units]);
    let b = mean.reshape([units]).mul(g.clone()).neg();
    (g, b)
}

/// Per-channel mean of `x` (`[N, C, …]`) as a `[C]` tensor, differentiable.
fn channel_mean<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let dims = x.dims();
    let c = dims[1];
    let per_channel = dims.iter().product::<usize>() / c;
    x.swap_dims(0, 1)
        .reshape([c, per_channel])
        .mean_dim(1)
        .reshape([c])
}
