//! A small CNN: `model.arch = "cnn"`, one block per entry of `model.channels`, each a 3×3
//! convolution (padding 1), the hidden layer of `block.rs` with per-channel normalisation
//! before or after g (or none), and a 2×2 max-pool; after the last block, a linear classifier.
//! Dropout (if any) follows each block's nonlinearity, before its pooling.

use anyhow::{Result, ensure};
use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::block::{
    CLASSES, ConvShape, LayerBuilder, NetSpec, Pass, WeightLayer, take_data_init, weight_layers,
};
use super::geometry::{Architecture, Compute, ImageShape, NetSize, check_widths};
use crate::kernels::{conv3x3, max_pool2x2, max_pool2x2_then};
use crate::norm::{LayerShape, Norm, Placement};

/// The CNN's own setting: `model.channels`.
#[derive(Debug, Clone, PartialEq)]
pub struct CnnConfig {
    /// Output channels of each block, input to output.
    pub channels: Vec<usize>,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 64],
        }
    }
}

impl Architecture for CnnConfig {
    fn unit_word(&self) -> &'static str {
        "channels"
    }

    /// Block i convolves a map of side `side / 2^i` (each block's pool halves it).
    fn layers(&self, image: ImageShape) -> Vec<LayerShape> {
        self.channels
            .iter()
            .enumerate()
            .map(|(i, &width)| LayerShape {
                width,
                positions: (image.side >> i.min(63)).pow(2),
            })
            .collect()
    }

    fn check(&self, image: ImageShape) -> Result<()> {
        check_widths("model.channels", "blocks", &self.channels)?;
        let side = image.side;
        // Checked: a shift by 64 or more would wrap in a release build.
        let last = u32::try_from(self.channels.len())
            .ok()
            .and_then(|blocks| side.checked_shr(blocks))
            .unwrap_or(0);
        ensure!(
            last >= 1,
            "model.channels has {} blocks, but each halves the {side}x{side} image",
            self.channels.len()
        );
        Ok(())
    }

    /// Each block's 3×3 convolution over its full map, then the classifier.
    fn forward_flops(&self, image: ImageShape) -> u64 {
        let (mut ch, mut side) = (image.channels as u64, image.side as u64);
        let mut flops: u64 = 0;
        for &w in &self.channels {
            let conv = 2 * 9 * ch * (w as u64) * side * side;
            flops = flops.saturating_add(conv);
            ch = w as u64;
            side = (side / 2).max(1);
        }
        flops.saturating_add(2 * ch * side * side * CLASSES as u64)
    }

    fn compute(&self) -> Compute {
        Compute::Conv
    }

    fn size(&self, image: ImageShape) -> NetSize {
        let (mut ch, mut side) = (image.channels as u64, image.side as u64);
        let mut size = NetSize {
            params: 0,
            activations: image.features() as u64,
        };
        for &w in &self.channels {
            let w = w as u64;
            size.params = size
                .params
                .saturating_add(ch.saturating_mul(w).saturating_mul(9));
            size.activations = size
                .activations
                .saturating_add(w.saturating_mul(side * side));
            ch = w;
            side = (side / 2).max(1);
        }
        size.params = size.params.saturating_add(
            ch.saturating_mul(side * side)
                .saturating_mul(CLASSES as u64),
        );
        size
    }
}

/// The CNN: convolutions, their normalisation layers (one per block, or none), and the output
/// layer. The field names are the checkpoint's parameter paths.
#[derive(Module, Debug)]
pub struct Cnn {
    convs: Vec<Conv2d>,
    norms: Vec<Norm>,
    output: Linear,
    #[module(skip)]
    spec: NetSpec,
}

impl Cnn {
    /// The CNN `config` describes, its layers from `build`, input to output.
    pub fn new(config: &CnnConfig, spec: NetSpec, build: &mut LayerBuilder) -> Self {
        let norms = build.norms(&config.channels);
        let mut convs = Vec::new();
        let (mut ch, mut side) = (spec.in_channels, spec.side);
        for &w in &config.channels {
            convs.push(build.conv(ConvShape::same3x3(ch, w), build.hidden_bias()));
            ch = w;
            side /= 2;
        }
        Self {
            convs,
            norms,
            output: build.classifier(ch * side * side),
            spec,
        }
    }

