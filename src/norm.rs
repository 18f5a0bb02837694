//! Normalisation layers behind one seam: the model, the training loop and the population pass
//! ask a [`Norm`] for what they need, and never match on which layer it is.
//!
//! What a layer offers:
//! - [`Norm::forward_with_stats`]: the forward pass in a [`BnMode`] (training, with the
//!   statistics it took from the batch, or inference with fixed statistics);
//! - [`Norm::fused_dense_parts`]: whether the fused dense kernel can apply it in training (BN
//!   over the whole batch, whose [`BatchNorm::absorb_batch`] takes the statistics the kernel
//!   hands back);
//! - [`Norm::inference_affine`]: the per-channel affine map it is in inference, when it is one
//!   (BN with fixed statistics, Algorithm 2), so that it can be folded into the linear map
//!   before it;
//! - [`Norm::set_population`]: where the paper's population statistics go, for layers that
//!   keep statistics across batches.
//!
//! - [`Norm::linear_weight`] / [`Norm::conv_weight`]: the weight the layer before it uses, for
//!   layers that re-parametrise it (Weight Norm);
//! - [`Norm::begin_step`]: the training step about to run, for layers with a schedule (Batch
//!   Renorm's r_max and d_max).
//!
//! The layers: [`BatchNorm`] (`batch`), [`BatchRenorm`] (`renorm`), [`GroupNorm`] (`group`, and
//! `layer` as its one-group case), [`WeightNorm`] (`weight`, optionally with [`MeanOnlyBn`]).
//! BN and Batch Renorm can take their statistics over groups of `norm.stats_batch` examples
//! ([`ghost`]).
//!
//! Adding a layer: its module under `src/norm/`, a variant of [`Norm`], a [`NormKind`] in the
//! config, and one arm in each method below. Nothing outside this folder changes unless the
//! layer needs something no layer offered before.

pub mod batch;
pub mod ghost;
pub mod group;
pub mod noise;
pub mod renorm;
pub mod weight;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::{Device, Tensor};

use crate::config::{NormConfig, NormKind};
pub use batch::{BatchNorm, BatchStats, BnError, BnMode, InferenceStats, PopulationAccumulator};
pub use group::GroupNorm;
pub use renorm::{BatchRenorm, Correction};
pub use weight::{MeanOnlyBn, WeightNorm};

/// A normalisation layer over C channels (features of an MLP layer, channels of a conv map).
///
/// Its [`Module`] implementation is written out rather than derived: the derive would put the
/// variant's name into every parameter's path (`norms.0.Batch.gamma`), and checkpoints written
/// before the seam existed (`norms.0.gamma`) could no longer be resumed. Which layer a run has
/// is in its `config.json`; the checkpoint only needs the parameters by position.
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

/// Run `$body` with `$layer` bound to the layer inside `$norm`, whichever it is.
macro_rules! each_layer {
    ($norm:expr, $layer:ident => $body:expr) => {
        match $norm {
            Norm::Batch($layer) => $body,
            Norm::Renorm($layer) => $body,
            Norm::Group($layer) => $body,
            Norm::Weight($layer) => $body,
        }
    };
}

/// Like [`each_layer`], rebuilding the same variant from `$body`'s result.
macro_rules! map_layer {
    ($norm:expr, $layer:ident => $body:expr) => {
        match $norm {
            Norm::Batch($layer) => Norm::Batch($body),
            Norm::Renorm($layer) => Norm::Renorm($body),
            Norm::Group($layer) => Norm::Group($body),
            Norm::Weight($layer) => Norm::Weight($body),
        }
    };
}

impl Module for Norm {
    fn collect_devices(&self, devices: Devices) -> Devices {
        each_layer!(self, layer => layer.collect_devices(devices))
    }

    fn fork(self, device: &Device) -> Self {
        map_layer!(self, layer => layer.fork(device))
    }

    fn to_device(self, device: &Device) -> Self {
        map_layer!(self, layer => layer.to_device(device))
    }

    fn train(self) -> Self {
        map_layer!(self, layer => layer.train())
    }

