//! The paper's multi-layer perceptron: `model.arch = "mlp"`, hidden layers of `model.hidden`
//! units (784-100-100-100-10 in the paper), each with a normalisation layer N before or after
//! the nonlinearity g, or none:
//!
//! - none:   a = g(W u + b)
//! - before: a = g(N(W u))        (the paper; N's β replaces the bias b)
//! - after:  a = N(g(W u + b))
//!
//! Weight Norm re-parametrises W itself (W = g·V/‖V‖ per unit) and, without mean-only BN, does
//! nothing at N's slot, so its layers keep their bias. Dropout (if any) follows each hidden
//! layer's output. A linear classifier ends the net.

use anyhow::Result;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::block::{
    CLASSES, LayerBuilder, Mode, NetSpec, Pass, WeightLayer, take_data_init, weight_layers,
};
use super::geometry::{Architecture, Compute, ImageShape, NetSize, check_widths};
use crate::kernels::{Act, dense};
use crate::norm::{BatchStats, FusedNorm, InferenceStats, LayerShape, Norm, Placement};

/// The MLP's own setting: `model.hidden`.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Hidden layer widths, input to output.
    pub hidden: Vec<usize>,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: vec![100, 100, 100],
        }
    }
}

impl Architecture for MlpConfig {
    fn unit_word(&self) -> &'static str {
        "units"
    }

    fn layers(&self, _image: ImageShape) -> Vec<LayerShape> {
        self.hidden
            .iter()
            .map(|&width| LayerShape {
                width,
                positions: 1,
            })
            .collect()
    }

    fn check(&self, _image: ImageShape) -> Result<()> {
        check_widths("model.hidden", "layers", &self.hidden)
    }

    fn forward_flops(&self, image: ImageShape) -> u64 {
        let widths = self.hidden.iter().chain([&CLASSES]);
        let mut fan_in = image.features() as u64;
        let mut flops: u64 = 0;
        for &w in widths {
            flops = flops.saturating_add(2u64.saturating_mul(fan_in).saturating_mul(w as u64));
            fan_in = w as u64;
        }
        flops
    }

    fn compute(&self) -> Compute {
        Compute::Dense
    }

    fn size(&self, image: ImageShape) -> NetSize {
        let mut fan_in = image.features() as u64;
        let mut size = NetSize {
            params: 0,
            activations: fan_in,
        };
        for &w in &self.hidden {
            let w = w as u64;
            size.params = size.params.saturating_add(fan_in.saturating_mul(w));
            size.activations = size.activations.saturating_add(w);
            fan_in = w;
        }
        size.params = size
            .params
            .saturating_add(fan_in.saturating_mul(CLASSES as u64));
        size
    }
}

/// The MLP: hidden linear layers, their normalisation layers (one per hidden layer, or none),
/// and the output layer. The field names are the checkpoint's parameter paths.
#[derive(Module, Debug)]
pub struct Mlp {
    linears: Vec<Linear>,
    norms: Vec<Norm>,
    output: Linear,
    #[module(skip)]
    spec: NetSpec,
}

impl Mlp {
    /// The MLP `config` describes, its layers from `build`, input to output.
    pub fn new(config: &MlpConfig, spec: NetSpec, build: &mut LayerBuilder) -> Self {
        let norms = build.norms(&config.hidden);
        let mut linears = Vec::new();
        let mut fan_in = spec.in_channels * spec.side * spec.side;
        for &w in &config.hidden {
            linears.push(build.linear(fan_in, w, build.hidden_bias()));
            fan_in = w;
        }
        Self {
            linears,
            norms,
            output: build.classifier(fan_in),
            spec,
        }
    }

    /// The normalisation layers, input to output (empty without normalisation).
    pub fn norms(&self) -> &[Norm] {
        &self.norms
    }

