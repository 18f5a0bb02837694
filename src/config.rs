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
    pub bn: BnConfig,
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
    /// Accuracy thresholds (fractions) for `steps_to` in the summary.
    pub thresholds: Vec<f64>,
    /// Save a resumable checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
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

/// Where BN sits relative to the nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// No normalisation; linear and conv layers keep their bias.
    None,
    /// g(BN(Wu)), as in the paper; the layer before BN has no bias (β subsumes it).
    Before,
    /// BN(g(Wu + b)).
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
pub struct BnConfig {
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
            bn: BnConfig::default(),
            optim: OptimConfig::default(),
            batch_size: 60,
            steps: 50_000,
            eval_every: 500,
            eval_batch_size: 1000,
            probe: ProbeConfig::default(),
            thresholds: vec![0.90, 0.95, 0.97, 0.98],
            checkpoint_every: 5000,
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

impl Default for BnConfig {
    fn default() -> Self {
        Self {
            placement: Placement::Before,
            eps: 1e-5,
            momentum: 0.1,
            inference: InferenceStats::Moving,
            population_batches: 100,
            population_pass: true,
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

    /// True when the net has BN layers.
    pub fn has_bn(&self) -> bool {
        self.bn.placement != Placement::None
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
            !(self.has_bn() && self.batch_size < 2),
            "batch_size 1 with BN (bn.placement = {:?}): a batch of one value per feature has no \
             variance, so BN's training statistics are undefined; use batch_size >= 2 or \
             bn.placement = \"none\"",
            self.bn.placement
        );
        ensure!(self.steps > 0, "steps must be at least 1");
        ensure!(self.eval_every > 0, "eval_every must be at least 1");
        ensure!(
            self.eval_batch_size > 0,
            "eval_batch_size must be at least 1"
        );
        let bn = &self.bn;
        ensure!(
            bn.eps.is_finite() && bn.eps > 0.0,
            "bn.eps must be a positive finite number, got {}",
            bn.eps
        );
        ensure!(
            bn.momentum.is_finite() && (0.0..=1.0).contains(&bn.momentum),
            "bn.momentum must be in [0, 1], got {}",
            bn.momentum
        );
        ensure!(
            bn.population_batches > 0,
            "bn.population_batches must be at least 1"
        );
        ensure!(
            !(bn.inference == InferenceStats::Population && !bn.population_pass && self.has_bn()),
            "bn.inference = \"population\" needs bn.population_pass = true"
        );
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
                let side = match self.dataset {
                    Dataset::Mnist => 28,
                    Dataset::Cifar10 => 32,
                };
                ensure!(
                    side >> m.channels.len() >= 1,
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
        ensure!(
            !self.name.is_empty() && !self.name.contains(['/', '\\']) && self.name != "..",
            "name must be a plain folder name, got {:?}",
            self.name
        );
        ensure!(
            !self.study.is_empty() && !self.study.contains(['/', '\\']) && self.study != "..",
            "study must be a plain folder name, got {:?}",
            self.study
        );
        Ok(())
    }
}

/// Read a config file as raw JSON (overrides are applied before typed parsing).
pub fn read_config_value(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("config file {} is not valid JSON", path.display()))?;
    ensure!(
        value.is_object(),
        "config file {} must hold a JSON object",
        path.display()
    );
    Ok(value)
}

/// Apply one `key.path=value` override. The value is parsed as JSON (numbers, booleans, arrays,
/// quoted strings), falling back to a plain string, so `--set bn.placement=none` works unquoted.
pub fn apply_override(config: &mut Value, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("override {assignment:?} is not of the form key.path=value");
    };
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    set_path(config, key.trim(), value)
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

/// Parse and validate a raw JSON config.
pub fn config_from_value(value: Value) -> Result<Config> {
    let config: Config = serde_json::from_value(value).context("invalid config")?;
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

    #[test]
    fn empty_object_gives_the_paper_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.model.hidden, vec![100, 100, 100]);
        assert_eq!(c.model.activation, Activation::Sigmoid);
        assert_eq!(c.batch_size, 60);
        assert_eq!(c.steps, 50_000);
        assert_eq!(c.bn.placement, Placement::Before);
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
        assert_eq!(c.bn.placement, Placement::None);
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
            (r#"{"bn": {"momentum": 2}}"#, "bn.momentum"),
            (r#"{"probe": {"unit": 100}}"#, "probe.unit"),
            (r#"{"model": {"dropout": 1.0}}"#, "model.dropout"),
            (r#"{"thresholds": [97]}"#, "thresholds"),
        ];
        for (json, needle) in cases {
            let err = format!("{:#}", parse(json).unwrap_err());
            assert!(err.contains(needle), "{json}: {err}");
        }
        // batch size 1 is fine without BN.
        parse(r#"{"batch_size": 1, "bn": {"placement": "none"}}"#).unwrap();
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