    fn valid(&self) -> Self {
        map_layer!(self, layer => layer.valid())
    }

    fn materialize(self) -> Self {
        map_layer!(self, layer => layer.materialize())
    }

    fn visit<Visitor: ModuleVisitor>(&self, visitor: &mut Visitor) {
        each_layer!(self, layer => layer.visit(visitor))
    }

    fn map<Mapper: ModuleMapper>(self, mapper: &mut Mapper) -> Self {
        map_layer!(self, layer => layer.map(mapper))
    }
}

impl ModuleDisplayDefault for Norm {
    fn content(&self, content: Content) -> Option<Content> {
        each_layer!(self, layer => layer.content(content))
    }
}

impl ModuleDisplay for Norm {}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        each_layer!(self, layer => std::fmt::Display::fmt(layer, f))
    }
}

/// What the fused dense kernel can do with a layer's normalisation in training.
pub enum FusedNorm<'a> {
    /// Nothing to apply at the normalisation slot (Weight Norm without mean-only BN).
    Nothing,
    /// BN over the whole batch: the kernel applies its γ, β and ε, and hands the statistics it
    /// took back to [`BatchNorm::absorb_batch`].
    Batch(&'a BatchNorm),
    /// The kernel cannot apply it; the layer runs op by op after the kernel's linear map.
    Unsupported,
}

impl Norm {
    /// The layer `config` asks for over `channels` channels, for a run of `steps` steps;
    /// `None` for `kind: none`.
    pub fn new(config: &NormConfig, channels: usize, steps: u64, device: &Device) -> Option<Norm> {
        let norm = match config.kind {
            NormKind::None => return None,
            NormKind::Batch => Norm::Batch(
                BatchNorm::new(channels, config.eps, config.momentum, device)
                    .with_stats_batch(config.stats_batch),
            ),
            NormKind::Renorm => Norm::Renorm(
                BatchRenorm::new(
                    channels,
                    config.eps,
                    config.momentum,
                    config.renorm.clone(),
                    steps,
                    device,
                )
                .with_stats_batch(config.stats_batch),
            ),
            NormKind::Layer => Norm::Group(GroupNorm::new(channels, 1, config.eps, device)),
            NormKind::Group => {
                Norm::Group(GroupNorm::new(channels, config.groups, config.eps, device))
            }
            NormKind::Weight => Norm::Weight(WeightNorm::new(
                channels,
                config.mean_only,
                config.momentum,
                device,
            )),
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
            Norm::Batch(bn) if bn.stats_batch.is_none() => FusedNorm::Batch(bn),
            Norm::Weight(wn) if wn.mean_only.is_none() => FusedNorm::Nothing,
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
            Norm::Weight(wn) => {
                let g = wn.g.val();
                Some(match &wn.mean_only {
                    Some(bn) => (g.ones_like(), bn.beta.val().sub(bn.fixed_mean(stats))),
                    None => (g.ones_like(), g.zeros_like()),
                })
            }
        }
    }

    /// Whether [`Norm::inference_affine`] gives the layer for `stats` (cheap: no tensor work).
    /// BN with fixed statistics is affine; with each test batch's own statistics it is not, and
    /// Layer and Group Norm never are (their statistics come from each example).
    pub fn is_affine_in_inference(&self, stats: InferenceStats) -> bool {
        match self {
            Norm::Batch(_) | Norm::Renorm(_) => stats != InferenceStats::Batch,
            Norm::Group(_) => false,
            Norm::Weight(wn) => wn.mean_only.is_none() || stats != InferenceStats::Batch,
        }
    }

    /// Store the paper's population statistics (Algorithm 2), for layers that use them.
    pub fn set_population(&self, mean: Tensor<1>, var: Tensor<1>) {
        match self {
            Norm::Batch(bn) => bn.set_population(mean, var),
            Norm::Renorm(brn) => brn.set_population(mean, var),
            Norm::Weight(WeightNorm {
                mean_only: Some(bn),
                ..
            }) => bn.set_population(mean),
            Norm::Group(_) | Norm::Weight(_) => {}
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
