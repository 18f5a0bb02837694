//! The small Inception of Zhang et al. (2017, "Understanding deep learning requires rethinking
//! generalization", figure 3), the Inception commonly trained on CIFAR-10: `model.arch =
//! "inception"`, every channel count scaled by `model.width`.
//!
//! - conv module: a convolution, its normalisation before or after g (or none), and g;
//! - inception module I(c1, c3): a 1×1 conv module of c1 channels and a 3×3 conv module
//!   (padding 1) of c3 channels on the same input, concatenated along the channels;
//! - downsample module D(c3): a 3×3 stride-2 conv module of c3 channels (no padding) and a 3×3
//!   stride-2 max-pool of the input, concatenated;
//! - the net: conv 3×3 96 → I(32,32) → I(32,48) → D(80) → I(112,48) → I(96,64) → I(80,80) →
//!   I(48,96) → D(96) → I(176,160) → I(176,160) → global average pooling → dropout
//!   (`model.dropout`, here only before the classifier) → linear 10.
//!
//! On 32×32 images the maps are 32×32 up to the first D, 15×15 after it and 7×7 after the
//! second. Every conv module is a hidden layer: it has a normalisation slot, its
//! pre-activations are probed, and its weight is a layer of the ICS measure, in the order of
//! [`conv_modules`] (a stage's 1×1 module before its 3×3 one).

use anyhow::{Result, ensure};
use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use super::block::{
    CLASSES, ConvShape, LayerBuilder, Mode, NetSpec, Pass, WeightLayer, take_data_init,
    weight_layers,
};
use super::geometry::{Architecture, Compute, ImageShape, NetSize};
use crate::kernels::{
    Act, concat_channels, conv1x1, conv3x3, conv3x3_stride2, max_pool3x3_stride2,
};
use crate::norm::{LayerShape, Norm, Placement};

/// The largest `model.width`: four times Zhang et al.'s channels is far beyond what a CPU trains.
pub const MAX_WIDTH_SCALE: f64 = 4.0;

/// The Inception's own setting: `model.width`.
#[derive(Debug, Clone, PartialEq)]
pub struct InceptionConfig {
    /// Every channel count of Zhang et al.'s net times this, rounded, at least 1.
    pub width: f64,
}

impl Default for InceptionConfig {
    fn default() -> Self {
        Self { width: 1.0 }
    }
}

/// A stage after the first conv module, with Zhang et al.'s channel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// I(c1, c3): 1×1 and 3×3 conv modules side by side.
    Inception(usize, usize),
    /// D(c3): a 3×3 stride-2 conv module beside a 3×3 stride-2 max-pool.
    Down(usize),
}

/// The first conv module's channels.
const STEM: usize = 96;

const STAGES: [Stage; 10] = [
    Stage::Inception(32, 32),
    Stage::Inception(32, 48),
    Stage::Down(80),
    Stage::Inception(112, 48),
    Stage::Inception(96, 64),
    Stage::Inception(80, 80),
    Stage::Inception(48, 96),
    Stage::Down(96),
    Stage::Inception(176, 160),
    Stage::Inception(176, 160),
];

/// The side of a map after a 3×3 stride-2 window with no padding.
fn downsampled(side: usize) -> usize {
    side.saturating_sub(3) / 2 + 1
}

/// One conv module: its convolution's shape and the side of the map it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvModule {
    pub shape: ConvShape,
    pub side_out: usize,
}

/// Every conv module of the net `config` describes on `image`, input to output, with the
/// channels and side of the map the net ends with (before global average pooling).
pub fn conv_modules(config: &InceptionConfig, image: ImageShape) -> (Vec<ConvModule>, usize) {
    let scale = |c: usize| ((c as f64 * config.width).round() as usize).max(1);
    let module = |c_in, c_out, kernel, stride, side_out| ConvModule {
        shape: ConvShape {
            c_in,
            c_out,
            kernel,
            stride,
            padding: usize::from(kernel == 3 && stride == 1),
        },
        side_out,
    };
    let mut side = image.side;
    let mut modules = vec![module(image.channels, scale(STEM), 3, 1, side)];
    let mut ch = scale(STEM);
    for stage in STAGES {
        match stage {
            Stage::Inception(c1, c3) => {
                let (c1, c3) = (scale(c1), scale(c3));
                modules.push(module(ch, c1, 1, 1, side));
                modules.push(module(ch, c3, 3, 1, side));
                ch = c1 + c3;
            }
            Stage::Down(c3) => {
                let c3 = scale(c3);
                side = downsampled(side);
                modules.push(module(ch, c3, 3, 2, side));
                ch += c3;
            }
        }
    }
    (modules, ch)
}