    /// The normalisation layers, input to output (empty without normalisation).
    pub fn norms(&self) -> &[Norm] {
        &self.norms
    }

    /// Logits, with max-pooling before g where that is the same function: normalisation before
    /// g (or none) and no dropout ([`Cnn::pool_first`]); op by op otherwise.
    pub fn forward(&self, x: Tensor<2>, mut pass: Pass) -> Result<Tensor<2>> {
        let norm_after_g = self.spec.placement == Some(Placement::After);
        if norm_after_g || self.spec.dropout_seed(pass.mode).is_some() {
            return self.forward_reference(x, pass);
        }
        let mut h = self.spec.image_batch(x);
        for i in 0..self.convs.len() {
            let z = self.conv(i, h);
            h = self.pool_first(i, z, pass.layer())?;
        }
        Ok(self.output.forward(h.flatten(1, 3)))
    }

    /// The same function op by op: each block's convolution, its hidden block, then
    /// max-pooling; then the output layer through Burn's `Linear`.
    pub fn forward_reference(&self, x: Tensor<2>, mut pass: Pass) -> Result<Tensor<2>> {
        let mut h = self.spec.image_batch(x);
        for i in 0..self.convs.len() {
            let z = self.conv(i, h);
            let a = self.hidden_block(i, z, pass.layer())?;
            h = max_pool2x2(a);
        }
        Ok(self.output.forward(h.flatten(1, 3)))
    }

    fn hidden_block(&self, i: usize, z: Tensor<4>, pass: Pass) -> Result<Tensor<4>> {
        self.spec.hidden_block(self.norms.get(i), i, z, pass)
    }

    /// Block `i`'s 3×3 convolution (padding 1) with its bias, if any.
    fn conv(&self, i: usize, h: Tensor<4>) -> Tensor<4> {
        let bias = self.convs[i].bias.as_ref().map(|b| b.val());
        conv3x3(h, self.conv_weight(i), bias)
    }

    /// The weight block `i` convolves with (Weight Norm's g·v/‖v‖, or its own).
    pub fn conv_weight(&self, i: usize) -> Tensor<4> {
        let v = self.convs[i].weight.val();
        match self.norms.get(i) {
            Some(norm) => norm.conv_weight(v),
            None => v,
        }
    }

    /// Block `i` after its convolution, for normalisation before g (or none) and no dropout:
    /// the normalisation, then max-pooling with g applied after it. Pooling commutes with every
    /// g bn-exp offers (all are non-decreasing), so this is the same function as g, then
    /// pooling, on a quarter of the values ([`max_pool2x2_then`]).
    fn pool_first(&self, i: usize, z: Tensor<4>, pass: Pass) -> Result<Tensor<4>> {
        let pre = self.spec.pre_activation(self.norms.get(i), i, z, pass)?;
        Ok(max_pool2x2_then(pre, self.spec.kernel_act()))
    }

    /// The weight layers as Santurkar et al.'s ICS measure sees them, input to output.
    pub fn weight_layers(&self) -> Vec<WeightLayer> {
        let weight = |conv: &Conv2d| conv.weight.id;
        weight_layers(&self.convs, weight, &self.norms, &self.output)
    }

    /// The data-dependent initialisation on the batch `x` (see `Net::with_data_init`), block by
    /// block, each on the previous block's new output; statistics per channel over the batch
    /// and positions.
    pub fn with_data_init(mut self, x: Tensor<2>) -> Result<Self> {
        let mut h = self.spec.image_batch(x.detach());
        for i in 0..self.convs.len() {
            let v = self.convs[i].weight.val().detach();
            if let Some(unit) = self.norms.get(i).and_then(|n| n.data_init_conv(v)) {
                let t = conv3x3(h.clone(), unit, None);
                let [n, c, hh, ww] = t.dims();
                let per_channel = t.swap_dims(0, 1).reshape([c, n * hh * ww]);
                let bias = self.convs[i].bias.as_mut();
                take_data_init(&mut self.norms[i], bias, per_channel);
            }
            let z = self.conv(i, h);
            let a = self.hidden_block(i, z, Pass::PROBE)?;
            h = max_pool2x2(a).detach();
        }
        Ok(self)
    }
}
