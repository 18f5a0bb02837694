//! Run configuration: the JSON schema, its defaults, `--set` overrides and validation.
//!
//! A config file is read as JSON, `--set key.path=value` overrides are applied to the raw JSON,
//! and only then is it parsed into [`Config`] (unknown keys are rejected, so a typo in a key is
//! an error, not a silently ignored setting) and validated. The fully resolved config, every
//! default filled in, is what a run writes to its `config.json`.
//!
//! Defaults follow the paper where it says something (784-100-100-100-10 sigmoid MLP, batch 60,
//! 50,000 steps, BN before the nonlinearity, ε inside the square root) and are our documented
//! choice where it does not (plain SGD at learning rate 1.0, Gaussian init with std 0.01, ε = 1e-5,
//! moving-average momentum 0.1, inputs scaled to [0, 1]). See `docs/config.md`.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::backend::DeviceKind;
pub use crate::data::{Dataset, Preprocess};

/// One training run, fully described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run name: the folder under `results/<study>/`.
    pub name: String,
    /// Study the run belongs to: the folder under `results/`.
    pub study: String,
    /// Seeds weight init, data order, dropout masks and the probe batch.
    pub seed: u64,
    pub dataset: Dataset,
    pub preprocess: Preprocess,
    pub model: ModelConfig,
    /// The normalisation layer and where it sits. The key `bn` of earlier configs is still
    /// read, and resolved into this one ([`resolve_legacy_bn`]).
    pub norm: NormConfig,
    pub optim: OptimConfig,
    /// Mini-batch size m.
    pub batch_size: usize,
    /// SGD steps (the paper counts steps, not epochs).
    pub steps: u64,
    /// Evaluate on the full test set every this many steps (and at step 0 and the last step).
    pub eval_every: u64,
    /// Batch size used for evaluation only (it does not change the result in inference mode).
    pub eval_batch_size: usize,
    pub probe: ProbeConfig,
    /// Santurkar et al.'s optimisation measures (ICS as gradient change, the loss landscape
    /// along the gradient, gradient predictiveness, β-smoothness), written to
    /// `measures.jsonl`. Off unless `measures.every` is set.
    pub measures: MeasuresConfig,
    /// Accuracy thresholds (fractions) for `steps_to` in the summary.
    pub thresholds: Vec<f64>,
    /// Save a resumable checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Where the run computes: `cpu` (Burn's flex backend with bn-exp's fused kernels) or
    /// `gpu` (Burn's wgpu backend; needs the `gpu` cargo feature). Results agree within
    /// float32 rounding, not bit for bit, so a run resumes only on the device it started on.
    pub device: DeviceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Mlp,
    Cnn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Sigmoid,
    Relu,
    Tanh,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Hidden layer widths of the MLP.
    pub hidden: Vec<usize>,
    /// Output channels of each conv block of the CNN (conv 3x3, [BN], activation, max-pool 2x2).
    pub channels: Vec<usize>,
    pub activation: Activation,
    pub init: Init,
    /// Standard deviation for `init: "gaussian"`.
    pub init_std: f64,
    /// Dropout probability after each hidden activation (0 disables it).
    pub dropout: f64,
}

/// Which normalisation layer each hidden layer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// No normalisation; linear and conv layers keep their bias.
    None,
    /// Batch Normalization (Ioffe & Szegedy 2015, Algorithms 1 and 2).
    Batch,
    /// Batch Renormalization (Ioffe 2017): BN corrected towards its moving averages by r and d.
    Renorm,
    /// Layer Normalization (Ba, Kiros & Hinton 2016): per-example statistics over all of a
    /// layer's units (over C·H·W for conv maps: Group Norm with one group).
    Layer,
    /// Group Normalization (Wu & He 2018): per-example statistics over groups of channels.
    Group,
    /// Weight Normalization (Salimans & Kingma 2016): w = g·v/‖v‖ per output unit, optionally
    /// with mean-only BN (`norm.mean_only`).
    Weight,
}

impl NormKind {
    /// The name people read: "BN", "Batch Renorm", "Layer Norm", …
    pub fn label(self) -> &'static str {
        match self {
            NormKind::None => "no normalisation",
            NormKind::Batch => "BN",
            NormKind::Renorm => "Batch Renorm",
            NormKind::Layer => "Layer Norm",
            NormKind::Group => "Group Norm",
            NormKind::Weight => "Weight Norm",
        }
    }

    /// Whether the layer normalises with statistics of the mini-batch (and so keeps moving
    /// averages for inference and can take a statistics batch smaller than the training batch).
    pub fn uses_batch_statistics(self) -> bool {
        matches!(self, NormKind::Batch | NormKind::Renorm)
    }
}

/// Batch Renormalization's limits on r and d, and their schedule. The paper (Ioffe 2017) trains
/// with r_max = 1, d_max = 0 (plain BN) for 5k steps, then ramps d_max to 5 by 25k steps and
/// r_max to 3 by 40k. Here the schedule is in fractions of the run's `steps`, so a 50,000-step
/// run gets exactly the paper's numbers and a shorter run the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenormConfig {
    /// r is clipped to [1/r_max, r_max] once the ramp is done (at least 1).
    pub r_max: f64,
    /// d is clipped to [−d_max, d_max] once the ramp is done (at least 0).
    pub d_max: f64,
    /// Fraction of the run trained as plain BN (r_max = 1, d_max = 0) before the ramps start.
    pub warmup: f64,
    /// Fraction of the run at which r_max reaches its final value.
    pub r_max_at: f64,
    /// Fraction of the run at which d_max reaches its final value.
    pub d_max_at: f64,
}

impl Default for RenormConfig {
    fn default() -> Self {
        Self {
            r_max: 3.0,
            d_max: 5.0,
            warmup: 0.1,
            r_max_at: 0.8,
            d_max_at: 0.5,
        }
    }
}