impl Architecture for InceptionConfig {
    fn unit_word(&self) -> &'static str {
        "channels"
    }

    fn layers(&self, image: ImageShape) -> Vec<LayerShape> {
        conv_modules(self, image)
            .0
            .iter()
            .map(|m| LayerShape {
                width: m.shape.c_out,
                positions: m.side_out * m.side_out,
            })
            .collect()
    }

    fn check(&self, image: ImageShape) -> Result<()> {
        ensure!(
            self.width.is_finite() && self.width > 0.0 && self.width <= MAX_WIDTH_SCALE,
            "model.width must be a number above 0 and at most {MAX_WIDTH_SCALE}, got {}",
            self.width
        );
        // Two downsample modules, each a 3×3 window: the second needs a map of at least 3×3.
        ensure!(
            image.side >= 7,
            "model.arch = \"inception\" downsamples twice with 3x3 windows, so it needs images \
             of at least 7x7, got {0}x{0}",
            image.side
        );
        Ok(())
    }

    fn forward_flops(&self, image: ImageShape) -> u64 {
        let (modules, ch) = conv_modules(self, image);
        let convs = modules.iter().fold(0u64, |sum, m| {
            let s = &m.shape;
            let macs =
                (s.kernel * s.kernel * s.c_in * s.c_out) as u64 * (m.side_out * m.side_out) as u64;
            sum.saturating_add(2 * macs)
        });
        convs.saturating_add(2 * (ch * CLASSES) as u64)
    }

    fn compute(&self) -> Compute {
        Compute::Conv
    }

    fn size(&self, image: ImageShape) -> NetSize {
        let (modules, ch) = conv_modules(self, image);
        let mut size = NetSize {
            params: (ch * CLASSES) as u64,
            activations: image.features() as u64,
        };
        for m in &modules {
            let s = &m.shape;
            size.params = size
                .params
                .saturating_add((s.kernel * s.kernel * s.c_in * s.c_out) as u64);
            size.activations = size
                .activations
                .saturating_add((s.c_out * m.side_out * m.side_out) as u64);
        }
        size
    }
}

/// The Inception net: its conv modules' convolutions and normalisation layers (one per
/// module, or none), input to output, and the output layer. The field names are the
/// checkpoint's parameter paths.
#[derive(Module, Debug)]
pub struct Inception {
    convs: Vec<Conv2d>,
    norms: Vec<Norm>,
    output: Linear,
    /// The settings of every conv module: g and the normalisation, without dropout.
    #[module(skip)]
    modules_spec: NetSpec,
    /// The net's settings; its dropout is applied before the classifier only.
    #[module(skip)]
    spec: NetSpec,
    #[module(skip)]
    shapes: Vec<ConvShape>,
}

impl Inception {
    /// The Inception `config` describes, its layers from `build`, input to output.
    pub fn new(config: &InceptionConfig, spec: NetSpec, build: &mut LayerBuilder) -> Self {
        let image = ImageShape::from((spec.in_channels, spec.side));
        let (modules, ch) = conv_modules(config, image);
        let widths: Vec<usize> = modules.iter().map(|m| m.shape.c_out).collect();
        let norms = build.norms(&widths);
        let bias = build.hidden_bias();
        let convs = modules.iter().map(|m| build.conv(m.shape, bias)).collect();
        Self {
            convs,
            norms,
            output: build.classifier(ch),
            modules_spec: NetSpec {
                dropout: 0.0,
                ..spec.clone()
            },
            spec,
            shapes: modules.iter().map(|m| m.shape).collect(),
        }
    }

    /// The normalisation layers, input to output (empty without normalisation).
    pub fn norms(&self) -> &[Norm] {
        &self.norms
    }

    /// Logits, with each stage applying g as it concatenates its parts
    /// ([`concat_channels`], one op over threads instead of Burn's `cat` and g one part at a
    /// time) where that computes the same numbers as [`Inception::forward_reference`]:
    /// normalisation before g (or none), and a g the kernel applies with the same bits
    /// (`NetSpec::g_fuses_exactly`). Op by op otherwise.
    pub fn forward(&self, x: Tensor<2>, mut pass: Pass) -> Result<Tensor<2>> {
        let spec = &self.modules_spec;
        if spec.placement == Some(Placement::After) || !spec.g_fuses_exactly() {
            return self.forward_reference(x, pass);
        }
        let mode = pass.mode;
        let h = self.spec.image_batch(x);
        let h = walk(h, Join::Activating(spec), &mut |i, h| {
            let z = self.conv(i, h);
            spec.pre_activation(self.norms.get(i), i, z, pass.layer())
        })?;
        Ok(self.head(h, mode))
    }

