//! The networks: the paper's sigmoid MLP and a small CNN, each with a normalisation layer N
//! ([`crate::norm`]: BN, Batch Renorm, Layer, Group or Weight Norm) before or after the
//! nonlinearity, or none.
//!
//! MLP hidden layer i, by placement:
//! - `none`:   a = g(W u + b)
//! - `before`: a = g(N(W u))        (the paper; N's β replaces the bias b)
//! - `after`:  a = N(g(W u + b))
//!
//! Weight Norm re-parametrises W itself (W = g·V/‖V‖ per unit) and, without mean-only BN, does
//! nothing at N's slot, so its layers keep their bias.
//!
//! CNN block i: conv 3x3 (padding 1), then the same three patterns with per-channel N, then
//! max-pool 2x2; after the last block, a linear classifier. Dropout (if any) follows each hidden
//! layer's output, with masks from bn-exp's own seeded generator so runs and resumes repeat
//! exactly.
//!
//! The "pre-activation" of a hidden layer is always the input to its nonlinearity g: what the
//! paper's Figure 1 (b, c) tracks.
//!
//! Weights are drawn from bn-exp's own generator ([`crate::rng`]), biases start at 0.

use anyhow::Result;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Device, Tensor, TensorCreationOptions, TensorData};

use crate::config::{Activation, Arch, Config, Init, NoiseConfig, Placement};
use crate::kernels::{Act, conv3x3, dense, max_pool2x2, max_pool2x2_then};
use crate::measures::{WeightLayer, param_ids};
use crate::norm::batch::tensor_to_f32;
use crate::norm::noise::add_noise;
use crate::norm::weight::{init_from_outputs, unit_columns, unit_filters};
use crate::norm::{BatchStats, BnMode, FusedNorm, InferenceStats, Norm};
use crate::rng::Rng;

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics (Algorithm 1). `update_running` only for real training steps;
    /// `dropout_seed` is `Some` when dropout is active (its masks derive from it), and
    /// `noise_seed` when the net has Santurkar et al.'s noise (`norm.noise`; its draws derive
    /// from it).
    Train {
        update_running: bool,
        dropout_seed: Option<u64>,
        noise_seed: Option<u64>,
    },
    /// Inference (Algorithm 2) with the chosen statistics; no dropout.
    Infer(InferenceStats),
}

impl Mode {
    fn bn_mode(self) -> BnMode {
        match self {
            Mode::Train { update_running, .. } => BnMode::Train { update_running },
            Mode::Infer(stats) => BnMode::Inference(stats),
        }
    }
}

/// A hidden layer's pre-activations copied to the host, with their shape
/// (`[N, units]` for the MLP, `[N, C, H, W]` for the CNN).
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    /// All values of unit (MLP) or channel (CNN) `unit`, across the batch (and positions).
    pub fn unit_values(&self, unit: usize) -> Vec<f32> {
        let n = self.shape[0];
        let c = self.shape[1];
        let inner: usize = self.shape[2..].iter().product();
        let mut out = Vec::with_capacity(n * inner);
        for i in 0..n {
            let start = (i * c + unit) * inner;
            out.extend_from_slice(&self.values[start..start + inner]);
        }
        out
    }
}

/// What a traced forward pass records: pre-activations and BN batch statistics per hidden layer.
#[derive(Debug, Default)]
pub struct Trace {
    pub pre_activations: Vec<HostTensor>,
    pub bn_stats: Vec<BatchStats>,
}

/// The parts of the config that shape the forward pass.
#[derive(Debug, Clone)]
pub struct NetSpec {
    pub arch: Arch,
    pub activation: Activation,
    /// Where the normalisation layers sit; `None` when the net has none.
    pub placement: Option<Placement>,
    pub dropout: f64,
    /// Santurkar et al.'s noise after each normalisation slot (`norm.noise`), if on.
    pub noise: Option<NoiseConfig>,
    pub in_channels: usize,
    pub side: usize,
}

/// A classifier: MLP (`linears`) or CNN (`convs`), BN layers (`norms`, one per hidden layer or
/// none), and the output layer.
#[derive(Module, Debug)]
pub struct Net {
    pub linears: Vec<Linear>,
    pub convs: Vec<Conv2d>,
    pub norms: Vec<Norm>,
    pub output: Linear,
    #[module(skip)]
    pub spec: NetSpec,
}