impl RenormConfig {
    /// (r_max, d_max) at training step `step` of a run of `steps` steps: 1 and 0 during the
    /// warm-up, then each rises linearly to its final value.
    pub fn limits_at(&self, step: u64, steps: u64) -> (f64, f64) {
        let t = step as f64 / steps.max(1) as f64;
        let ramp = |end: f64| -> f64 {
            if t <= self.warmup {
                0.0
            } else if t >= end || end <= self.warmup {
                1.0
            } else {
                (t - self.warmup) / (end - self.warmup)
            }
        };
        (
            1.0 + (self.r_max - 1.0) * ramp(self.r_max_at),
            self.d_max * ramp(self.d_max_at),
        )
    }
}

/// Where the normalisation layer sits relative to the nonlinearity g.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// g(N(Wu)), as in the paper; the layer before N has no bias (β subsumes it).
    Before,
    /// N(g(Wu + b)).
    After,
}

/// Which statistics BN uses in inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceStats {
    /// Moving averages kept during training (the default; what evaluation during training uses).
    Moving,
    /// The paper's Algorithm 2: averages over K training mini-batches after training.
    Population,
    /// The test batch's own statistics: a known pitfall, kept to show its effect.
    Batch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormConfig {
    pub kind: NormKind,
    /// Where the layer sits (ignored when `kind` is `none`).
    pub placement: Placement,
    /// ε, added to the variance inside the square root.
    pub eps: f64,
    /// running = (1 - momentum)·running + momentum·batch (PyTorch's convention).
    pub momentum: f64,
    /// Statistics for the final evaluation (`summary.final_test_acc`).
    pub inference: InferenceStats,
    /// K, the number of training mini-batches of the population pass.
    pub population_batches: usize,
    /// Run the population pass at the end and report its accuracy too.
    pub population_pass: bool,
    /// Group Norm's G: channels (units) per layer are split into G groups. Must divide every
    /// hidden layer's width. `kind: layer` is G = 1; G = channels is Instance Norm.
    pub groups: usize,
    /// BN and Batch Renorm: normalise each group of this many examples of a training batch by
    /// its own statistics (the papers' "images per GPU"); `null` uses the whole batch.
    pub stats_batch: Option<usize>,
    /// Batch Renorm's limits and schedule.
    pub renorm: RenormConfig,
    /// Weight Norm: add mean-only BN (subtract the batch mean, keep a running mean for
    /// inference, never divide by a std), as Salimans & Kingma recommend.
    pub mean_only: bool,
    /// Weight Norm: the paper's data-dependent initialisation of g (and b) from the first
    /// training batch, so every pre-activation starts with mean 0 and variance 1.
    pub data_init: bool,
    /// Santurkar et al.'s noisy BN: after the normalisation layer (or, without one, where it
    /// would sit before g), every training forward pass scales and shifts each value by fresh
    /// random noise, a ← s·a + m, with the distribution of `noise_params`. Training only:
    /// inference has no noise.
    pub noise: bool,
    /// The distribution of `noise`.
    pub noise_params: NoiseConfig,
}

/// The noise of Santurkar et al. (2018), section 2.2: for each layer and training step draw
/// μ_t ~ U(−mean_range, mean_range) and σ_t ~ U(scale_min, scale_max); then for each value
/// m ~ U(μ_t − mean_spread, μ_t + mean_spread) and s ~ N(σ_t, scale_std), and a ← s·a + m.
/// Because μ_t and σ_t change every step, the layer's output distribution moves every step: a
/// deliberate covariate shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    pub mean_range: f64,
    pub scale_min: f64,
    pub scale_max: f64,
    pub mean_spread: f64,
    pub scale_std: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            mean_range: 0.5,
            scale_min: 1.0,
            scale_max: 1.25,
            mean_spread: 0.1,
            scale_std: 0.1,
        }
    }
}

/// When and how `measures.jsonl` is probed (see `crate::measures`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasuresConfig {
    /// Probe every this many steps, before the step's update, on its training batch; 0 turns
    /// the measures off (the default; they cost nothing then).
    pub every: u64,
    /// The step sizes η along the gradient, as multiples of the step's learning rate.
    pub lr_multiples: Vec<f64>,
}

impl Default for MeasuresConfig {
    fn default() -> Self {
        Self {
            every: 0,
            // A log grid of 7 points from 0.5 to 4, a factor √2 apart.
            lr_multiples: (0..7).map(|k| 0.5 * 2f64.powf(k as f64 / 2.0)).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr stays at `lr`.
    Constant,
    /// lr · gamma^floor(step / step_every).
    Step,
    /// lr · gamma^(step / step_every), a smooth decay.
    Exponential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub kind: OptimKind,
    pub lr: f64,
    /// Classical momentum (0 disables it).
    pub momentum: f64,
    /// L2 penalty added to the gradient (0 disables it).
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Decay factor of the `step` and `exponential` schedules.
    pub gamma: f64,
    /// Steps per decay of the `step` and `exponential` schedules.
    pub step_every: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Training images in the fixed probe batch (drawn once from the seed).
    pub batch_size: usize,
    /// Hidden layer of the tracked unit (0-based); `null` means the last hidden layer.
    pub layer: Option<usize>,
    /// Tracked unit (MLP) or channel (CNN) within that layer.
    pub unit: usize,
    /// Histogram bins over [lo, hi).
    pub bins: usize,
    pub lo: f64,
    pub hi: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "run".into(),
            study: "default".into(),
            seed: 0,
            dataset: Dataset::Mnist,
            preprocess: Preprocess::Scale,
            model: ModelConfig::default(),
            norm: NormConfig::default(),
            optim: OptimConfig::default(),
            batch_size: 60,
            steps: 50_000,
            eval_every: 500,
            eval_batch_size: 1000,
            probe: ProbeConfig::default(),
            measures: MeasuresConfig::default(),
            thresholds: vec![0.90, 0.95, 0.97, 0.98],
            checkpoint_every: 5000,
            device: DeviceKind::Cpu,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Mlp,
            hidden: vec![100, 100, 100],
            channels: vec![32, 64],
            activation: Activation::Sigmoid,
            init: Init::Gaussian,
            init_std: 0.01,
            dropout: 0.0,
        }
    }
}

