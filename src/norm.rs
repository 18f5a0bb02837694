//! Normalisation layers behind one seam: the model, the training loop and the population pass
//! ask a [`Norm`] for what they need, and never match on which layer it is or read its fields.
//!
//! What a layer offers:
//! - [`Norm::forward_with_stats`]: the forward pass in a [`BnMode`] (training, with the
//!   statistics it took from the batch, or inference with fixed statistics);
//! - [`Norm::fused_dense_parts`]: whether the fused dense kernel can apply it in training (BN
//!   over the whole batch, whose statistics the kernel hands back through [`FusedBn::absorb`]);
//! - [`Norm::inference_affine`]: the per-channel affine map it is in inference, when it is one
//!   (BN with fixed statistics, Algorithm 2), so that it can be folded into the linear map
//!   before it;
//! - [`Norm::set_population`]: where the paper's population statistics go, for layers that
//!   keep statistics across batches;
//! - [`Norm::linear_weight`] / [`Norm::conv_weight`]: the weight the layer before it uses, for
//!   layers that re-parametrise it (Weight Norm), and [`Norm::data_init_linear`] /
//!   [`Norm::data_init_conv`] / [`Norm::with_data_init`] for their data-dependent
//!   initialisation;
//! - [`Norm::begin_step`]: the training step about to run, for layers with a schedule (Batch
//!   Renorm's r_max and d_max).
//!
//! The settings: [`NormConfig`] (`config.rs`), the `norm` key of a run's config, with each
//! layer's own settings beside the layer ([`BatchConfig`], [`RenormConfig`], [`GroupConfig`],
//! [`WeightConfig`]).
//!
//! The layers: [`BatchNorm`] (`batch`), [`BatchRenorm`] (`renorm`), [`GroupNorm`] (`group`, and
//! `layer` as its one-group case), [`WeightNorm`] (`weight`, optionally with [`MeanOnlyBn`]).
//! BN and Batch Renorm can take their statistics over groups of `norm.stats_batch` examples
//! (`ghost.rs`). Santurkar et al.'s noise after the layer is [`add_noise`] (`noise.rs`).
//!
//! Adding a layer: its file under `src/norm/` with the layer and its settings, a variant of
//! [`Norm`] and of [`LayerConfig`] with a [`NormKind`], and one arm wherever the compiler asks
//! (the methods below, `config.rs`'s conversions). Nothing outside this folder changes unless
//! the layer needs something no layer offered before.

mod affine;
mod batch;
mod config;
mod ghost;
mod group;
mod noise;
mod renorm;
mod shape;
mod weight;

use burn::tensor::{Device, Tensor};

pub use batch::{BatchConfig, BatchNorm, BnError, BnMode, InferenceStats, PopulationAccumulator};
pub use config::{InferenceSource, LayerConfig, NormConfig, NormKind, Placement};
pub use ghost::{BatchStats, Split, split};
pub use group::{GroupConfig, GroupNorm};
pub use noise::{NoiseConfig, add_noise, noise_values};
pub use renorm::{BatchRenorm, Correction, RenormConfig, RenormSchedule};
pub use shape::LayerShape;
pub use weight::{MeanOnlyBn, WeightConfig, WeightNorm, init_from_outputs, unit_columns};

/// A normalisation layer over C channels (features of an MLP layer, channels of a conv map).
///
/// Its [`burn::module::Module`] implementation hands each call to the layer inside
/// ([`crate::tensor::enum_module`]), so checkpoints name parameters as if the layer stood there
/// alone (`norms.0.gamma`).
#[derive(Debug, Clone)]
pub enum Norm {
    /// Batch Normalization (Ioffe & Szegedy 2015).
    Batch(BatchNorm),
    /// Batch Renormalization (Ioffe 2017).
    Renorm(BatchRenorm),
    /// Group Normalization (Wu & He 2018); Layer Normalization when it has one group.
    Group(GroupNorm),
    /// Weight Normalization (Salimans & Kingma 2016), optionally with mean-only BN.
    Weight(WeightNorm),
}