/// Number of classes of both data sets.
pub const CLASSES: usize = 10;

/// Build the net a config describes, on `device`, with weights from `seed`.
pub fn build_net(config: &Config, device: &Device) -> Net {
    let (in_channels, side) = config.dataset.image_shape();
    let m = &config.model;
    let spec = NetSpec {
        arch: m.arch,
        activation: m.activation,
        placement: config.norm_placement(),
        dropout: m.dropout,
        noise: config.norm.noise.then(|| config.norm.noise_params.clone()),
        in_channels,
        side,
    };
    let mut rng = Rng::stream(config.seed, 0x1A17, 0);
    let init = WeightInit {
        kind: m.init,
        std: m.init_std,
    };
    // The layer feeding a normalisation placed before g has no bias: its β subsumes it.
    let hidden_bias = !config.norm_subsumes_bias();
    let widths: &[usize] = match m.arch {
        Arch::Mlp => &m.hidden,
        Arch::Cnn => &m.channels,
    };
    let norms = widths
        .iter()
        .filter_map(|&w| Norm::new(&config.norm, w, config.steps, device))
        .collect();
    let mut linears = Vec::new();
    let mut convs = Vec::new();
    let classifier_in = match m.arch {
        Arch::Mlp => {
            let mut fan_in = in_channels * side * side;
            for &w in &m.hidden {
                linears.push(init.linear(fan_in, w, hidden_bias, &mut rng, device));
                fan_in = w;
            }
            fan_in
        }
        Arch::Cnn => {
            let mut ch = in_channels;
            let mut s = side;
            for &w in &m.channels {
                convs.push(init.conv3x3(ch, w, hidden_bias, &mut rng, device));
                ch = w;
                s /= 2;
            }
            ch * s * s
        }
    };
    let output = init.linear(classifier_in, CLASSES, true, &mut rng, device);
    Net {
        linears,
        convs,
        norms,
        output,
        spec,
    }
}

/// Weight initialisation from bn-exp's generator.
struct WeightInit {
    kind: Init,
    std: f64,
}

impl WeightInit {
    fn std_for(&self, fan_in: usize, fan_out: usize) -> f64 {
        match self.kind {
            Init::Gaussian => self.std,
            Init::Xavier => (2.0 / (fan_in + fan_out) as f64).sqrt(),
            Init::He => (2.0 / fan_in as f64).sqrt(),
        }
    }