impl Default for NormConfig {
    fn default() -> Self {
        Self {
            kind: NormKind::Batch,
            placement: Placement::Before,
            eps: 1e-5,
            momentum: 0.1,
            inference: InferenceStats::Moving,
            population_batches: 100,
            population_pass: true,
            groups: 4,
            stats_batch: None,
            renorm: RenormConfig::default(),
            mean_only: false,
            data_init: true,
            noise: false,
            noise_params: NoiseConfig::default(),
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimKind::Sgd,
            lr: 1.0,
            momentum: 0.0,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            gamma: 0.1,
            step_every: 10_000,
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            layer: None,
            unit: 0,
            bins: 80,
            lo: -10.0,
            hi: 10.0,
        }
    }
}

impl OptimConfig {
    /// Learning rate used for the update that takes the run from `step` to `step + 1`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let every = self.step_every.max(1) as f64;
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step => self.lr * self.gamma.powf((step as f64 / every).floor()),
            Schedule::Exponential => self.lr * self.gamma.powf(step as f64 / every),
        }
    }
}

impl Config {
    /// Number of hidden layers whose pre-activations are probed.
    pub fn hidden_layers(&self) -> usize {
        match self.model.arch {
            Arch::Mlp => self.model.hidden.len(),
            Arch::Cnn => self.model.channels.len(),
        }
    }

    /// Width (units or channels) of hidden layer `layer`.
    pub fn hidden_width(&self, layer: usize) -> usize {
        match self.model.arch {
            Arch::Mlp => self.model.hidden[layer],
            Arch::Cnn => self.model.channels[layer],
        }
    }

    /// The probed layer, with `null` resolved to the last hidden layer.
    pub fn probe_layer(&self) -> usize {
        self.probe
            .layer
            .unwrap_or_else(|| self.hidden_layers().saturating_sub(1))
    }

    /// True when the net has normalisation layers.
    pub fn has_norm(&self) -> bool {
        self.norm.kind != NormKind::None
    }

    /// Where the normalisation layers sit; `None` when the net has none.
    pub fn norm_placement(&self) -> Option<Placement> {
        self.has_norm().then_some(self.norm.placement)
    }

    /// Whether the layer before each normalisation drops its bias: when the normalisation sits
    /// before g and ends in its own shift β, which subsumes the bias (BN, Batch Renorm, Layer and
    /// Group Norm, mean-only BN). Weight Norm alone keeps the bias b of its layer.
    pub fn norm_subsumes_bias(&self) -> bool {
        self.norm_placement() == Some(Placement::Before)
            && (self.norm.kind != NormKind::Weight || self.norm.mean_only)
    }

    /// Whether inference uses statistics kept from training (moving averages or the population
    /// pass): BN, Batch Renorm and mean-only BN do; Layer and Group Norm compute each example's
    /// own, and Weight Norm alone has none.
    pub fn norm_keeps_statistics(&self) -> bool {
        match self.norm.kind {
            NormKind::Batch | NormKind::Renorm => true,
            NormKind::Weight => self.norm.mean_only,
            NormKind::None | NormKind::Layer | NormKind::Group => false,
        }
    }

    /// Check every constraint that serde's types cannot express. Each failure names the key.
    pub fn validate(&self) -> Result<()> {
        let o = &self.optim;
        ensure!(
            o.lr.is_finite() && o.lr > 0.0,
            "optim.lr must be a positive finite number, got {}",
            o.lr
        );
        ensure!(
            o.momentum.is_finite() && (0.0..1.0).contains(&o.momentum),
            "optim.momentum must be in [0, 1), got {}",
            o.momentum
        );
        ensure!(
            o.weight_decay.is_finite() && o.weight_decay >= 0.0,
            "optim.weight_decay must be a non-negative finite number, got {}",
            o.weight_decay
        );
        ensure!(
            o.gamma.is_finite() && o.gamma > 0.0,
            "optim.gamma must be a positive finite number, got {}",
            o.gamma
        );
        ensure!(o.step_every > 0, "optim.step_every must be at least 1");
        ensure!(self.batch_size > 0, "batch_size must be at least 1, got 0");
        ensure!(
            !(self.norm_keeps_statistics() && self.batch_size < 2),
            "batch_size 1 with {} (norm.kind = \"{}\"): a batch of one value per feature has \
             no variance, so its training statistics are undefined; use batch_size >= 2, or a \
             per-example normalisation such as norm.kind = \"layer\"",
            self.norm.kind.label(),
            kind_name(self.norm.kind)
        );
        ensure!(self.steps > 0, "steps must be at least 1");
        ensure!(self.eval_every > 0, "eval_every must be at least 1");
        ensure!(
            self.eval_batch_size > 0,
            "eval_batch_size must be at least 1"
        );
        let norm = &self.norm;
        ensure!(
            norm.eps.is_finite() && norm.eps > 0.0,
            "norm.eps must be a positive finite number, got {}",
            norm.eps
        );
        ensure!(
            norm.momentum.is_finite() && (0.0..=1.0).contains(&norm.momentum),
            "norm.momentum must be in [0, 1], got {}",
            norm.momentum
        );
        ensure!(
            norm.population_batches > 0,
            "norm.population_batches must be at least 1"
        );
        ensure!(
            !(norm.inference == InferenceStats::Population
                && !norm.population_pass
                && self.has_norm()),
            "norm.inference = \"population\" needs norm.population_pass = true"
        );
        self.check_norm_layer()?;
        self.check_noise()?;
        self.check_measures()?;
        let m = &self.model;
        ensure!(
            m.init_std.is_finite() && m.init_std > 0.0,
            "model.init_std must be a positive finite number, got {}",
            m.init_std
        );
        ensure!(
            m.dropout.is_finite() && (0.0..1.0).contains(&m.dropout),
            "model.dropout must be in [0, 1), got {}",
            m.dropout
        );
        match m.arch {
            Arch::Mlp => ensure!(
                !m.hidden.is_empty() && m.hidden.iter().all(|&w| w > 0),
                "model.hidden must list at least one positive width, got {:?}",
                m.hidden
            ),
            Arch::Cnn => {
                ensure!(
                    !m.channels.is_empty() && m.channels.iter().all(|&w| w > 0),
                    "model.channels must list at least one positive width, got {:?}",
                    m.channels
                );
                let (_, side) = self.dataset.image_shape();
                // Checked: a shift by 64 or more would wrap in a release build.
                let last = u32::try_from(m.channels.len())
                    .ok()
                    .and_then(|blocks| side.checked_shr(blocks))
                    .unwrap_or(0);
                ensure!(
                    last >= 1,
                    "model.channels has {} blocks, but each halves the {side}x{side} image",
                    m.channels.len()
                );
            }
        }
        let p = &self.probe;
        ensure!(p.batch_size >= 2, "probe.batch_size must be at least 2");
        ensure!(p.bins > 0, "probe.bins must be at least 1");
        ensure!(
            p.lo.is_finite() && p.hi.is_finite() && p.lo < p.hi,
            "probe.lo must be below probe.hi"
        );
        let layer = self.probe_layer();
        ensure!(
            layer < self.hidden_layers(),
            "probe.layer {layer} does not exist: the net has {} hidden layers",
            self.hidden_layers()
        );
        ensure!(
            p.unit < self.hidden_width(layer),
            "probe.unit {} does not exist: hidden layer {layer} has {} units",
            p.unit,
            self.hidden_width(layer)
        );
        for &t in &self.thresholds {
            ensure!(
                t.is_finite() && t > 0.0 && t <= 1.0,
                "thresholds are fractions in (0, 1], got {t}"
            );
        }
        check_folder_name(&self.name).context("name")?;
        check_folder_name(&self.study).context("study")?;
        self.check_sizes()
    }

