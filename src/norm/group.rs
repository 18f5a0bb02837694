//! Group Normalization (Wu & He 2018), and Layer Normalization (Ba, Kiros & Hinton 2016) as
//! its one-group case.
//!
//! # Formula
//!
//! For each example n and each group of C/G channels (with all their H·W positions in a conv
//! map), over the M = (C/G)·H·W values x_i of that group:
//!
//! ```text
//! μ   = (1/M) Σ x_i
//! σ²  = (1/M) Σ (x_i − μ)²             biased, as PyTorch's GroupNorm and LayerNorm
//! x̂_i = (x_i − μ) / √(σ² + ε)
//! y_i = γ_c x̂_i + β_c                   γ and β per CHANNEL c, not per group
//! ```
//!
//! - G = 1 is Layer Norm: an MLP layer is normalised over its units per example, a conv map over
//!   C·H·W per example, with a per-channel γ and β. `norm.kind = "layer"` builds this layer
//!   with one group; PyTorch's `LayerNorm([C, H, W])` instead has a γ per value.
//! - G = C is Instance Norm (each channel of each example on its own). Copying the GN paper's
//!   G = 32 into a 32-channel conv gives exactly that.
//! - In an MLP, one unit per group (G = C) would normalise every unit to β: the config refuses it.
//!
//! No running state: training and inference compute the same function, from each example
//! alone, so the batch size never matters.
//!
//! # Shapes
//! Input `[N, C]` or `[N, C, H, W]`, output the same; γ and β are `[C]`. `tests/norm_layers.rs`
//! holds the layer to PyTorch's vectors and to finite differences, and its fast path
//! ([`GroupNorm::forward`]) to the reference ([`GroupNorm::forward_reference`]).

use anyhow::{Result, ensure};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorCreationOptions};

use super::affine::affine_accessors;
use super::batch::{BnError, check_channels};
use super::shape::LayerShape;
use crate::kernels::batch_norm_train_fused;

/// Group Norm's own setting in a config: `norm.groups` (Layer Norm has none: it is one group).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// G: each layer's channels (units) split into G groups. Must divide every hidden layer's
    /// width; G = channels is Instance Norm.
    pub groups: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self { groups: 4 }
    }
}

impl GroupConfig {
    /// G must divide every hidden layer's width and leave at least two values per group, or the
    /// group's variance is undefined. `unit` says what a width counts ("units", "channels").
    pub fn check(&self, layers: &[LayerShape], unit: &str) -> Result<()> {
        let g = self.groups;
        ensure!(g >= 1, "norm.groups must be at least 1, got 0");
        for (layer, shape) in layers.iter().enumerate() {
            let width = shape.width;
            ensure!(
                width.is_multiple_of(g),
                "norm.groups {g} does not divide the {width} {unit} of hidden layer {layer}: \
                 Group Norm splits each layer's {unit} into norm.groups equal groups"
            );
            ensure!(
                width / g * shape.positions >= 2,
                "norm.groups {g} leaves one value per group in hidden layer {layer} ({width} \
                 {unit}): each example's group would normalise to a constant; use at most {} \
                 groups",
                width / 2
            );
        }
        Ok(())
    }

    /// "Group Norm (G = 4)".
    pub fn label(&self) -> String {
        format!("Group Norm (G = {})", self.groups)
    }
}

/// Our Group Norm layer; Layer Norm when `groups` is 1. See the module documentation.
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// Scale γ per channel, initialised to 1.
    gamma: Param<Tensor<1>>,
    /// Shift β per channel, initialised to 0.
    beta: Param<Tensor<1>>,
    /// G, the number of groups (it divides the channel count).
    groups: usize,
    /// ε inside the square root.
    eps: f64,
}

impl GroupNorm {
    /// A layer over `channels` channels in `groups` groups: γ = 1, β = 0. The caller (the
    /// config's validation) makes sure `groups` divides `channels`.
    pub fn new(channels: usize, groups: usize, eps: f64, device: &Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            groups,
            eps,
        }
    }

    affine_accessors!();

    /// Normalise `x` (`[N, C]` or `[N, C, H, W]`), the same in training and inference.
    ///
    /// The standardisation runs through the fused BN kernel, on a view in which each group of
    /// each example is a channel: `[N, C, H, W]` reshaped (no copy) to `[1, N·G, M, 1]`, where
    /// BN's per-channel statistics over its M values are exactly the group's. The kernel's
    /// closed-form backward replaces autodiff's trip through the reduction ops; γ and β per
    /// channel are then two broadcast ops. [`GroupNorm::forward_reference`] is the same function
    /// op by op, and `tests/norm_layers.rs` holds the two together.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, BnError> {
        let dims = self.check_input(&x)?;
        let (n, c, inner) = (dims[0], dims[1], dims[2..].iter().product::<usize>());
        let rows = n * self.groups;
        let per_group = c / self.groups * inner;
        let like = TensorCreationOptions::new(x.device()).with_dtype(x.dtype());
        let as_channels = x.reshape([1, rows, per_group, 1]);
        let standard = batch_norm_train_fused(
            as_channels,
            Tensor::ones([rows], like.clone()),
            Tensor::zeros([rows], like),
            self.eps,
        )
        .output;
        Ok(self.scale_and_shift(standard.reshape([n, c, inner]), dims))
    }

    /// The same function as [`GroupNorm::forward`] in Burn's own ops: a reshape to `[N, G, M]`,
    /// two `mean_dim`s (μ, then the biased σ² as the mean of the squared deviations), and
    /// broadcasting, differentiated op by op by autodiff.
    ///
    /// Not Burn's `var_mean_bias`: it divides the sum of squares by M with `div_scalar`, whose
    /// backward in burn-autodiff 0.22 multiplies by 1/M rounded to float32 whatever the tensor's
    /// dtype (`1.0 / ops.state.elem::<f32>()`, `src/ops/tensor.rs` line 508). Where 1/M is
    /// inexact in float32 (M = 7: 4e-8 relative) that put float64's ∂x 3e-8 away from PyTorch's.
    /// `mean_dim`'s backward takes 1/M in f64. The forward values are the same bits either way.
    pub fn forward_reference<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, BnError> {
        let dims = self.check_input(&x)?;
        let (n, c, inner) = (dims[0], dims[1], dims[2..].iter().product::<usize>());
        let g = self.groups;
        let grouped = x.reshape([n, g, (c / g) * inner]);
        let centred = grouped.clone().sub(grouped.mean_dim(2));
        let var = centred.clone().square().mean_dim(2);
        let x_hat = centred
            .div(var.add_scalar(self.eps).sqrt())
            .reshape([n, c, inner]);
        Ok(self.scale_and_shift(x_hat, dims))
    }

    /// γ_c·x̂ + β_c on `[N, C, H·W]`, reshaped to `dims`.
    fn scale_and_shift<const D: usize>(&self, x_hat: Tensor<3>, dims: [usize; D]) -> Tensor<D> {
        let c = dims[1];
        x_hat
            .mul(self.gamma.val().reshape([1, c, 1]))
            .add(self.beta.val().reshape([1, c, 1]))
            .reshape(dims)
    }

    fn check_input<const D: usize>(&self, x: &Tensor<D>) -> Result<[usize; D], BnError> {
        let dims = x.dims();
        check_channels(&dims, self.channels())?;
        Ok(dims)
    }
}
