//! What every architecture shares: how a forward pass runs ([`Mode`]), what it records
//! ([`Trace`]), the settings that shape a hidden layer ([`NetSpec`]), and the hidden layer after
//! its linear map or convolution: normalisation, noise, nonlinearity g and dropout, in the
//! order the placement says ([`NetSpec::hidden_block`]).
//!
//! The "pre-activation" of a hidden layer is always the input to its nonlinearity g: what the
//! paper's Figure 1 (b, c) tracks and what [`Trace`] records.

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::kernels::{Act, sigmoid};
use crate::norm::{
    BatchStats, BnMode, InferenceStats, NoiseConfig, Norm, NormConfig, Placement, add_noise,
};
use crate::rng::Rng;
use crate::tensor::tensor_to_f32;

/// The nonlinearity g.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Sigmoid,
    Relu,
    Tanh,
}

/// How weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// N(0, init_std²): the paper's "small random Gaussian values".
    Gaussian,
    /// Glorot normal: std = sqrt(2 / (fan_in + fan_out)).
    Xavier,
    /// He normal: std = sqrt(2 / fan_in).
    He,
}

/// Number of classes of both data sets.
pub const CLASSES: usize = 10;

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
    /// A training pass that changes nothing: no running updates, no dropout, no noise (the
    /// population pass and the data-dependent initialisation).
    pub const PROBE: Mode = Mode::Train {
        update_running: false,
        dropout_seed: None,
        noise_seed: None,
    };

    pub fn bn_mode(self) -> BnMode {
        match self {
            Mode::Train { update_running, .. } => BnMode::Train { update_running },
            Mode::Infer(stats) => BnMode::Inference(stats),
        }
    }

    /// The fixed statistics of an inference pass that can fold normalisation into the linear
    /// map before it (moving or population, not each test batch's own); `None` otherwise.
    pub fn fixed_stats(self) -> Option<InferenceStats> {
        match self {
            Mode::Infer(stats @ (InferenceStats::Moving | InferenceStats::Population)) => {
                Some(stats)
            }
            _ => None,
        }
    }
}

/// A hidden layer's pre-activations copied to the host, with their shape
/// (`[N, units]` for an MLP, `[N, C, H, W]` for a conv net).
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    /// All values of unit (MLP) or channel (conv) `unit`, across the batch (and positions).
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

/// One forward pass as it goes down the hidden layers: how it runs, and the trace it records
/// into, if any. The two always travel together; [`Pass::layer`] lends the pass to one layer.
pub struct Pass<'t> {
    pub mode: Mode,
    pub trace: Option<&'t mut Trace>,
}

impl<'t> Pass<'t> {
    /// A pass in `mode` that records nothing.
    pub fn untraced(mode: Mode) -> Self {
        Pass { mode, trace: None }
    }

    /// A pass in `mode` that records each hidden layer into `trace`.
    pub fn traced(mode: Mode, trace: &'t mut Trace) -> Self {
        Pass {
            mode,
            trace: Some(trace),
        }
    }

    /// A pass that changes nothing and records nothing ([`Mode::PROBE`]).
    pub const PROBE: Pass<'static> = Pass {
        mode: Mode::PROBE,
        trace: None,
    };

    /// This pass for one layer, which borrows the trace until it returns.
    pub fn layer(&mut self) -> Pass<'_> {
        Pass {
            mode: self.mode,
            trace: self.trace.as_deref_mut(),
        }
    }

    /// Copy a hidden layer's pre-activations (and BN batch statistics, if any) into the trace,
    /// when the pass has one.
    pub fn record<const D: usize>(self, pre: &Tensor<D>, stats: Option<BatchStats>) {
        let Some(trace) = self.trace else {
            return;
        };
        trace.pre_activations.push(HostTensor {
            shape: pre.dims().to_vec(),
            values: tensor_to_f32(pre.clone().detach()),
        });
        if let Some(stats) = stats {
            trace.bn_stats.push(stats);
        }
    }
}

/// The settings that shape every hidden layer's forward pass.
#[derive(Debug, Clone)]
pub struct NetSpec {
    pub activation: Activation,
    /// Where the normalisation layers sit; `None` when the net has none.
    pub placement: Option<Placement>,
    /// Dropout probability (0 disables it); each architecture says where it applies.
    pub dropout: f64,
    /// Santurkar et al.'s noise after each normalisation slot (`norm.noise`), if on.
    pub noise: Option<NoiseConfig>,
    pub in_channels: usize,
    pub side: usize,
}

impl NetSpec {
    /// Flattened images `[N, C·H·W]` as `[N, C, H, W]`.
    pub fn image_batch(&self, x: Tensor<2>) -> Tensor<4> {
        let [n, _] = x.dims();
        x.reshape([n, self.in_channels, self.side, self.side])
    }