    /// The keys of each normalisation layer: G against every layer's width, the statistics
    /// batch against the training batch, Batch Renorm's limits and schedule.
    fn check_norm_layer(&self) -> Result<()> {
        let norm = &self.norm;
        if norm.kind == NormKind::Group {
            self.check_groups()?;
        }
        if let Some(k) = norm.stats_batch {
            ensure!(
                norm.kind.uses_batch_statistics(),
                "norm.stats_batch applies to BN and Batch Renorm (norm.kind = \"batch\" or \
                 \"renorm\"), but norm.kind is \"{}\", whose statistics do not come from the batch; \
                 remove norm.stats_batch or set it to null",
                kind_name(norm.kind)
            );
            ensure!(
                k >= 2,
                "norm.stats_batch is {k}: a statistics batch needs at least 2 examples, or its \
                 variance is undefined"
            );
            ensure!(
                self.batch_size.is_multiple_of(k),
                "norm.stats_batch {k} does not divide batch_size {}: each training batch is split \
                 into groups of norm.stats_batch examples",
                self.batch_size
            );
        }
        let r = &norm.renorm;
        ensure!(
            r.r_max.is_finite() && r.r_max >= 1.0,
            "norm.renorm.r_max must be a finite number of at least 1 (r is clipped to \
             [1/r_max, r_max]), got {}",
            r.r_max
        );
        ensure!(
            r.d_max.is_finite() && r.d_max >= 0.0,
            "norm.renorm.d_max must be a finite number of at least 0 (d is clipped to \
             [-d_max, d_max]), got {}",
            r.d_max
        );
        for (key, value) in [
            ("norm.renorm.warmup", r.warmup),
            ("norm.renorm.r_max_at", r.r_max_at),
            ("norm.renorm.d_max_at", r.d_max_at),
        ] {
            ensure!(
                value.is_finite() && (0.0..=1.0).contains(&value),
                "{key} is a fraction of the run's steps, in [0, 1], got {value}"
            );
        }
        for (key, value) in [
            ("norm.renorm.r_max_at", r.r_max_at),
            ("norm.renorm.d_max_at", r.d_max_at),
        ] {
            ensure!(
                value >= r.warmup,
                "{key} ({value}) comes before the end of norm.renorm.warmup ({}): a ramp \
                 cannot end before it starts",
                r.warmup
            );
        }
        Ok(())
    }

    /// The noise distribution's parameters must describe a distribution.
    fn check_noise(&self) -> Result<()> {
        let n = &self.norm.noise_params;
        for (key, value) in [
            ("norm.noise_params.mean_range", n.mean_range),
            ("norm.noise_params.mean_spread", n.mean_spread),
            ("norm.noise_params.scale_std", n.scale_std),
            ("norm.noise_params.scale_min", n.scale_min),
        ] {
            ensure!(
                value.is_finite() && value >= 0.0,
                "{key} must be a finite number of at least 0, got {value}"
            );
        }
        ensure!(
            n.scale_max.is_finite() && n.scale_max >= n.scale_min,
            "norm.noise_params.scale_max ({}) must be finite and at least \
             norm.noise_params.scale_min ({}): σ_t is drawn from U(scale_min, scale_max)",
            n.scale_max,
            n.scale_min
        );
        Ok(())
    }

    /// The measures' step sizes must be positive, and there must be some when they are on.
    fn check_measures(&self) -> Result<()> {
        let m = &self.measures;
        if m.every == 0 {
            return Ok(());
        }
        ensure!(
            !m.lr_multiples.is_empty(),
            "measures.lr_multiples is empty: the loss landscape needs at least one step size \
             along the gradient (the default is 7 points from 0.5 to 4)"
        );
        for &k in &m.lr_multiples {
            ensure!(
                k.is_finite() && k > 0.0,
                "measures.lr_multiples must hold positive finite multiples of the learning \
                 rate, got {k}"
            );
        }
        Ok(())
    }

    /// Group Norm's G must divide every hidden layer's width and leave at least two values per
    /// group, or the group's variance is undefined.
    fn check_groups(&self) -> Result<()> {
        let g = self.norm.groups;
        ensure!(g >= 1, "norm.groups must be at least 1, got 0");
        let (_, side) = self.dataset.image_shape();
        for layer in 0..self.hidden_layers() {
            let width = self.hidden_width(layer);
            ensure!(
                width.is_multiple_of(g),
                "norm.groups {g} does not divide the {width} {} of hidden layer {layer}: Group \
                 Norm splits each layer's {} into norm.groups equal groups",
                self.unit_word(),
                self.unit_word()
            );
            let per_group = width / g;
            let positions = match self.model.arch {
                Arch::Mlp => 1,
                Arch::Cnn => (side >> layer).pow(2),
            };
            ensure!(
                per_group * positions >= 2,
                "norm.groups {g} leaves one value per group in hidden layer {layer} ({width} \
                 units): each example's group would normalise to a constant; use at most {} \
                 groups",
                width / 2
            );
        }
        Ok(())
    }

