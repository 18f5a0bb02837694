//! Normalisation layers behind one seam: the model, the training loop and the population pass
//! ask a [`Norm`] for what they need, and never match on which layer it is.
//!
//! What a layer offers:
//! - [`Norm::forward_with_stats`]: the forward pass in a [`BnMode`] (training, with the
//!   statistics it took from the batch, or inference with fixed statistics);
//! - [`Norm::fused_dense_parts`]: whether the fused dense kernel can apply it in training (BN
//!   with batch statistics: γ, β and ε), and [`Norm::absorb_batch`] for the statistics that
//!   kernel hands back;
//! - [`Norm::inference_affine`]: the per-channel affine map it is in inference, when it is one
//!   (BN with fixed statistics, Algorithm 2), so that it can be folded into the linear map
//!   before it;
//! - [`Norm::set_population`]: where the paper's population statistics go, for layers that
//!   keep statistics across batches.
//!
//! Adding a layer: its module under `src/norm/`, a variant of [`Norm`], a [`NormKind`] in the
//! config, and one arm in each method below. Nothing outside this folder changes unless the
//! layer needs something no layer offered before.

pub mod batch;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::{Device, Tensor};

use crate::config::{NormConfig, NormKind};
pub use batch::{BatchNorm, BatchStats, BnError, BnMode, InferenceStats, PopulationAccumulator};

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
}

impl Module for Norm {
    fn collect_devices(&self, devices: Devices) -> Devices {
        match self {
            Norm::Batch(bn) => bn.collect_devices(devices),
        }
    }

    fn fork(self, device: &Device) -> Self {
        match self {
            Norm::Batch(bn) => Norm::Batch(bn.fork(device)),
        }
    }

    fn to_device(self, device: &Device) -> Self {
        match self {
            Norm::Batch(bn) => Norm::Batch(bn.to_device(device)),
        }
    }

    fn train(self) -> Self {
        match self {
            Norm::Batch(bn) => Norm::Batch(bn.train()),
        }
    }

    fn valid(&self) -> Self {
        match self {
            Norm::Batch(bn) => Norm::Batch(bn.valid()),
        }
    }

    fn materialize(self) -> Self {
        match self {
            Norm::Batch(bn) => Norm::Batch(bn.materialize()),
        }
    }

    fn visit<Visitor: ModuleVisitor>(&self, visitor: &mut Visitor) {
        match self {
            Norm::Batch(bn) => bn.visit(visitor),
        }
    }

    fn map<Mapper: ModuleMapper>(self, mapper: &mut Mapper) -> Self {
        match self {
            Norm::Batch(bn) => Norm::Batch(bn.map(mapper)),
        }
    }
}

impl ModuleDisplayDefault for Norm {
    fn content(&self, content: Content) -> Option<Content> {
        match self {
            Norm::Batch(bn) => bn.content(content),
        }
    }
}

impl ModuleDisplay for Norm {}

impl std::fmt::Display for Norm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Norm::Batch(bn) => std::fmt::Display::fmt(bn, f),
        }
    }
}

impl Norm {
    /// The layer `config` asks for over `channels` channels; `None` for `kind: none`.
    pub fn new(config: &NormConfig, channels: usize, device: &Device) -> Option<Norm> {
        match config.kind {
            NormKind::None => None,
            NormKind::Batch => Some(Norm::Batch(BatchNorm::new(
                channels,
                config.eps,
                config.momentum,
                device,
            ))),
        }
    }

    /// Normalise `x` (`[N, C]` or `[N, C, H, W]`) as `mode` says; in training, also return the
    /// statistics the layer took from the batch (what the population pass averages).
    pub fn forward_with_stats<const D: usize>(
        &self,
        x: Tensor<D>,
        mode: BnMode,
    ) -> Result<(Tensor<D>, Option<BatchStats>), BnError> {
        match self {
            Norm::Batch(bn) => bn.forward_with_stats(x, mode),
        }
    }

    /// `(γ, β, ε)` when the fused dense kernel can apply this layer with the batch's own
    /// statistics in training (BN before the nonlinearity); `None` for a layer it cannot (none
    /// yet: every kind of today can), which then runs op by op.
    pub fn fused_dense_parts(&self) -> Option<(Tensor<1>, Tensor<1>, f64)> {
        match self {
            Norm::Batch(bn) => Some((bn.gamma.val(), bn.beta.val(), bn.eps)),
        }
    }

    /// Check a training input's shape (`dims`) for normalising with its own statistics;
    /// returns the values per channel.
    pub fn check_train_batch(&self, dims: &[usize]) -> Result<usize, BnError> {
        match self {
            Norm::Batch(bn) => bn.check_train_batch(dims),
        }
    }

    /// Take the batch statistics the fused dense kernel computed with [`Norm::fused_dense_parts`]
    /// as this layer's own: the running averages absorb them in a real training step.
    pub fn absorb_batch(
        &self,
        mean: Tensor<1>,
        biased_var: Tensor<1>,
        count: usize,
        mode: BnMode,
    ) -> BatchStats {
        match self {
            Norm::Batch(bn) => bn.absorb_batch(mean, biased_var, count, mode),
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
        }
    }

    /// Whether [`Norm::inference_affine`] gives the layer for `stats` (cheap: no tensor work).
    /// BN with fixed statistics is affine; with each test batch's own statistics it is not.
    pub fn is_affine_in_inference(&self, stats: InferenceStats) -> bool {
        match self {
            Norm::Batch(_) => stats != InferenceStats::Batch,
        }
    }

    /// Store the paper's population statistics (Algorithm 2), for layers that use them.
    pub fn set_population(&self, mean: Tensor<1>, var: Tensor<1>) {
        match self {
            Norm::Batch(bn) => bn.set_population(mean, var),
        }
    }

    /// The BatchNorm inside, for tests and tools that inspect its state.
    pub fn as_batch(&self) -> Option<&BatchNorm> {
        match self {
            Norm::Batch(bn) => Some(bn),
        }
    }
}