    /// Normalisation, noise, nonlinearity and dropout of hidden layer `i`, given its linear
    /// output `z` and its normalisation layer (`None` without one), in the order the placement
    /// says:
    /// - no normalisation: a = g(z)
    /// - before: a = g(N(z))        (the paper)
    /// - after:  a = N(g(z))
    pub fn hidden_block<const D: usize>(
        &self,
        norm: Option<&Norm>,
        i: usize,
        z: Tensor<D>,
        pass: Pass,
    ) -> Result<Tensor<D>> {
        let mode = pass.mode;
        if let (Some(Placement::After), Some(norm)) = (self.placement, norm) {
            let a = self.activate(z.clone());
            let (a, stats) = norm.forward_with_stats(a, mode.bn_mode())?;
            return self.finish_block(i, z, self.noise(i, a, mode), stats, pass);
        }
        let pre = self.pre_activation(norm, i, z, pass)?;
        Ok(self.dropout(i, self.activate(pre), mode))
    }

    /// Hidden layer `i`'s pre-activation where the normalisation sits before g (or there is
    /// none): N(z) (or z), then the noise, recorded in the pass's trace. The part of
    /// [`NetSpec::hidden_block`] before g, for it and for the fused kernels that apply g
    /// themselves; dropout is the caller's.
    pub fn pre_activation<const D: usize>(
        &self,
        norm: Option<&Norm>,
        i: usize,
        z: Tensor<D>,
        pass: Pass,
    ) -> Result<Tensor<D>> {
        let mode = pass.mode;
        let (pre, stats) = match (self.placement, norm) {
            (Some(Placement::Before), Some(norm)) => norm.forward_with_stats(z, mode.bn_mode())?,
            _ => (z, None),
        };
        let pre = self.noise(i, pre, mode);
        pass.record(&pre, stats);
        Ok(pre)
    }

    /// Whether `crate::kernels::concat_channels` applies g with the bits of [`Self::activate`]:
    /// for ReLU and the sigmoid (its tanh computes in float64, Burn's in float32).
    pub fn g_fuses_exactly(&self) -> bool {
        matches!(self.activation, Activation::Relu | Activation::Sigmoid)
    }

    /// Record the trace (if any) and apply dropout to a hidden layer's output.
    pub fn finish_block<const D: usize>(
        &self,
        i: usize,
        pre: Tensor<D>,
        a: Tensor<D>,
        stats: Option<BatchStats>,
        pass: Pass,
    ) -> Result<Tensor<D>> {
        let mode = pass.mode;
        pass.record(&pre, stats);
        Ok(self.dropout(i, a, mode))
    }

    /// The seed of this forward pass's dropout masks, when it drops units (training with
    /// dropout); None otherwise.
    pub fn dropout_seed(&self, mode: Mode) -> Option<u64> {
        match mode {
            Mode::Train {
                dropout_seed: Some(seed),
                ..
            } if self.dropout > 0.0 => Some(seed),
            _ => None,
        }
    }

    /// Whether this forward pass draws noise (the net has noise and the pass trains).
    pub fn draws_noise(&self, mode: Mode) -> bool {
        self.noise_draw(mode).is_some()
    }

    /// This forward pass's noise and its seed, when the net has noise and the pass trains.
    fn noise_draw(&self, mode: Mode) -> Option<(&NoiseConfig, u64)> {
        match mode {
            Mode::Train {
                noise_seed: Some(seed),
                ..
            } => self.noise.as_ref().map(|params| (params, seed)),
            _ => None,
        }
    }

    /// Santurkar et al.'s noise on hidden layer `i`'s normalised values, in training passes of
    /// a net that has it; the values unchanged otherwise.
    pub fn noise<const D: usize>(&self, i: usize, t: Tensor<D>, mode: Mode) -> Tensor<D> {
        match self.noise_draw(mode) {
            Some((params, seed)) => add_noise(t, params, seed, i),
            None => t,
        }
    }

    /// g as the fused kernels name it.
    pub fn kernel_act(&self) -> Act {
        match self.activation {
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Relu => Act::Relu,
            Activation::Tanh => Act::Tanh,
        }
    }

    /// g, op by op.
    pub fn activate<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        match self.activation {
            Activation::Sigmoid => sigmoid(z),
            Activation::Relu => relu(z),
            Activation::Tanh => tanh(z),
        }
    }

    /// Inverted dropout: keep with probability 1 − p and scale by 1/(1 − p), with masks from
    /// bn-exp's own generator so that runs and resumes repeat exactly.
    pub fn dropout<const D: usize>(&self, layer: usize, a: Tensor<D>, mode: Mode) -> Tensor<D> {
        let Some(seed) = self.dropout_seed(mode) else {
            return a;
        };
        let p = self.dropout;
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
}

/// One weight layer of a model, for Santurkar et al.'s ICS measure (`crate::measures`): the
/// parameter whose gradient is compared (W_i) and every parameter of the layer (W_i, its bias,
/// its normalisation's γ and β), which is what "the layers before" a later one update.
#[derive(Debug, Clone)]
pub struct WeightLayer {
    /// How tables and plots name it: `hidden 0`, `output`.
    pub name: String,
    pub weight: ParamId,
    pub params: Vec<ParamId>,
}