    fn unit_word(&self) -> &'static str {
        match self.model.arch {
            Arch::Mlp => "units",
            Arch::Cnn => "channels",
        }
    }

    /// Every size the config sets is bounded, and the whole net's memory is estimated, so that
    /// no value can make bn-exp allocate without end, loop for ever or overflow.
    fn check_sizes(&self) -> Result<()> {
        let bounded = [
            ("batch_size", self.batch_size as u64, MAX_BATCH),
            ("eval_batch_size", self.eval_batch_size as u64, MAX_BATCH),
            ("probe.batch_size", self.probe.batch_size as u64, MAX_BATCH),
            ("probe.bins", self.probe.bins as u64, MAX_BINS),
            (
                "norm.population_batches",
                self.norm.population_batches as u64,
                MAX_POPULATION_BATCHES,
            ),
            ("steps", self.steps, MAX_STEPS),
            (
                "model.hidden (layers)",
                self.model.hidden.len() as u64,
                MAX_LAYERS,
            ),
            (
                "model.channels (blocks)",
                self.model.channels.len() as u64,
                MAX_LAYERS,
            ),
        ];
        for (key, value, max) in bounded {
            ensure!(
                value <= max,
                "{key} is {value}, more than the {max} bn-exp allows"
            );
        }
        for (key, widths) in [
            ("model.hidden", &self.model.hidden),
            ("model.channels", &self.model.channels),
        ] {
            if let Some(w) = widths.iter().find(|&&w| w as u64 > MAX_WIDTH) {
                bail!("{key} holds a width of {w}, more than the {MAX_WIDTH} bn-exp allows");
            }
        }
        let bytes = self.estimated_memory_bytes();
        ensure!(
            bytes <= MAX_MEMORY_BYTES,
            "this net needs about {:.1} GiB (model.{} = {:?}, batch_size {}), more than the {} GiB \
             bn-exp allows; make the layers or the batch smaller",
            bytes as f64 / GIB,
            match self.model.arch {
                Arch::Mlp => "hidden",
                Arch::Cnn => "channels",
            },
            match self.model.arch {
                Arch::Mlp => &self.model.hidden,
                Arch::Cnn => &self.model.channels,
            },
            self.batch_size,
            MAX_MEMORY_BYTES as f64 / GIB
        );
        Ok(())
    }

    /// The batch against the training set it is drawn from: what train, and a study before
    /// anything trains, refuse.
    pub fn check_training_set(&self, train_len: usize) -> Result<()> {
        ensure!(
            self.batch_size <= train_len,
            "batch_size {} exceeds the {train_len} training images of {}",
            self.batch_size,
            self.dataset
        );
        Ok(())
    }

    /// A rough upper estimate of the memory a run needs, in bytes: every parameter four times
    /// (weights, gradients, momentum, a copy in flight) and, per example of the larger of the
    /// training and evaluation batches, every activation eight times (forward values, saved
    /// state, gradients and temporaries), all float32. Computed in saturating u64 arithmetic.
    pub fn estimated_memory_bytes(&self) -> u64 {
        let (channels, side) = self.dataset.image_shape();
        let (c, s) = (channels as u64, side as u64);
        let mut params: u64 = 0;
        let mut activations: u64 = c.saturating_mul(s * s);
        match self.model.arch {
            Arch::Mlp => {
                let mut fan_in = c * s * s;
                for &w in &self.model.hidden {
                    let w = w as u64;
                    params = params.saturating_add(fan_in.saturating_mul(w));
                    activations = activations.saturating_add(w);
                    fan_in = w;
                }
                params = params.saturating_add(fan_in.saturating_mul(10));
            }
            Arch::Cnn => {
                let (mut ch, mut side) = (c, s);
                for &w in &self.model.channels {
                    let w = w as u64;
                    params = params.saturating_add(ch.saturating_mul(w).saturating_mul(9));
                    activations = activations.saturating_add(w.saturating_mul(side * side));
                    ch = w;
                    side = (side / 2).max(1);
                }
                params = params.saturating_add(ch.saturating_mul(side * side).saturating_mul(10));
            }
        }
        let batch = self
            .batch_size
            .max(self.eval_batch_size)
            .max(self.probe.batch_size) as u64;
        params
            .saturating_mul(4 * 4)
            .saturating_add(activations.saturating_mul(batch).saturating_mul(4 * 8))
    }
}

/// Limits on what a config may ask for. Far beyond anything the paper's experiments need,
/// and low enough that no value makes bn-exp allocate without end or loop for ever.
const MAX_BATCH: u64 = 100_000;
const MAX_BINS: u64 = 100_000;
const MAX_POPULATION_BATCHES: u64 = 100_000;
const MAX_STEPS: u64 = 100_000_000;
const MAX_LAYERS: u64 = 64;
const MAX_WIDTH: u64 = 1 << 16;
const GIB: f64 = (1u64 << 30) as f64;
/// The estimated memory a run may need (see [`Config::estimated_memory_bytes`]).
const MAX_MEMORY_BYTES: u64 = 16 << 30;

/// A run or study name: one plain folder name, so that a run can never be written into its
/// study folder, a parent or an absolute path. Letters, digits and `_ - . +`, not starting
/// with a dot, at most 200 characters.
pub fn check_folder_name(name: &str) -> Result<()> {
    ensure!(!name.is_empty(), "the name is empty");
    ensure!(
        !name.starts_with('.'),
        "{name:?} cannot start with a dot (\".\" and \"..\" are not folders of their own)"
    );
    ensure!(
        name.len() <= 200,
        "{name:?} is {} characters long, more than 200",
        name.len()
    );
    ensure!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')),
        "{name:?} may only hold letters, digits and `_ - . +` (it names one folder)"
    );
    Ok(())
}

/// Read a config file as raw JSON (overrides are applied before typed parsing).
pub fn read_config_value(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let value = parse_json_strict(&text)
        .with_context(|| format!("config file {} is not valid JSON", path.display()))?;
    ensure!(
        value.is_object(),
        "config file {} must hold a JSON object",
        path.display()
    );
    Ok(value)
}

