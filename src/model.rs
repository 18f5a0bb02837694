//! The networks: each architecture in its own file ([`mlp`]: the paper's sigmoid MLP, [`cnn`]:
//! a small CNN, [`inception`]: Zhang et al.'s small Inception for CIFAR-10), each with a normalisation layer N ([`crate::norm`]: BN, Batch Renorm, Layer,
//! Group or Weight Norm) before or after the nonlinearity, or none, and [`Net`], the one type
//! training, the bench and the measures hold whichever it is.
//!
//! What the architectures share is in `block.rs`: the forward [`Mode`], the [`Trace`] of
//! pre-activations, and the hidden layer after its linear map (normalisation, noise, g,
//! dropout). What a config asks of an architecture before a net exists (widths, checks, size)
//! is its [`Architecture`] (`geometry.rs`).
//!
//! Every net has a fast forward path and [`Net::forward_reference`], the same function op by
//! op, which the tests hold the fast paths to (1e-10 in float64).
//!
//! Adding an architecture: its file with its settings (implementing [`Architecture`]) and its
//! module, a variant of [`Arch`], [`ArchConfig`] and [`Net`], and one arm wherever the compiler
//! asks (`config.rs`'s conversions, [`Net`]'s methods).
//!
//! Weights are drawn from bn-exp's own generator ([`crate::rng`]), biases start at 0.

mod block;
mod cnn;
mod config;
mod geometry;
mod inception;
mod mlp;

use anyhow::Result;
use burn::tensor::{Device, Tensor};

pub use block::{
    Activation, CLASSES, HostTensor, Init, Mode, NetSpec, Pass, Trace, WeightLayer, param_ids,
};
pub use cnn::{Cnn, CnnConfig};
pub use config::{Arch, ArchConfig, ModelConfig};
pub use geometry::{Architecture, Compute, ImageShape, NetSize};
pub use inception::{Inception, InceptionConfig};
pub use mlp::{Mlp, MlpConfig};

use crate::norm::{Norm, NormConfig};
use crate::rng::Rng;
use block::LayerBuilder;

/// A classifier of any architecture.
///
/// Its [`burn::module::Module`] implementation hands each call to the net inside, so parameter
/// paths (and so checkpoints) are those of the architecture's own fields (`linears.0.weight`).
#[derive(Debug, Clone)]
pub enum Net {
    Mlp(Mlp),
    Cnn(Cnn),
    Inception(Inception),
}

crate::tensor::enum_module!(Net {
    Mlp,
    Cnn,
    Inception
});

/// Run `$body` with `$net` bound to the architecture inside `$self`, whichever it is.
macro_rules! each_net {
    ($self:expr, $net:ident => $body:expr) => {
        match $self {
            Net::Mlp($net) => $body,
            Net::Cnn($net) => $body,
            Net::Inception($net) => $body,
        }
    };
}

/// Everything a net is built from: its settings, the images it takes, the run's seed and length.
#[derive(Debug, Clone, Copy)]
pub struct NetRecipe<'a> {
    pub model: &'a ModelConfig,
    pub norm: &'a NormConfig,
    pub image: ImageShape,
    pub seed: u64,
    /// The run's steps (Batch Renorm's schedule is in fractions of them).
    pub steps: u64,
}

impl Net {
    /// Build the net `recipe` describes on `device`, with weights from its seed.
    pub fn new(recipe: NetRecipe, device: &Device) -> Net {
        let NetRecipe {
            model,
            norm,
            image,
            seed,
            steps,
        } = recipe;
        let spec = NetSpec {
            activation: model.activation,
            placement: norm.placement(),
            dropout: model.dropout,
            noise: norm.noise().cloned(),
            in_channels: image.channels,
            side: image.side,
        };
        let mut build = LayerBuilder {
            norm,
            steps,
            init: model.init,
            init_std: model.init_std,
            rng: Rng::stream(seed, 0x1A17, 0),
            device,
        };
        match &model.arch {
            ArchConfig::Mlp(c) => Net::Mlp(Mlp::new(c, spec, &mut build)),
            ArchConfig::Cnn(c) => Net::Cnn(Cnn::new(c, spec, &mut build)),
            ArchConfig::Inception(c) => Net::Inception(Inception::new(c, spec, &mut build)),
        }
    }

    /// Logits `[N, 10]` for flattened inputs `[N, C·H·W]`, in the pass's mode. A traced pass
    /// ([`Pass::traced`]) also records each hidden layer's pre-activations and BN batch
    /// statistics (slow: copies to the host).
    ///
    /// Takes the architecture's fast path where one applies (each file says which), and
    /// otherwise [`Net::forward_reference`]; each fast path computes the same function as the
    /// reference, with different float rounding.
    pub fn forward(&self, x: Tensor<2>, pass: Pass) -> Result<Tensor<2>> {
        each_net!(self, net => net.forward(x, pass))
    }

    /// The same function as [`Net::forward`], op by op, with no shortcut: each layer's linear
    /// map or convolution, the normalisation through [`Norm::forward_with_stats`], g, pooling,
    /// then the output layer through Burn's `Linear`. The fast paths are tested against it.
    pub fn forward_reference(&self, x: Tensor<2>, pass: Pass) -> Result<Tensor<2>> {
        each_net!(self, net => net.forward_reference(x, pass))
    }

    /// The normalisation layers, input to output (empty without normalisation).
    pub fn norms(&self) -> &[Norm] {
        each_net!(self, net => net.norms())
    }

    /// The weight layers as Santurkar et al.'s ICS measure sees them, input to output: each
    /// hidden layer's weight with its bias and its normalisation's parameters, then the output
    /// layer.
    pub fn weight_layers(&self) -> Vec<WeightLayer> {
        each_net!(self, net => net.weight_layers())
    }

    /// Tell every normalisation layer which training step comes next.
    pub fn begin_step(&self, step: u64) {
        for norm in self.norms() {
            norm.begin_step(step);
        }
    }

    /// The data-dependent initialisation of layers that take one (Weight Norm; Salimans &
    /// Kingma 2016, section 3) on the batch `x` (`[N, C·H·W]`), layer by layer: with
    /// t = x·v/‖v‖ each unit gets g = 1/σ(t) and, when its layer has a bias, b = −μ(t)/σ(t), so
    /// its pre-activation starts with mean 0 and variance 1 on this batch; the next layer is
    /// initialised on this layer's new output. Other nets are returned as they are.
    pub fn with_data_init(self, x: Tensor<2>) -> Result<Net> {
        Ok(match self {
            Net::Mlp(net) => Net::Mlp(net.with_data_init(x)?),
            Net::Cnn(net) => Net::Cnn(net.with_data_init(x)?),
            Net::Inception(net) => Net::Inception(net.with_data_init(x)?),
        })
    }
}