    /// Logits, taking a fast path where one applies (see `Net::forward`):
    /// - in training, each hidden layer as one fused op ([`Mlp::dense_block_train`]);
    /// - in inference with fixed statistics and normalisation before g (or none), the
    ///   normalisation folded into the weights ([`Mlp::dense_block_infer`]).
    pub fn forward(&self, x: Tensor<2>, mut pass: Pass) -> Result<Tensor<2>> {
        if matches!(pass.mode, Mode::Train { .. }) {
            let mut h = x;
            for i in 0..self.linears.len() {
                h = self.dense_block_train(i, h, pass.layer())?;
            }
            return Ok(self.classify_fused(h));
        }
        match self.folded_inference_stats(pass.mode) {
            Some(stats) => {
                let mut h = x;
                for i in 0..self.linears.len() {
                    h = self.dense_block_infer(i, h, stats, pass.layer());
                }
                Ok(self.classify_fused(h))
            }
            None => self.forward_reference(x, pass),
        }
    }

    /// The same function op by op: each layer's linear map, then the hidden block, then the
    /// output layer through Burn's `Linear`.
    pub fn forward_reference(&self, x: Tensor<2>, mut pass: Pass) -> Result<Tensor<2>> {
        let mut h = x;
        for i in 0..self.linears.len() {
            let z = self.linear_map(i, h);
            h = self.hidden_block(i, z, pass.layer())?;
        }
        Ok(self.output.forward(h))
    }

    fn hidden_block(&self, i: usize, z: Tensor<2>, pass: Pass) -> Result<Tensor<2>> {
        self.spec.hidden_block(self.norms.get(i), i, z, pass)
    }

    /// The weight `[in, out]` hidden layer `i` computes with (Weight Norm's g·v/‖v‖, or its
    /// own).
    pub fn linear_weight(&self, i: usize) -> Tensor<2> {
        let v = self.linears[i].weight.val();
        match self.norms.get(i) {
            Some(norm) => norm.linear_weight(v),
            None => v,
        }
    }

    /// Hidden linear layer `i` op by op: x·W + b, with Burn's matmul.
    fn linear_map(&self, i: usize, x: Tensor<2>) -> Tensor<2> {
        let z = x.matmul(self.linear_weight(i));
        match &self.linears[i].bias {
            Some(b) => z.add(b.val().unsqueeze::<2>()),
            None => z,
        }
    }

    /// The output layer's logits through the fused dense op (no normalisation, no g).
    fn classify_fused(&self, h: Tensor<2>) -> Tensor<2> {
        let out = &self.output;
        let bias = out.bias.as_ref().map(|b| b.val());
        dense(h, out.weight.val(), bias, None, Act::Identity).output
    }

    /// Hidden layer `i` in training mode as one fused op ([`dense`]): the linear map, the
    /// normalisation where it sits before g and the kernel can apply it (BN with batch
    /// statistics, [`Norm::fused_dense_parts`]), and g. Numerically the same computation as
    /// [`Mlp::hidden_block`] after the linear map, in fewer graph nodes.
    fn dense_block_train(&self, i: usize, x: Tensor<2>, pass: Pass) -> Result<Tensor<2>> {
        let mode = pass.mode;
        let w = self.linear_weight(i);
        let b = self.linears[i].bias.as_ref().map(|b| b.val());
        if self.spec.draws_noise(mode) {
            // The noise sits between the normalisation and g, where the fused op has no seam.
            let z = dense(x, w, b, None, Act::Identity).output;
            return self.hidden_block(i, z, pass);
        }
        let act = self.spec.kernel_act();
        let (pre, a, stats) = match (self.spec.placement, self.norms.get(i)) {
            (Some(Placement::Before), Some(norm)) => match norm.fused_dense_parts() {
                FusedNorm::Nothing => {
                    let out = dense(x, w, b, None, act);
                    (out.pre, out.output, None)
                }
                FusedNorm::Unsupported => {
                    let z = dense(x, w, b, None, Act::Identity).output;
                    return self.hidden_block(i, z, pass);
                }
                FusedNorm::Batch(bn) => {
                    let count = bn.check(&[x.dims()[0], w.dims()[1]])?;
                    let out = dense(x, w, b, Some(bn.parts()), act);
                    let batch = BatchStats {
                        mean: out.mean,
                        biased_var: out.variance,
                        count,
                    };
                    let stats = bn.absorb(batch, mode.bn_mode());
                    (out.pre, out.output, Some(stats))
                }
            },
            (Some(Placement::After), Some(norm)) => {
                let out = dense(x, w, b, None, act);
                let (a, stats) = norm.forward_with_stats(out.output, mode.bn_mode())?;
                (out.pre, a, stats)
            }
            _ => {
                let out = dense(x, w, b, None, act);
                (out.pre, out.output, None)
            }
        };
        self.spec.finish_block(i, pre, a, stats, pass)
    }