/// The ids of every float parameter of `module`, in visiting order.
pub fn param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// Give a hidden layer the data-dependent initialisation (see `Net::with_data_init`) from
/// `per_unit`, its units' pre-activations t through unit-norm weights, one row per unit: its
/// normalisation `norm` gets g = 1/σ(t), and the layer's bias, if it has one, b = −μ(t)/σ(t).
pub fn take_data_init(norm: &mut Norm, bias: Option<&mut Param<Tensor<1>>>, per_unit: Tensor<2>) {
    let (initialised, b) = norm.clone().with_data_init(per_unit);
    *norm = initialised;
    if let Some(bias) = bias {
        *bias = Param::from_tensor(b);
    }
}

/// The weight layers of a net, input to output: each of its `hidden` layers (whose weight
/// `weight` names) with its normalisation in `norms` (if any), then the `output` layer.
pub fn weight_layers<M: Module>(
    hidden: &[M],
    weight: impl Fn(&M) -> ParamId,
    norms: &[Norm],
    output: &Linear,
) -> Vec<WeightLayer> {
    let mut layers: Vec<WeightLayer> = hidden
        .iter()
        .enumerate()
        .map(|(i, layer)| hidden_weight_layer(i, weight(layer), layer, norms.get(i)))
        .collect();
    layers.push(output_weight_layer(output));
    layers
}

/// The weight layer of hidden layer `i`: its weight, its own parameters and its
/// normalisation's.
fn hidden_weight_layer<M: Module>(
    i: usize,
    weight: ParamId,
    layer: &M,
    norm: Option<&Norm>,
) -> WeightLayer {
    let mut params = param_ids(layer);
    if let Some(norm) = norm {
        params.extend(param_ids(norm));
    }
    WeightLayer {
        name: format!("hidden {i}"),
        weight,
        params,
    }
}

/// The output layer's weight layer.
fn output_weight_layer(output: &Linear) -> WeightLayer {
    WeightLayer {
        name: "output".into(),
        weight: output.weight.id,
        params: param_ids(output),
    }
}

/// How a net's layers are built, on `device`: its normalisation layers from the config (for a
/// run of `steps` steps: Batch Renorm's schedule is in fractions of them), and its weights drawn
/// from bn-exp's generator layer by layer, in the order the layers are asked for; biases start
/// at 0.
pub struct LayerBuilder<'a> {
    pub norm: &'a NormConfig,
    pub steps: u64,
    pub init: Init,
    /// The standard deviation of [`Init::Gaussian`].
    pub init_std: f64,
    pub rng: Rng,
    pub device: &'a Device,
}

impl LayerBuilder<'_> {
    /// One normalisation layer per hidden layer of these widths; none without normalisation.
    pub fn norms(&self, widths: &[usize]) -> Vec<Norm> {
        widths
            .iter()
            .filter_map(|&w| Norm::new(self.norm, w, self.steps, self.device))
            .collect()
    }

    /// Whether a hidden layer has a bias: not when it feeds a normalisation placed before g,
    /// whose β subsumes it.
    pub fn hidden_bias(&self) -> bool {
        !self.norm.subsumes_bias()
    }

    fn std_for(&self, fan_in: usize, fan_out: usize) -> f64 {
        match self.init {
            Init::Gaussian => self.init_std,
            Init::Xavier => (2.0 / (fan_in + fan_out) as f64).sqrt(),
            Init::He => (2.0 / fan_in as f64).sqrt(),
        }
    }

    fn normal_tensor<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| (self.rng.normal() * std) as f32).collect();
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    /// A linear layer `[d_in, d_out]` (Burn's layout), with a zero bias if `bias`.
    pub fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let std = self.std_for(d_in, d_out);
        Linear {
            weight: Param::from_tensor(self.normal_tensor([d_in, d_out], std)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], self.device))),
        }
    }

    /// The output layer: a linear map from `d_in` features to the [`CLASSES`] logits, with a
    /// bias.
    pub fn classifier(&mut self, d_in: usize) -> Linear {
        self.linear(d_in, CLASSES, true)
    }

    /// A k×k convolution `[c_out, c_in, k, k]` with `padding` on every side and `stride`, with a
    /// zero bias if `bias`.
    pub fn conv(&mut self, shape: ConvShape, bias: bool) -> Conv2d {
        let ConvShape {
            c_in,
            c_out,
            kernel: k,
            stride,
            padding: p,
        } = shape;
        let mut conv = Conv2dConfig::new([c_in, c_out], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(bias)
            .init(self.device);
        let std = self.std_for(c_in * k * k, c_out * k * k);
        conv.weight = Param::from_tensor(self.normal_tensor([c_out, c_in, k, k], std));
        conv.bias = bias.then(|| Param::from_tensor(Tensor::zeros([c_out], self.device)));
        conv
    }
}

/// The shape of a convolution layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    /// The CNN's 3×3 convolution with padding 1 and stride 1, which keeps the map's size.
    pub fn same3x3(c_in: usize, c_out: usize) -> Self {
        Self {
            c_in,
            c_out,
            kernel: 3,
            stride: 1,
            padding: 1,
        }
    }
}