crate::tensor::enum_module!(Norm {
    Batch,
    Renorm,
    Group,
    Weight
});

/// What the fused dense kernel can do with a layer's normalisation in training.
pub enum FusedNorm<'a> {
    /// Nothing to apply at the normalisation slot (Weight Norm without mean-only BN).
    Nothing,
    /// BN over the whole batch: the kernel applies its γ, β and ε, and hands the statistics it
    /// took back through [`FusedBn::absorb`].
    Batch(FusedBn<'a>),
    /// The kernel cannot apply it; the layer runs op by op after the kernel's linear map.
    Unsupported,
}

/// BN as the fused dense kernel applies it: its γ, β and ε going in, its batch statistics
/// coming back.
pub struct FusedBn<'a>(&'a BatchNorm);

impl FusedBn<'_> {
    /// (γ, β, ε) for the kernel.
    pub fn parts(&self) -> (Tensor<1>, Tensor<1>, f64) {
        (self.0.gamma(), self.0.beta(), self.0.eps())
    }

    /// Check the kernel's output shape `dims` (`[N, C]`) for batch statistics; m on success.
    pub fn check(&self, dims: &[usize]) -> Result<usize, BnError> {
        self.0.check_train_batch(dims)
    }

    /// Take the statistics the kernel computed, as [`BatchNorm::forward_with_stats`] takes its
    /// own (the moving averages absorb them in a real training step).
    pub fn absorb(&self, stats: BatchStats, mode: BnMode) -> BatchStats {
        self.0.absorb_batch(stats, mode)
    }
}

impl Norm {
    /// The layer `config` asks for over `channels` channels, for a run of `steps` steps;
    /// `None` for `kind: none`.
    pub fn new(config: &NormConfig, channels: usize, steps: u64, device: &Device) -> Option<Norm> {
        let (eps, momentum) = (config.eps, config.momentum);
        let norm = match &config.layer {
            LayerConfig::None => return None,
            LayerConfig::Batch(bn) => Norm::Batch(
                BatchNorm::new(channels, eps, momentum, device).with_stats_batch(bn.stats_batch),
            ),
            LayerConfig::Renorm(brn) => Norm::Renorm(
                BatchRenorm::new(channels, eps, momentum, brn.schedule.clone(), steps, device)
                    .with_stats_batch(brn.bn.stats_batch),
            ),
            LayerConfig::Layer => Norm::Group(GroupNorm::new(channels, 1, eps, device)),
            LayerConfig::Group(gn) => Norm::Group(GroupNorm::new(channels, gn.groups, eps, device)),
            LayerConfig::Weight(wn) => {
                Norm::Weight(WeightNorm::new(channels, wn.mean_only, momentum, device))
            }
        };
        Some(norm)
    }

    /// Normalise `x` (`[N, C]` or `[N, C, H, W]`) as `mode` says; in training, also return the
    /// statistics the layer took from the batch (what the population pass averages), for
    /// layers that take any.
    pub fn forward_with_stats<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<(Tensor<D>, Option<BatchStats>), BnError> {
        match self {
            Norm::Batch(bn) => bn.forward_with_stats(x, mode),
            Norm::Renorm(brn) => brn.forward_with_stats(x, mode),
            Norm::Group(gn) => Ok((gn.forward(x)?, None)),
            Norm::Weight(wn) => wn.forward_with_stats(x, mode),
        }
    }