    /// Hidden layer `i` in inference with fixed statistics, as one fused op. A normalisation
    /// before g that is then an affine map scale·z + shift (BN, Algorithm 2) is composed with
    /// the linear map before it, as the paper notes: g(x·(W·diag(scale)) + shift). That is the
    /// same function as [`Mlp::hidden_block`] computes op by op, with different float rounding.
    /// Only called when [`Mlp::folded_inference_stats`] allows it.
    fn dense_block_infer(
        &self,
        i: usize,
        x: Tensor<2>,
        stats: InferenceStats,
        pass: Pass,
    ) -> Tensor<2> {
        let w = self.linear_weight(i);
        let b = self.linears[i].bias.as_ref().map(|b| b.val());
        let affine = match (self.spec.placement, self.norms.get(i)) {
            (Some(Placement::Before), Some(norm)) => norm.inference_affine(stats),
            _ => None,
        };
        // scale·(x·W + b) + shift = x·(W·diag(scale)) + (scale·b + shift).
        let (w, b) = match affine {
            Some((scale, shift)) => {
                let shift = match b {
                    Some(b) => shift.add(b.mul(scale.clone())),
                    None => shift,
                };
                (w * scale.unsqueeze::<2>(), Some(shift))
            }
            None => (w, b),
        };
        let out = dense(x, w, b, None, self.spec.kernel_act());
        pass.record(&out.pre, None);
        out.output
    }

    /// The statistics of an inference pass that can fold every normalisation into the linear
    /// map before it: fixed statistics, and no normalisation, or each one before g and an
    /// affine map in inference. `None` when the pass must run op by op.
    fn folded_inference_stats(&self, mode: Mode) -> Option<InferenceStats> {
        let stats = mode.fixed_stats()?;
        let folds = match self.spec.placement {
            None => true,
            Some(Placement::After) => false,
            Some(Placement::Before) => self
                .norms
                .iter()
                .all(|norm| norm.is_affine_in_inference(stats)),
        };
        folds.then_some(stats)
    }

    /// The weight layers as Santurkar et al.'s ICS measure sees them, input to output.
    pub fn weight_layers(&self) -> Vec<WeightLayer> {
        let weight = |linear: &Linear| linear.weight.id;
        weight_layers(&self.linears, weight, &self.norms, &self.output)
    }

    /// The data-dependent initialisation on the batch `x` (see `Net::with_data_init`), layer
    /// by layer, each on the previous layer's new output.
    pub fn with_data_init(mut self, x: Tensor<2>) -> Result<Self> {
        let mut h = x.detach();
        for i in 0..self.linears.len() {
            let v = self.linears[i].weight.val().detach();
            if let Some(unit) = self.norms.get(i).and_then(|n| n.data_init_linear(v)) {
                let t = h.clone().matmul(unit);
                let bias = self.linears[i].bias.as_mut();
                take_data_init(&mut self.norms[i], bias, t.swap_dims(0, 1));
            }
            let z = self.linear_map(i, h);
            h = self.hidden_block(i, z, Pass::PROBE)?.detach();
        }
        Ok(self)
    }
}