    fn normal_tensor<const D: usize>(
        &self,
        shape: [usize; D],
        std: f64,
        rng: &mut Rng,
        device: &Device,
    ) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn linear(
        &self,
        d_in: usize,
        d_out: usize,
        bias: bool,
        rng: &mut Rng,
        device: &Device,
    ) -> Linear {
        let std = self.std_for(d_in, d_out);
        Linear {
            weight: Param::from_tensor(self.normal_tensor([d_in, d_out], std, rng, device)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    }

    fn conv3x3(
        &self,
        c_in: usize,
        c_out: usize,
        bias: bool,
        rng: &mut Rng,
        device: &Device,
    ) -> Conv2d {
        let mut conv = Conv2dConfig::new([c_in, c_out], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(bias)
            .init(device);
        let std = self.std_for(c_in * 9, c_out * 9);
        conv.weight = Param::from_tensor(self.normal_tensor([c_out, c_in, 3, 3], std, rng, device));
        conv.bias = bias.then(|| Param::from_tensor(Tensor::zeros([c_out], device)));
        conv
    }
}

impl Net {
    /// Logits `[N, 10]` for flattened inputs `[N, C·H·W]`. With `trace`, also records each
    /// hidden layer's pre-activations and BN batch statistics (slow: copies to the host).
    ///
    /// Takes a fast path where one applies, and otherwise [`Net::forward_reference`]; each fast
    /// path computes the same function as the reference, with different float rounding (the
    /// tests hold them to 1e-10 in float64):
    /// - MLP in training: each hidden layer as one fused op ([`Net::dense_block_train`]);
    /// - MLP in inference with fixed statistics and BN before g (or none): BN folded into the
    ///   weights ([`Net::dense_block_infer`]);
    /// - CNN with BN before g (or none) and no dropout: max-pooling before g
    ///   ([`Net::conv_block_pool_first`]).
    pub fn forward(
        &self,
        x: Tensor<2>,
        mode: Mode,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor<2>> {
        match self.spec.arch {
            Arch::Mlp if matches!(mode, Mode::Train { .. }) => {
                let mut h = x;
                for i in 0..self.linears.len() {
                    h = self.dense_block_train(i, h, mode, trace.as_deref_mut())?;
                }
                Ok(self.classify_fused(h))
            }
            Arch::Mlp => match self.folded_inference_stats(mode) {
                Some(stats) => {
                    let mut h = x;
                    for i in 0..self.linears.len() {
                        h = self.dense_block_infer(i, h, stats, trace.as_deref_mut());
                    }
                    Ok(self.classify_fused(h))
                }
                None => self.forward_reference(x, mode, trace),
            },
            Arch::Cnn
                if self.spec.placement != Some(Placement::After)
                    && self.dropout_seed(mode).is_none() =>
            {
                let mut h = self.image_batch(x);
                for i in 0..self.convs.len() {
                    let z = self.conv(i, h);
                    h = self.conv_block_pool_first(i, z, mode, trace.as_deref_mut())?;
                }
                Ok(self.output.forward(h.flatten(1, 3)))
            }
            Arch::Cnn => self.forward_reference(x, mode, trace),
        }
    }

    /// The same function as [`Net::forward`], op by op, with no shortcut: each layer's linear
    /// map, then the normalisation through [`Norm::forward_with_stats`], then g, then (CNN) max-pooling,
    /// then the output layer through Burn's `Linear`. The fast paths are tested against it.
    pub fn forward_reference(
        &self,
        x: Tensor<2>,
        mode: Mode,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor<2>> {
        let h = match self.spec.arch {
            Arch::Mlp => {
                let mut h = x;
                for i in 0..self.linears.len() {
                    let z = self.linear_map(i, h);
                    h = self.hidden_block(i, z, mode, trace.as_deref_mut())?;
                }
                h
            }
            Arch::Cnn => {
                let mut h = self.image_batch(x);
                for i in 0..self.convs.len() {
                    let z = self.conv(i, h);
                    let a = self.hidden_block(i, z, mode, trace.as_deref_mut())?;
                    h = max_pool2x2(a);
                }
                h.flatten(1, 3)
            }
        };
        Ok(self.output.forward(h))
    }

    /// Flattened images `[N, C·H·W]` as `[N, C, H, W]`.
    fn image_batch(&self, x: Tensor<2>) -> Tensor<4> {
        let [n, _] = x.dims();
        let s = self.spec.side;
        x.reshape([n, self.spec.in_channels, s, s])
    }

    /// Hidden conv layer `i`: a 3×3 convolution (padding 1) with its bias, if any.
    fn conv(&self, i: usize, h: Tensor<4>) -> Tensor<4> {
        let conv = &self.convs[i];
        let bias = conv.bias.as_ref().map(|b| b.val());
        conv3x3(h, self.conv_weight(i), bias)
    }

    /// The weight hidden conv layer `i` computes with (Weight Norm's g·v/‖v‖, or its own).
    pub fn conv_weight(&self, i: usize) -> Tensor<4> {
        let v = self.convs[i].weight.val();
        match self.norms.get(i) {
            Some(norm) => norm.conv_weight(v),
            None => v,
        }
    }

    /// The weight `[in, out]` hidden linear layer `i` computes with (Weight Norm's g·v/‖v‖, or
    /// its own).
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

    /// Normalisation, nonlinearity and dropout of hidden layer `i`, given its linear output `z`.
    fn hidden_block<const D: usize>(
        &self,
        i: usize,
        z: Tensor<D>,
        mode: Mode,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor<D>> {
        let norm = |t: Tensor<D>| -> Result<(Tensor<D>, Option<BatchStats>)> {
            Ok(self.norms[i].forward_with_stats(t, mode.bn_mode())?)
        };
        let (pre, a, stats) = match self.spec.placement {
            None => {
                let z = self.noise(i, z, mode);
                let a = self.activate(z.clone());
                (z, a, None)
            }
            Some(Placement::Before) => {
                let (pre, stats) = norm(z)?;
                let pre = self.noise(i, pre, mode);
                let a = self.activate(pre.clone());
                (pre, a, stats)
            }
            Some(Placement::After) => {
                let a = self.activate(z.clone());
                let (a, stats) = norm(a)?;
                (z, self.noise(i, a, mode), stats)
            }
        };
        self.finish_block(i, pre, a, stats, mode, trace)
    }

    /// The output layer's logits through the fused dense op (no BN, no nonlinearity).
    fn classify_fused(&self, h: Tensor<2>) -> Tensor<2> {
        let out = &self.output;
        let bias = out.bias.as_ref().map(|b| b.val());
        dense(h, out.weight.val(), bias, None, Act::Identity).output
    }

    /// MLP hidden layer `i` in training mode as one fused op ([`dense`]): the linear map, the
    /// normalisation where it sits before g and the kernel can apply it (BN with batch
    /// statistics, [`Norm::fused_dense_parts`]), and g. Numerically the same computation as
    /// [`Net::hidden_block`] after `Linear::forward`, in fewer graph nodes.
    fn dense_block_train(
        &self,
        i: usize,
        x: Tensor<2>,
        mode: Mode,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor<2>> {
        let w = self.linear_weight(i);
        let b = self.linears[i].bias.as_ref().map(|b| b.val());
        if self.noise_draw(mode).is_some() {
            // The noise sits between the normalisation and g, where the fused op has no seam.
            let z = dense(x, w, b, None, Act::Identity).output;
            return self.hidden_block(i, z, mode, trace);
        }
        let act = self.kernel_act();
        let (pre, a, stats) = match self.spec.placement {
            None => {
                let out = dense(x, w, b, None, act);
                (out.pre, out.output, None)
            }
            Some(Placement::Before) => {
                let norm = &self.norms[i];
                match norm.fused_dense_parts() {
                    FusedNorm::Nothing => {
                        let out = dense(x, w, b, None, act);
                        (out.pre, out.output, None)
                    }
                    FusedNorm::Unsupported => {
                        let z = dense(x, w, b, None, Act::Identity).output;
                        return self.hidden_block(i, z, mode, trace);
                    }
                    FusedNorm::Batch(bn) => {
                        let count = bn.check_train_batch(&[x.dims()[0], w.dims()[1]])?;
                        let parts = (bn.gamma.val(), bn.beta.val(), bn.eps);
                        let out = dense(x, w, b, Some(parts), act);
                        let stats = bn.absorb_batch(out.mean, out.variance, count, mode.bn_mode());
                        (out.pre, out.output, Some(stats))
                    }
                }
            }
            Some(Placement::After) => {
                let out = dense(x, w, b, None, act);
                let (a, stats) = self.norms[i].forward_with_stats(out.output, mode.bn_mode())?;
                (out.pre, a, stats)
            }
        };
        self.finish_block(i, pre, a, stats, mode, trace)
    }

    /// MLP hidden layer `i` in inference with fixed statistics, as one fused op. A
    /// normalisation before g that is then an affine map scale·z + shift (BN, Algorithm 2) is
    /// composed with the linear map before it, as the paper notes: g(x·(W·diag(scale)) +
    /// shift). That is the same function as [`Net::hidden_block`] computes op by op, with
    /// different float rounding. Only called when [`Net::folded_inference_stats`] allows it.
    fn dense_block_infer(
        &self,
        i: usize,
        x: Tensor<2>,
        stats: InferenceStats,
        trace: Option<&mut Trace>,
    ) -> Tensor<2> {
        let w = self.linear_weight(i);
        let b = self.linears[i].bias.as_ref().map(|b| b.val());
        let affine = match self.spec.placement {
            Some(Placement::Before) => self.norms[i].inference_affine(stats),
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
        let out = dense(x, w, b, None, self.kernel_act());
        if let Some(trace) = trace {
            record_trace(trace, &out.pre, None);
        }
        out.output
    }

    /// CNN block `i` after its convolution, for BN before g (or no BN) and no dropout: BN, then
    /// max-pooling with g applied after it. Pooling commutes with every g bn-exp offers (all are
    /// non-decreasing), so this is the same function as g, then pooling, on a quarter of the
    /// values ([`crate::kernels::max_pool2x2_then`]).
    fn conv_block_pool_first(
        &self,
        i: usize,
        z: Tensor<4>,
        mode: Mode,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor<4>> {
        let (pre, stats) = match self.spec.placement {
            Some(Placement::Before) => self.norms[i].forward_with_stats(z, mode.bn_mode())?,
            _ => (z, None),
        };
        let pre = self.noise(i, pre, mode);
        if let Some(trace) = trace {
            record_trace(trace, &pre, stats);
        }
        Ok(max_pool2x2_then(pre, self.kernel_act()))
    }

    /// The seed of this forward pass's dropout masks, when it drops units (training with
    /// dropout); None otherwise.
    fn dropout_seed(&self, mode: Mode) -> Option<u64> {
        match mode {
            Mode::Train {
                dropout_seed: Some(seed),
                ..
            } if self.spec.dropout > 0.0 => Some(seed),
            _ => None,
        }
    }

    /// This forward pass's noise and its seed, when the net has noise and the pass trains.
    fn noise_draw(&self, mode: Mode) -> Option<(&NoiseConfig, u64)> {
        match mode {
            Mode::Train {
                noise_seed: Some(seed),
                ..
            } => self.spec.noise.as_ref().map(|params| (params, seed)),
            _ => None,
        }
    }

    /// Santurkar et al.'s noise on hidden layer `i`'s normalised values, in training passes of
    /// a net that has it ([`crate::norm::noise`]); the values unchanged otherwise.
    fn noise<const D: usize>(&self, i: usize, t: Tensor<D>, mode: Mode) -> Tensor<D> {
        match self.noise_draw(mode) {
            Some((params, seed)) => add_noise(t, params, seed, i),
            None => t,
        }
    }

    /// Record the trace (if any) and apply dropout to a hidden layer's output.
    fn finish_block<const D: usize>(
        &self,
        i: usize,
        pre: Tensor<D>,
        a: Tensor<D>,
        stats: Option<BatchStats>,
        mode: Mode,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor<D>> {
        if let Some(trace) = trace {
            record_trace(trace, &pre, stats);
        }
        Ok(self.dropout(i, a, mode))
    }

    fn kernel_act(&self) -> Act {
        match self.spec.activation {
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Relu => Act::Relu,
            Activation::Tanh => Act::Tanh,
        }
    }

    fn activate<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        match self.spec.activation {
            Activation::Sigmoid => crate::kernels::sigmoid(z),
            Activation::Relu => relu(z),
            Activation::Tanh => tanh(z),
        }
    }

    /// Inverted dropout: keep with probability 1 − p and scale by 1/(1 − p).
    fn dropout<const D: usize>(&self, layer: usize, a: Tensor<D>, mode: Mode) -> Tensor<D> {
        let Some(seed) = self.dropout_seed(mode) else {
            return a;
        };
        let p = self.spec.dropout;
        let dims = a.dims();
        let n: usize = dims.iter().product();
        let mut rng = Rng::stream(seed, 0xD20F, layer as u64);
        let keep = (1.0 / (1.0 - p)) as f32;
        let mask: Vec<f32> = (0..n)
            .map(|_| if rng.uniform() >= p { keep } else { 0.0 })
            .collect();
        let mask = Tensor::from_data(TensorData::new(mask, dims), &a.device());
        a.mul(mask)
    }

    /// The weight layers as Santurkar et al.'s ICS measure sees them, input to output: each
    /// hidden layer's weight with its bias and its normalisation's parameters, then the output
    /// layer.
    pub fn weight_layers(&self) -> Vec<WeightLayer> {
        let hidden = self.linears.len().max(self.convs.len());
        let mut layers: Vec<WeightLayer> = (0..hidden)
            .map(|i| {
                let (weight, mut params) = match self.spec.arch {
                    Arch::Mlp => (self.linears[i].weight.id, param_ids(&self.linears[i])),
                    Arch::Cnn => (self.convs[i].weight.id, param_ids(&self.convs[i])),
                };
                if let Some(norm) = self.norms.get(i) {
                    params.extend(param_ids(norm));
                }
                WeightLayer {
                    name: format!("hidden {i}"),
                    weight,
                    params,
                }
            })
            .collect();
        layers.push(WeightLayer {
            name: "output".into(),
            weight: self.output.weight.id,
            params: param_ids(&self.output),
        });
        layers
    }

    /// Tell every normalisation layer which training step comes next.
    pub fn begin_step(&self, step: u64) {
        for norm in &self.norms {
            norm.begin_step(step);
        }
    }

    /// Weight Norm's data-dependent initialisation (Salimans & Kingma 2016, section 3) on the
    /// batch `x` (`[N, C·H·W]`), layer by layer: with t = x·v/‖v‖ each unit gets g = 1/σ(t) and,
    /// when its layer has a bias, b = −μ(t)/σ(t), so its pre-activation starts with mean 0 and
    /// variance 1 on this batch; the next layer is initialised on this layer's new output.
    /// A net without Weight Norm is returned as it is.
    pub fn init_weight_norm(mut self, x: Tensor<2>) -> Result<Net> {
        if !self.norms.iter().any(|n| matches!(n, Norm::Weight(_))) {
            return Ok(self);
        }
        let mode = Mode::Train {
            update_running: false,
            dropout_seed: None,
            noise_seed: None,
        };
        match self.spec.arch {
            Arch::Mlp => {
                let mut h = x.detach();
                for i in 0..self.linears.len() {
                    let unit = unit_columns(self.linears[i].weight.val().detach());
                    let t = h.clone().matmul(unit);
                    let (g, b) = init_from_outputs(t.swap_dims(0, 1));
                    self.set_weight_norm_init(i, g, b);
                    let z = self.linear_map(i, h);
                    h = self.hidden_block(i, z, mode, None)?.detach();
                }
            }
            Arch::Cnn => {
                let mut h = self.image_batch(x.detach());
                for i in 0..self.convs.len() {
                    let unit = unit_filters(self.convs[i].weight.val().detach());
                    let t = conv3x3(h.clone(), unit, None);
                    let [n, c, hh, ww] = t.dims();
                    let per_channel = t.swap_dims(0, 1).reshape([c, n * hh * ww]);
                    let (g, b) = init_from_outputs(per_channel);
                    self.set_weight_norm_init(i, g, b);
                    let z = self.conv(i, h);
                    let a = self.hidden_block(i, z, mode, None)?;
                    h = max_pool2x2(a).detach();
                }
            }
        }
        Ok(self)
    }

    /// Store layer `i`'s data-dependent g, and b in its bias if it has one.
    fn set_weight_norm_init(&mut self, i: usize, g: Tensor<1>, b: Tensor<1>) {
        // Fresh leaf tensors: autodiff only makes parameters of values no op produced.
        let device = self.output.weight.val().device();
        let leaf = |t: Tensor<1>| {
            let like = TensorCreationOptions::new(device.clone()).with_dtype(t.dtype());
            Tensor::<1>::from_data(t.into_data(), like)
        };
        if let Norm::Weight(wn) = self.norms[i].clone() {
            self.norms[i] = Norm::Weight(wn.with_g(leaf(g)));
        }
        let b = leaf(b);
        match self.spec.arch {
            Arch::Mlp => {
                if let Some(bias) = self.linears[i].bias.as_mut() {
                    *bias = Param::from_tensor(b);
                }
            }
            Arch::Cnn => {
                if let Some(bias) = self.convs[i].bias.as_mut() {
                    *bias = Param::from_tensor(b);
                }
            }
        }
    }

    /// The statistics of an inference pass that can fold every normalisation into the linear
    /// map before it: fixed statistics (moving or population, not each test batch's own), and
    /// no normalisation, or each one before g and an affine map in inference. `None` when the
    /// pass must run op by op.
    fn folded_inference_stats(&self, mode: Mode) -> Option<InferenceStats> {
        let Mode::Infer(stats @ (InferenceStats::Moving | InferenceStats::Population)) = mode
        else {
            return None;
        };
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
}

/// Copy a hidden layer's pre-activations (and BN batch statistics, if any) into the trace.
fn record_trace<const D: usize>(trace: &mut Trace, pre: &Tensor<D>, stats: Option<BatchStats>) {
    trace.pre_activations.push(HostTensor {
        shape: pre.dims().to_vec(),
        values: tensor_to_f32(pre.clone().detach()),
    });
    if let Some(stats) = stats {
        trace.bn_stats.push(stats);
    }
}