    /// The net op by op: each conv module's convolution and hidden block, the concatenations
    /// and the max-pools, global average pooling, dropout, then the output layer through
    /// Burn's `Linear`.
    pub fn forward_reference(&self, x: Tensor<2>, mut pass: Pass) -> Result<Tensor<2>> {
        let mode = pass.mode;
        let h = self.spec.image_batch(x);
        let h = walk(h, Join::AsComputed, &mut |i, h| {
            let z = self.conv(i, h);
            let layer = pass.layer();
            self.modules_spec
                .hidden_block(self.norms.get(i), i, z, layer)
        })?;
        Ok(self.head(h, mode))
    }

    /// Logits from the last stage's output: global average pooling, dropout, the output layer.
    fn head(&self, h: Tensor<4>, mode: Mode) -> Tensor<2> {
        let pooled = global_average(h);
        let dropped = self.spec.dropout(self.shapes.len(), pooled, mode);
        self.output.forward(dropped)
    }

    /// Conv module `i`'s convolution with its bias, if any, through bn-exp's kernels.
    fn conv(&self, i: usize, h: Tensor<4>) -> Tensor<4> {
        let bias = self.convs[i].bias.as_ref().map(|b| b.val());
        let weight = self.conv_weight(i);
        conv_with(self.shapes[i], h, weight, bias)
    }

    /// The weight conv module `i` convolves with (Weight Norm's g·v/‖v‖, or its own).
    pub fn conv_weight(&self, i: usize) -> Tensor<4> {
        let v = self.convs[i].weight.val();
        match self.norms.get(i) {
            Some(norm) => norm.conv_weight(v),
            None => v,
        }
    }

    /// The weight layers as Santurkar et al.'s ICS measure sees them, input to output.
    pub fn weight_layers(&self) -> Vec<WeightLayer> {
        let weight = |conv: &Conv2d| conv.weight.id;
        weight_layers(&self.convs, weight, &self.norms, &self.output)
    }

    /// The data-dependent initialisation on the batch `x` (see `Net::with_data_init`), conv
    /// module by conv module in the forward's order, each on its input as the modules before
    /// it now compute it; statistics per channel over the batch and positions.
    pub fn with_data_init(mut self, x: Tensor<2>) -> Result<Self> {
        let h = self.spec.image_batch(x.detach());
        let shapes = self.shapes.clone();
        walk(h, Join::AsComputed, &mut |i, h| {
            let h = h.detach();
            let v = self.convs[i].weight.val().detach();
            if let Some(unit) = self.norms.get(i).and_then(|n| n.data_init_conv(v)) {
                let t = conv_with(shapes[i], h.clone(), unit, None);
                let [n, c, hh, ww] = t.dims();
                let per_channel = t.swap_dims(0, 1).reshape([c, n * hh * ww]);
                let bias = self.convs[i].bias.as_mut();
                take_data_init(&mut self.norms[i], bias, per_channel);
            }
            let z = self.conv(i, h);
            let a = self
                .modules_spec
                .hidden_block(self.norms.get(i), i, z, Pass::PROBE)?;
            Ok(a.detach())
        })?;
        Ok(self)
    }
}

/// The convolution of `shape` on `h`.
fn conv_with(
    shape: ConvShape,
    h: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    // [`conv_modules`] makes only these three; each kernel panics on a weight of another size.
    match (shape.kernel, shape.stride) {
        (1, _) => conv1x1(h, weight, bias),
        (_, 1) => conv3x3(h, weight, bias),
        _ => conv3x3_stride2(h, weight, bias),
    }
}

/// How a pass makes the stages' outputs from its conv modules' results.
#[derive(Clone, Copy)]
enum Join<'a> {
    /// Each result is the module's output, g applied; a stage concatenates its parts with
    /// Burn's `cat`.
    AsComputed,
    /// Each result is the module's pre-activation; a stage applies g (these settings') to its
    /// conv modules' parts as it concatenates them ([`concat_channels`]), and passes a
    /// max-pool's part as it is (its input is a stage's output, g already applied).
    Activating(&'a NetSpec),
}