/// Parse JSON as configs and studies must be written: no byte-order mark, and no key given
/// twice in one object (serde_json would keep the last one silently). Errors say where.
pub fn parse_json_strict(text: &str) -> Result<Value> {
    ensure!(
        !text.starts_with('\u{feff}'),
        "it starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without a BOM"
    );
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value =
        serde_path_to_error::deserialize::<_, StrictValue>(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match path.as_str() {
                "." => anyhow::anyhow!("{inner}"),
                _ => anyhow::anyhow!("{path}: {inner}"),
            }
        })?;
    deserializer.end()?;
    Ok(value.0)
}

/// A JSON value read with duplicate keys refused.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} is given twice in one object; keep one"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Apply one `key.path=value` override. The value is parsed as JSON (numbers, booleans, arrays,
/// quoted strings), falling back to a plain string, so `--set norm.kind=none` works unquoted.
pub fn apply_override(config: &mut Value, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("override {assignment:?} is not of the form key.path=value");
    };
    let key = key.trim();
    let value = match serde_json::from_str(raw) {
        Ok(value) => value,
        // 1e309, NaN, inf: numbers JSON cannot hold. Taking them as strings would only fail
        // later with a message about strings.
        Err(_) if raw.trim().parse::<f64>().is_ok() => {
            bail!("{key}: {raw} is not a finite number, and a config can only hold finite numbers")
        }
        Err(_) => Value::String(raw.to_string()),
    };
    set_path(config, key, value)
}

/// Set `key.path` inside a JSON object, creating intermediate objects as needed.
pub fn set_path(config: &mut Value, key: &str, value: Value) -> Result<()> {
    ensure!(!key.is_empty(), "empty key in override");
    let mut node = config;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        ensure!(!part.is_empty(), "key {key:?} has an empty segment");
        let Value::Object(map) = node else {
            bail!(
                "cannot set {key:?}: {:?} is not an object",
                parts[..i].join(".")
            );
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return Ok(());
        }
        node = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    unreachable!("the loop returns at the last segment")
}

/// Resolve the `bn` key of configs written before normalisation had its own seam into `norm`:
/// `bn.placement: "none"` becomes `norm.kind: "none"`, `"before"`/`"after"` become
/// `norm.kind: "batch"` with that placement, and every other `bn.*` key moves to `norm.*`
/// unchanged. A config may have both keys as long as they agree; a setting given different
/// values under both names is an error that names both.
pub fn resolve_legacy_bn(value: &mut Value) -> Result<()> {
    let Some(map) = value.as_object_mut() else {
        return Ok(());
    };
    let Some(bn) = map.remove("bn") else {
        return Ok(());
    };
    let Value::Object(mut bn) = bn else {
        bail!("bn must be an object (it is read as norm), got {bn}");
    };
    if let Some(placement) = bn.remove("placement") {
        match placement.as_str() {
            Some("none") => {
                bn.insert("kind".into(), "none".into());
            }
            Some("before" | "after") => {
                bn.insert("kind".into(), "batch".into());
                bn.insert("placement".into(), placement);
            }
            _ => bail!(
                "bn.placement must be \"none\", \"before\" or \"after\", got {placement} (it \
                 is read as norm.kind and norm.placement)"
            ),
        }
    }
    let norm = map
        .entry("norm")
        .or_insert_with(|| Value::Object(Default::default()));
    let Value::Object(norm) = norm else {
        bail!("norm must be an object, got {norm}");
    };
    for (key, value) in bn {
        match norm.get(&key) {
            Some(existing) if *existing != value => bail!(
                "norm.{key} is set twice: to {existing} as norm.{key}, and to {value} through \
                 bn (the older name of norm); keep one of them"
            ),
            _ => {
                norm.insert(key, value);
            }
        }
    }
    Ok(())
}

/// The config's spelling of a normalisation kind (`"renorm"`), for messages.
pub fn kind_name(kind: NormKind) -> &'static str {
    match kind {
        NormKind::None => "none",
        NormKind::Batch => "batch",
        NormKind::Renorm => "renorm",
        NormKind::Layer => "layer",
        NormKind::Group => "group",
        NormKind::Weight => "weight",
    }
}

/// Parse and validate a raw JSON config (the `bn` key of earlier configs resolved into `norm`).
pub fn config_from_value(mut value: Value) -> Result<Config> {
    resolve_legacy_bn(&mut value).context("invalid config")?;
    let config: Config = serde_path_to_error::deserialize(value)
        .map_err(|err| anyhow::anyhow!("{}", describe_type_error(&err)))
        .context("invalid config")?;
    config.validate().context("invalid config")?;
    Ok(config)
}

/// `optim.lr: expected a number, got the string "abc"` from serde's `invalid type: string "abc",
/// expected f64` at path `optim.lr`: the key, what it got, and what it expects.
fn describe_type_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let inner = err.inner().to_string();
    let message = match inner
        .strip_prefix("invalid type: ")
        .or_else(|| inner.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    {
        Some((got, expected)) => {
            format!("expected {}, got {}", in_words(expected), with_article(got))
        }
        None => inner.clone(),
    };
    match path.as_str() {
        "." | "" => message,
        _ => format!("{path}: {message}"),
    }
}

/// Rust's names for what a key takes, as a config's author reads them.
fn in_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" => "a whole number, 0 or more".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        other => other.to_string(),
    }
}

/// `string "abc"` → `the string "abc"`; `integer `5`` → `the integer 5`.
fn with_article(got: &str) -> String {
    format!("the {}", got.replace('`', ""))
}