    /// What the fused dense kernel can do with this layer in training (see [`FusedNorm`]).
    pub fn fused_dense_parts(&self) -> FusedNorm<'_> {
        match self {
            Norm::Batch(bn) if bn.uses_whole_batch() => FusedNorm::Batch(FusedBn(bn)),
            Norm::Weight(wn) if !wn.has_mean_only() => FusedNorm::Nothing,
            _ => FusedNorm::Unsupported,
        }
    }

    /// In inference with `stats`, the layer as `y = scale·x + shift` per channel, when it is
    /// such a map: `(scale, shift)`.
    pub fn inference_affine(&self, stats: InferenceStats) -> Option<(Tensor<1>, Tensor<1>)> {
        if !self.is_affine_in_inference(stats) {
            return None;
        }
        match self {
            Norm::Batch(bn) => Some(bn.inference_affine(stats)),
            Norm::Renorm(brn) => Some(brn.inference_affine(stats)),
            Norm::Group(_) => None,
            Norm::Weight(wn) => wn.inference_affine(stats),
        }
    }

    /// Whether [`Norm::inference_affine`] gives the layer for `stats` (cheap: no tensor work).
    /// BN with fixed statistics is affine; with each test batch's own statistics it is not, and
    /// Layer and Group Norm never are (their statistics come from each example).
    pub fn is_affine_in_inference(&self, stats: InferenceStats) -> bool {
        match self {
            Norm::Batch(_) | Norm::Renorm(_) => stats != InferenceStats::Batch,
            Norm::Group(_) => false,
            Norm::Weight(wn) => wn.is_affine_in_inference(stats),
        }
    }

    /// Store the paper's population statistics (Algorithm 2), for layers that use them.
    pub fn set_population(&self, mean: Tensor<1>, var: Tensor<1>) {
        match self {
            Norm::Batch(bn) => bn.set_population(mean, var),
            Norm::Renorm(brn) => brn.set_population(mean, var),
            Norm::Weight(wn) => wn.set_population(mean),
            Norm::Group(_) => {}
        }
    }

    /// The weight `[in, out]` the linear layer before this one computes with: Weight Norm's
    /// g·v/‖v‖, or `v` itself.
    pub fn linear_weight(&self, v: Tensor<2>) -> Tensor<2> {
        match self {
            Norm::Weight(wn) => wn.linear_weight(v),
            _ => v,
        }
    }

    /// The weight `[out, in, 3, 3]` the conv layer before this one computes with.
    pub fn conv_weight(&self, v: Tensor<4>) -> Tensor<4> {
        match self {
            Norm::Weight(wn) => wn.conv_weight(v),
            _ => v,
        }
    }

    /// The weight `[in, out]` the data-dependent initialisation fits g and b to (each unit's
    /// v/‖v‖), for layers that take one (Weight Norm); `None` for the others.
    pub fn data_init_linear(&self, v: Tensor<2>) -> Option<Tensor<2>> {
        match self {
            Norm::Weight(_) => Some(unit_columns(v)),
            _ => None,
        }
    }

    /// The conv weight `[out, in, kh, kw]` the data-dependent initialisation fits to.
    pub fn data_init_conv(&self, v: Tensor<4>) -> Option<Tensor<4>> {
        match self {
            Norm::Weight(_) => Some(weight::unit_filters(v)),
            _ => None,
        }
    }

    /// The layer after the data-dependent initialisation from t (the outputs of the weight
    /// [`Norm::data_init_linear`] gave, `[units, values]`), and the bias the layer before
    /// should start with. A layer without one is returned as it is, with a zero bias.
    pub fn with_data_init(self, t: Tensor<2>) -> (Norm, Tensor<1>) {
        match self {
            Norm::Weight(wn) => {
                let (wn, b) = wn.with_data_init(t);
                (Norm::Weight(wn), b)
            }
            other => {
                let units = t.dims()[0];
                let zeros = Tensor::zeros([units], (&t.device(), t.dtype()));
                (other, zeros)
            }
        }
    }

    /// Tell the layer which training step comes next (Batch Renorm's r_max and d_max follow a
    /// schedule over the run).
    pub fn begin_step(&self, step: u64) {
        if let Norm::Renorm(brn) = self {
            brn.begin_step(step);
        }
    }

    /// The BatchNorm inside, for tests and tools that inspect its state.
    pub fn as_batch(&self) -> Option<&BatchNorm> {
        match self {
            Norm::Batch(bn) => Some(bn),
            _ => None,
        }
    }
}
