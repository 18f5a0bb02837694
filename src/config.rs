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

mod json;

pub use crate::backend::DeviceKind;
pub use crate::data::{AugmentConfig, Dataset, Preprocess};
use crate::model::{ImageShape, ModelConfig, Net, NetRecipe};
use crate::norm::{LayerShape, NormConfig};
use json::describe_type_error;
pub use json::{apply_override, parse_json_strict, resolve_legacy_bn, set_path};

/// One training run, fully described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run name: the folder under `results/<study>/`.
    pub name: String,
    /// Study the run belongs to: the folder under `results/`.
    pub study: String,
    /// A name for the run's condition that people read ("BN-x5"), which `compare`, `plot` and
    /// TensorBoard show instead of the label made from the settings that differ. It changes
    /// nothing in training; unset, it is not written to a run's `config.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Seeds weight init, data order, dropout masks and the probe batch.
    pub seed: u64,
    pub dataset: Dataset,
    pub preprocess: Preprocess,
    /// The architecture and what every net shares (`crate::model`).
    pub model: ModelConfig,
    /// The normalisation layer and where it sits (`crate::norm`). The key `bn` of earlier
    /// configs is still read, and resolved into this one ([`resolve_legacy_bn`]).
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
    /// Random crops and flips of the training images (`crate::data::AugmentConfig`); off by
    /// default, and then not written to a run's `config.json`, which keeps the shape it had.
    #[serde(skip_serializing_if = "AugmentConfig::is_off")]
    pub augment: AugmentConfig,
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
            label: None,
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
            augment: AugmentConfig::default(),
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
    /// The images the net takes.
    pub fn image(&self) -> ImageShape {
        self.dataset.image_shape().into()
    }

    /// Each hidden layer's width and positions, input to output: the layers whose
    /// pre-activations are probed and which have a normalisation slot.
    pub fn layers(&self) -> Vec<LayerShape> {
        self.model.arch.geometry().layers(self.image())
    }

    /// The probed layer, with `null` resolved to the last hidden layer.
    pub fn probe_layer(&self) -> usize {
        self.probe
            .layer
            .unwrap_or_else(|| self.layers().len().saturating_sub(1))
    }

    /// The net this config trains, with its initial weights, on `device`.
    pub fn build_net(&self, device: &burn::tensor::Device) -> Net {
        let recipe = NetRecipe {
            model: &self.model,
            norm: &self.norm,
            image: self.image(),
            seed: self.seed,
            steps: self.steps,
        };
        Net::new(recipe, device)
    }

    /// Check every constraint that serde's types cannot express. Each failure names the key.
    pub fn validate(&self) -> Result<()> {
        self.check_optim()?;
        ensure!(self.batch_size > 0, "batch_size must be at least 1, got 0");
        ensure!(self.steps > 0, "steps must be at least 1");
        ensure!(self.eval_every > 0, "eval_every must be at least 1");
        ensure!(
            self.eval_batch_size > 0,
            "eval_batch_size must be at least 1"
        );
        let m = &self.model;
        check_positive("model.init_std", m.init_std)?;
        check_fraction("model.dropout", m.dropout)?;
        let arch = m.arch.geometry();
        arch.check(self.image())?;
        self.augment.check(self.image().side)?;
        let layers = self.layers();
        self.norm
            .check(&layers, arch.unit_word(), self.batch_size)?;
        self.check_measures()?;
        self.check_probe(&layers)?;
        for &t in &self.thresholds {
            ensure!(
                t.is_finite() && t > 0.0 && t <= 1.0,
                "thresholds are fractions in (0, 1], got {t}"
            );
        }
        check_folder_name(&self.name).context("name")?;
        check_folder_name(&self.study).context("study")?;
        if let Some(label) = &self.label {
            check_label(label)?;
        }
        self.check_sizes()
    }

    fn check_optim(&self) -> Result<()> {
        let o = &self.optim;
        check_positive("optim.lr", o.lr)?;
        check_fraction("optim.momentum", o.momentum)?;
        ensure!(
            o.weight_decay.is_finite() && o.weight_decay >= 0.0,
            "optim.weight_decay must be a non-negative finite number, got {}",
            o.weight_decay
        );
        check_positive("optim.gamma", o.gamma)?;
        ensure!(o.step_every > 0, "optim.step_every must be at least 1");
        Ok(())
    }

    /// The probe batch, its histogram, and the tracked unit against the net's layers.
    fn check_probe(&self, layers: &[LayerShape]) -> Result<()> {
        let p = &self.probe;
        ensure!(p.batch_size >= 2, "probe.batch_size must be at least 2");
        ensure!(p.bins > 0, "probe.bins must be at least 1");
        ensure!(
            p.lo.is_finite() && p.hi.is_finite() && p.lo < p.hi,
            "probe.lo must be below probe.hi"
        );
        let layer = self.probe_layer();
        let Some(shape) = layers.get(layer) else {
            bail!(
                "probe.layer {layer} does not exist: the net has {} hidden layers",
                layers.len()
            );
        };
        ensure!(
            p.unit < shape.width,
            "probe.unit {} does not exist: hidden layer {layer} has {} {}",
            p.unit,
            shape.width,
            self.model.arch.geometry().unit_word()
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

    /// Every size the config sets is bounded, and the whole net's memory is estimated, so that
    /// no value can make bn-exp allocate without end, loop for ever or overflow.
    fn check_sizes(&self) -> Result<()> {
        let bounded = [
            ("batch_size", self.batch_size as u64, MAX_BATCH),
            ("eval_batch_size", self.eval_batch_size as u64, MAX_BATCH),
            ("probe.batch_size", self.probe.batch_size as u64, MAX_BATCH),
            ("probe.bins", self.probe.bins as u64, MAX_BINS),
            ("steps", self.steps, MAX_STEPS),
        ];
        for (key, value, max) in bounded {
            ensure!(
                value <= max,
                "{key} is {value}, more than the {max} bn-exp allows"
            );
        }
        let bytes = self.estimated_memory_bytes();
        ensure!(
            bytes <= MAX_MEMORY_BYTES,
            "this net needs about {:.1} GiB (model.arch = \"{}\", widths {:?}, batch_size {}), more \
             than the {} GiB bn-exp allows; make the layers or the batch smaller",
            bytes as f64 / GIB,
            self.model.arch.arch().name(),
            self.layers().iter().map(|l| l.width).collect::<Vec<_>>(),
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
        let size = self.model.arch.geometry().size(self.image());
        let batch = self
            .batch_size
            .max(self.eval_batch_size)
            .max(self.probe.batch_size) as u64;
        size.params
            .saturating_mul(4 * 4)
            .saturating_add(size.activations.saturating_mul(batch).saturating_mul(4 * 8))
    }
}

/// Limits on what a config may ask for. Far beyond anything the paper's experiments need,
/// and low enough that no value makes bn-exp allocate without end or loop for ever.
const MAX_BATCH: u64 = 100_000;
const MAX_BINS: u64 = 100_000;
const MAX_STEPS: u64 = 100_000_000;
const GIB: f64 = (1u64 << 30) as f64;
/// The estimated memory a run may need (see [`Config::estimated_memory_bytes`]).
const MAX_MEMORY_BYTES: u64 = 16 << 30;

/// The setting `key` must be a positive finite number.
fn check_positive(key: &str, value: f64) -> Result<()> {
    ensure!(
        value.is_finite() && value > 0.0,
        "{key} must be a positive finite number, got {value}"
    );
    Ok(())
}

/// The setting `key` must be a fraction in [0, 1) (a dropout rate, a momentum).
fn check_fraction(key: &str, value: f64) -> Result<()> {
    ensure!(
        value.is_finite() && (0.0..1.0).contains(&value),
        "{key} must be in [0, 1), got {value}"
    );
    Ok(())
}

/// A condition's readable name: one short line that a table cell, a legend and a terminal show
/// as it is.
fn check_label(label: &str) -> Result<()> {
    let length = label.chars().count();
    ensure!(
        (1..=80).contains(&length) && label.trim() == label,
        "label must be 1 to 80 characters without leading or trailing spaces, got {label:?}"
    );
    ensure!(
        !label.chars().any(char::is_control),
        "label {label:?} may not hold control characters"
    );
    Ok(())
}

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

/// Parse and validate a raw JSON config (the `bn` key of earlier configs resolved into `norm`).
pub fn config_from_value(mut value: Value) -> Result<Config> {
    resolve_legacy_bn(&mut value).context("invalid config")?;
    let config: Config = serde_path_to_error::deserialize(value)
        .map_err(|err| anyhow::anyhow!("{}", describe_type_error(&err)))
        .context("invalid config")?;
    config.validate().context("invalid config")?;
    Ok(config)
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

    use crate::model::Activation;
    use crate::norm::{NormKind, Placement};

    #[test]
    fn empty_object_gives_the_paper_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(
            c.layers().iter().map(|l| l.width).collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
        assert_eq!(c.model.activation, Activation::Sigmoid);
        assert_eq!(c.batch_size, 60);
        assert_eq!(c.steps, 50_000);
        assert_eq!(c.norm.kind(), NormKind::Batch);
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
        assert_eq!(c.norm.kind(), NormKind::None);
        assert_eq!(c.layers().len(), 2);
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
                "norm.stats_batch is set, but it belongs to BN",
            ),
            (
                r#"{"norm": {"kind": "renorm", "renorm": {"r_max": -1}}}"#,
                "norm.renorm.r_max",
            ),
            (
                r#"{"norm": {"kind": "renorm", "renorm": {"d_max": -0.5}}}"#,
                "norm.renorm.d_max",
            ),
            (
                r#"{"norm": {"kind": "renorm", "renorm": {"warmup": 0.6, "d_max_at": 0.5}}}"#,
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
            (old.norm.kind(), old.norm.placement, old.norm.eps),
            (NormKind::Batch, Placement::After, 0.001)
        );
        let none = parse(r#"{"bn": {"placement": "none", "momentum": 0.2}}"#).unwrap();
        assert_eq!(
            (none.norm.kind(), none.norm.momentum),
            (NormKind::None, 0.2)
        );
        // Both names may be used while they agree; a disagreement names both keys.
        let both = parse(r#"{"norm": {"eps": 0.01}, "bn": {"placement": "none"}}"#).unwrap();
        assert_eq!((both.norm.kind(), both.norm.eps), (NormKind::None, 0.01));
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