/// Read a config file, apply `--set` overrides, parse and validate.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<Config> {
    let mut value = read_config_value(path)?;
    for assignment in overrides {
        apply_override(&mut value, assignment).with_context(|| format!("in --set {assignment}"))?;
    }
    config_from_value(value).with_context(|| format!("in config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        config_from_value(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn empty_object_gives_the_paper_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.model.hidden, vec![100, 100, 100]);
        assert_eq!(c.model.activation, Activation::Sigmoid);
        assert_eq!(c.batch_size, 60);
        assert_eq!(c.steps, 50_000);
        assert_eq!(c.norm.kind, NormKind::Batch);
        assert_eq!(c.norm.placement, Placement::Before);
        assert_eq!(c.probe_layer(), 2);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse(r#"{"optim": {"learning_rate": 0.1}}"#).unwrap_err();
        assert!(format!("{err:#}").contains("learning_rate"), "{err:#}");
    }

    #[test]
    fn overrides_parse_json_and_fall_back_to_strings() {
        let mut v = serde_json::json!({});
        apply_override(&mut v, "optim.lr=0.5").unwrap();
        apply_override(&mut v, "bn.placement=none").unwrap();
        apply_override(&mut v, "model.hidden=[50,50]").unwrap();
        let c = config_from_value(v).unwrap();
        assert_eq!(c.optim.lr, 0.5);
        assert_eq!(c.norm.kind, NormKind::None);
        assert_eq!(c.model.hidden, vec![50, 50]);
        assert!(apply_override(&mut serde_json::json!({}), "no-equals").is_err());
    }

    #[test]
    fn each_bad_value_gets_its_own_message() {
        let cases = [
            (r#"{"optim": {"lr": -1}}"#, "optim.lr"),
            (r#"{"batch_size": 0}"#, "batch_size must be at least 1"),
            (r#"{"batch_size": 1}"#, "no variance"),
            (r#"{"model": {"activation": "swish"}}"#, "swish"),
            (r#"{"norm": {"momentum": 2}}"#, "norm.momentum"),
            (r#"{"bn": {"momentum": 2}}"#, "norm.momentum"),
            (r#"{"norm": {"kind": "instance"}}"#, "instance"),
            (
                r#"{"norm": {"kind": "group", "groups": 3}}"#,
                "norm.groups 3 does not divide the 100 units",
            ),
            (
                r#"{"norm": {"kind": "group", "groups": 100}}"#,
                "one value per group",
            ),
            (
                r#"{"norm": {"stats_batch": 7}}"#,
                "norm.stats_batch 7 does not divide batch_size 60",
            ),
            (r#"{"norm": {"stats_batch": 1}}"#, "at least 2 examples"),
            (
                r#"{"norm": {"kind": "layer", "stats_batch": 4}}"#,
                "norm.stats_batch applies to BN and Batch Renorm",
            ),
            (
                r#"{"norm": {"renorm": {"r_max": -1}}}"#,
                "norm.renorm.r_max",
            ),
            (
                r#"{"norm": {"renorm": {"d_max": -0.5}}}"#,
                "norm.renorm.d_max",
            ),
            (
                r#"{"norm": {"renorm": {"warmup": 0.6, "d_max_at": 0.5}}}"#,
                "norm.renorm.d_max_at",
            ),
            (r#"{"bn": {"placement": "middle"}}"#, "bn.placement"),
            (r#"{"probe": {"unit": 100}}"#, "probe.unit"),
            (r#"{"model": {"dropout": 1.0}}"#, "model.dropout"),
            (r#"{"thresholds": [97]}"#, "thresholds"),
        ];
        for (json, needle) in cases {
            let err = format!("{:#}", parse(json).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
        // batch size 1 is fine without BN, and with per-example normalisation.
        parse(r#"{"batch_size": 1, "norm": {"kind": "none"}}"#).unwrap();
        parse(r#"{"batch_size": 1, "norm": {"kind": "layer"}}"#).unwrap();
        // G = C is Instance Norm in a conv layer: legal, since each channel has H·W values.
        parse(r#"{"dataset": "cifar10", "model": {"arch": "cnn", "channels": [32, 64]}, "norm": {"kind": "group", "groups": 32}}"#).unwrap();
    }

    #[test]
    fn the_legacy_bn_key_resolves_into_norm() {
        let old = parse(r#"{"bn": {"placement": "after", "eps": 0.001}}"#).unwrap();
        assert_eq!(
            (old.norm.kind, old.norm.placement, old.norm.eps),
            (NormKind::Batch, Placement::After, 0.001)
        );
        let none = parse(r#"{"bn": {"placement": "none", "momentum": 0.2}}"#).unwrap();
        assert_eq!((none.norm.kind, none.norm.momentum), (NormKind::None, 0.2));
        // Both names may be used while they agree; a disagreement names both keys.
        let both = parse(r#"{"norm": {"eps": 0.01}, "bn": {"placement": "none"}}"#).unwrap();
        assert_eq!((both.norm.kind, both.norm.eps), (NormKind::None, 0.01));
        let err = parse(r#"{"norm": {"kind": "batch"}, "bn": {"placement": "none"}}"#).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("norm.kind is set twice") && err.contains("bn"),
            "{err}"
        );
        // The resolved config is written in the new form only.
        let written = serde_json::to_value(&old).unwrap();
        assert!(written.get("bn").is_none() && written["norm"]["kind"] == "batch");
    }

    #[test]
    fn run_and_study_names_are_single_plain_folder_names() {
        for bad in [".", "..", "", "a/b", "/abs", "..\\x", ".hidden", "a b"] {
            let json = serde_json::json!({ "name": bad }).to_string();
            let err = format!("{:#}", parse(&json).unwrap_err());
            assert!(err.contains("name"), "{bad:?}: {err}");
            let json = serde_json::json!({ "study": bad }).to_string();
            let err = format!("{:#}", parse(&json).unwrap_err());
            assert!(err.contains("study"), "{bad:?}: {err}");
        }
        parse(r#"{"name": "kind-none_seed-0", "study": "paper_fig1"}"#).unwrap();
    }

    #[test]
    fn every_size_is_bounded_and_shifts_cannot_wrap() {
        let cases = [
            (
                r#"{"model": {"hidden": [100000000]}}"#,
                "model.hidden holds a width of 100000000",
            ),
            (
                r#"{"probe": {"bins": 10000000000}}"#,
                "probe.bins is 10000000000",
            ),
            (
                r#"{"norm": {"population_batches": 9007199254740992}}"#,
                "norm.population_batches is 9007199254740992",
            ),
            (r#"{"batch_size": 1000000}"#, "batch_size is 1000000"),
            (r#"{"model": {"hidden": [60000, 60000]}}"#, "GiB"),
            (
                r#"{"dataset": "cifar10", "model": {"arch": "cnn", "channels": [4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4]}}"#,
                "blocks",
            ),
            (
                r#"{"dataset": "cifar10", "model": {"arch": "cnn", "channels": [4,4,4,4,4,4]}}"#,
                "each halves the 32x32 image",
            ),
        ];
        for (json, needle) in cases {
            let err = format!("{:#}", parse(json).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn type_errors_name_the_key_the_value_and_what_was_expected() {
        let cases = [
            (
                r#"{"seed": "abc"}"#,
                r#"seed: expected a whole number, 0 or more, got the string "abc""#,
            ),
            (
                r#"{"optim": {"lr": "fast"}}"#,
                r#"optim.lr: expected a number, got the string "fast""#,
            ),
            (
                r#"{"model": {"hidden": [100, "x"]}}"#,
                "model.hidden[1]: expected a whole number",
            ),
            (
                r#"{"probe": {"bins": 1e10}}"#,
                "probe.bins: expected a whole number, 0 or more, got the floating point",
            ),
            (
                r#"{"batch_size": -5}"#,
                "batch_size: expected a whole number, 0 or more, got the integer -5",
            ),
            (
                r#"{"model": {"hidden": 100}}"#,
                "model.hidden: expected a list, got the integer 100",
            ),
        ];
        for (json, needle) in cases {
            let err = format!("{:#}", parse(json).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
        for raw in ["1e309", "NaN", "inf", "-Infinity"] {
            let mut v = serde_json::json!({});
            let err = format!(
                "{:#}",
                apply_override(&mut v, &format!("optim.lr={raw}")).unwrap_err()
            );
            assert!(
                err.contains("optim.lr") && err.contains(raw),
                "{raw}: {err}"
            );
            assert!(err.contains("not a finite number"), "{raw}: {err}");
        }
    }

    #[test]
    fn duplicate_keys_and_a_byte_order_mark_are_named() {
        let err = format!(
            "{:#}",
            parse_json_strict(r#"{"steps": 20, "steps": 30}"#).unwrap_err()
        );
        assert!(err.contains("\"steps\" is given twice"), "{err}");
        let err = format!(
            "{:#}",
            parse_json_strict(r#"{"optim": {"lr": 1, "lr": 2}}"#).unwrap_err()
        );
        assert!(
            err.contains("optim") && err.contains("\"lr\" is given twice"),
            "{err}"
        );
        let err = format!("{:#}", parse_json_strict("\u{feff}{}").unwrap_err());
        assert!(err.contains("byte-order mark"), "{err}");
        assert_eq!(
            parse_json_strict(r#"{"a": [1, {"b": null}]}"#).unwrap()["a"][1]["b"],
            Value::Null
        );
    }

    #[test]
    fn noise_and_measures_settings_are_checked_and_name_their_key() {
        let cases = [
            (
                r#"{"norm": {"noise_params": {"scale_max": 0.5}}}"#,
                "norm.noise_params.scale_max (0.5) must be finite and at least",
            ),
            (
                r#"{"norm": {"noise_params": {"mean_range": -1}}}"#,
                "norm.noise_params.mean_range must be a finite number of at least 0",
            ),
            (
                r#"{"norm": {"noise_params": {"scale_std": -0.1}}}"#,
                "norm.noise_params.scale_std",
            ),
            (
                r#"{"measures": {"every": 100, "lr_multiples": []}}"#,
                "measures.lr_multiples is empty",
            ),
            (
                r#"{"measures": {"every": 100, "lr_multiples": [1, 0]}}"#,
                "measures.lr_multiples must hold positive finite multiples",
            ),
            (r#"{"measures": {"evry": 100}}"#, "evry"),
        ];
        for (json, needle) in cases {
            let err = format!("{:#}", parse(json).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
        let on = parse(r#"{"norm": {"kind": "none", "noise": true}, "measures": {"every": 50}}"#)
            .unwrap();
        assert!(on.norm.noise && on.measures.every == 50);
        // The default grid: 7 points a factor √2 apart, from 0.5 to 4 times the learning rate.
        let grid = &on.measures.lr_multiples;
        assert_eq!(grid.len(), 7);
        assert!((grid[0] - 0.5).abs() < 1e-12 && (grid[6] - 4.0).abs() < 1e-12);
        assert!(
            grid.windows(2)
                .all(|w| (w[1] / w[0] - 2f64.sqrt()).abs() < 1e-12)
        );
        // Off by default, and then an empty grid is no error.
        parse(r#"{"measures": {"lr_multiples": []}}"#).unwrap();
    }

    #[test]
    fn the_renorm_schedule_gives_the_papers_numbers_on_a_50k_run() {
        let r = RenormConfig::default();
        let at = |step| r.limits_at(step, 50_000);
        assert_eq!(at(0), (1.0, 0.0));
        assert_eq!(at(5_000), (1.0, 0.0));
        assert_eq!(at(25_000).1, 5.0);
        assert_eq!(at(40_000).0, 3.0);
        assert_eq!(at(50_000), (3.0, 5.0));
        // Halfway through d's ramp (5k → 25k) d_max is half of 5; r at 15k is 1 + 2·(10/35).
        let (r_mid, d_mid) = at(15_000);
        assert!((d_mid - 2.5).abs() < 1e-12, "{d_mid}");
        assert!((r_mid - (1.0 + 2.0 * 10.0 / 35.0)).abs() < 1e-12, "{r_mid}");
    }

    #[test]
    fn schedules_decay_as_documented() {
        let mut o = OptimConfig {
            lr: 1.0,
            gamma: 0.5,
            step_every: 10,
            ..Default::default()
        };
        assert_eq!(o.lr_at(25), 1.0);
        o.schedule = Schedule::Step;
        assert_eq!(o.lr_at(9), 1.0);
        assert_eq!(o.lr_at(25), 0.25);
        o.schedule = Schedule::Exponential;
        assert!((o.lr_at(5) - 0.5f64.sqrt()).abs() < 1e-12);
    }
}