impl Join<'_> {
    /// The first conv module's output from its result.
    fn stem(self, h: Tensor<4>) -> Tensor<4> {
        match self {
            Join::AsComputed => h,
            Join::Activating(spec) => spec.activate(h),
        }
    }

    /// A stage's output from a conv module's result and the part beside it: another conv
    /// module's result (`pool` false) or a max-pool's output.
    fn stage(self, conv: Tensor<4>, beside: Tensor<4>, pool: bool) -> Tensor<4> {
        match self {
            Join::AsComputed => Tensor::cat(vec![conv, beside], 1),
            Join::Activating(spec) => {
                let g = spec.kernel_act();
                concat_channels(conv, beside, [g, if pool { Act::Identity } else { g }])
            }
        }
    }
}

/// The net's stages on the first conv module's input `h`: conv module `i`'s result is
/// `module(i, its input)`, in the order of [`conv_modules`], and `join` makes each stage's
/// output from its parts. Returns the last stage's output.
fn walk(
    h: Tensor<4>,
    join: Join,
    module: &mut dyn FnMut(usize, Tensor<4>) -> Result<Tensor<4>>,
) -> Result<Tensor<4>> {
    let mut h = join.stem(module(0, h)?);
    let mut i = 1;
    for stage in STAGES {
        h = match stage {
            Stage::Inception(..) => {
                let one = module(i, h.clone())?;
                let three = module(i + 1, h)?;
                i += 2;
                join.stage(one, three, false)
            }
            Stage::Down(_) => {
                let conv = module(i, h.clone())?;
                i += 1;
                join.stage(conv, max_pool3x3_stride2(h), true)
            }
        };
    }
    Ok(h)
}

/// Each channel's mean over its map: `[N, C, H, W]` → `[N, C]`.
fn global_average(h: Tensor<4>) -> Tensor<2> {
    let [n, c, hh, ww] = h.dims();
    h.reshape([n, c, hh * ww]).mean_dim(2).reshape([n, c])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zhang_et_al_shapes_on_cifar() {
        let image = ImageShape::from((3, 32));
        let (modules, ch) = conv_modules(&InceptionConfig::default(), image);
        // 1 stem, 8 inception modules of 2, 2 downsample modules of 1.
        assert_eq!(modules.len(), 1 + 8 * 2 + 2);
        assert_eq!(ch, 176 + 160);
        let sides: Vec<usize> = modules.iter().map(|m| m.side_out).collect();
        // The stem and I(32,32), I(32,48) keep 32x32; D(80) is module 5, D(96) module 14.
        assert_eq!(sides[..5], [32; 5]);
        assert_eq!(sides[5], 15, "D(80) on 32x32");
        assert_eq!(sides[6..14], [15; 8]);
        assert_eq!(sides[14], 7, "D(96) on 15x15");
        assert_eq!(sides[15..], [7; 4]);
        // D(80)'s input: I(32,48) = 80 channels; after it 80 + 80.
        assert_eq!(modules[5].shape.c_in, 80);
        assert_eq!(modules[6].shape.c_in, 160);
        assert_eq!((modules[5].shape.stride, modules[5].shape.padding), (2, 0));
        assert_eq!(modules[1].shape.kernel, 1);
        assert_eq!(modules[1].shape.padding, 0);
    }

    /// The weights of every conv and linear layer, as torch counts them in the same net in
    /// `scripts/pytorch_reference.py` (`inception(True, width)`): an independent build of the
    /// architecture. (Zhang et al. give 1,649,402 parameters at full width, with biases and BN.)
    #[test]
    fn weight_count_matches_the_pytorch_build_of_the_same_net() {
        let image = ImageShape::from((3, 32));
        for (width, weights) in [(0.25, 104_096), (1.0, 1_647_680)] {
            let size = InceptionConfig { width }.size(image);
            assert_eq!(size.params, weights, "width {width}");
        }
    }

    #[test]
    fn width_scales_every_channel_count_and_is_checked() {
        let image = ImageShape::from((3, 32));
        let half = InceptionConfig { width: 0.5 };
        let (modules, ch) = conv_modules(&half, image);
        assert_eq!(modules[0].shape.c_out, 48);
        assert_eq!(ch, 88 + 80);
        for width in [0.0, -1.0, f64::NAN, 4.5] {
            let err = InceptionConfig { width }.check(image).unwrap_err();
            assert!(err.to_string().contains("model.width"), "{err}");
        }
        let err = InceptionConfig::default()
            .check(ImageShape::from((3, 6)))
            .unwrap_err();
        assert!(err.to_string().contains("7x7"), "{err}");
    }
}
