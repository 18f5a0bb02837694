//! The `norm` key of a config: which normalisation layer each hidden layer has, where it sits,
//! and the settings of each layer (docs/config.md).
//!
//! A config file holds one flat object of every layer's keys, so that a study can vary
//! `norm.kind` over one base config. Read, it becomes a [`NormConfig`]: the settings layers
//! share (ε, momentum, placement, the inference statistics, the noise) and a [`LayerConfig`]
//! that holds only the chosen layer's own settings, each defined beside its layer. A key that
//! belongs to another layer (`norm.groups` with BN, say) set to anything but its default is an
//! error that names the key and the layer it belongs to, never a setting silently ignored.
//! Written back, every key is written with its value or default, so a run's `config.json` has
//! one shape whatever the layer.
//!
//! The shared settings are accepted with every kind: a study that varies `norm.kind` over a base
//! config with BN's ε or population pass set must not fail for its run without normalisation.
//! The layers that have no use for one ignore it (docs/config.md says which).

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::batch::{BatchConfig, InferenceStats};
use super::group::GroupConfig;
use super::noise::NoiseConfig;
use super::renorm::{RenormConfig, RenormSchedule};
use super::shape::LayerShape;
use super::weight::WeightConfig;

/// Which normalisation layer each hidden layer has: the `norm.kind` key.
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
    /// Every kind, in the order docs and messages list them.
    pub const ALL: [NormKind; 6] = [
        NormKind::None,
        NormKind::Batch,
        NormKind::Renorm,
        NormKind::Layer,
        NormKind::Group,
        NormKind::Weight,
    ];

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

    /// The config's spelling (`"renorm"`), for messages.
    pub fn name(self) -> &'static str {
        match self {
            NormKind::None => "none",
            NormKind::Batch => "batch",
            NormKind::Renorm => "renorm",
            NormKind::Layer => "layer",
            NormKind::Group => "group",
            NormKind::Weight => "weight",
        }
    }

    /// The kind a config spells `name`, if any.
    pub fn from_name(name: &str) -> Option<NormKind> {
        NormKind::ALL.into_iter().find(|kind| kind.name() == name)
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

/// The chosen layer with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerConfig {
    None,
    Batch(BatchConfig),
    Renorm(RenormConfig),
    Layer,
    Group(GroupConfig),
    Weight(WeightConfig),
}

impl LayerConfig {
    pub fn kind(&self) -> NormKind {
        match self {
            LayerConfig::None => NormKind::None,
            LayerConfig::Batch(_) => NormKind::Batch,
            LayerConfig::Renorm(_) => NormKind::Renorm,
            LayerConfig::Layer => NormKind::Layer,
            LayerConfig::Group(_) => NormKind::Group,
            LayerConfig::Weight(_) => NormKind::Weight,
        }
    }
}

/// Where the statistics a layer uses in inference come from: what a run's summary reports as
/// its final inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferenceSource {
    /// Statistics kept from training: moving averages or the population pass (BN, Batch
    /// Renorm, mean-only BN).
    Kept,
    /// Each example's own (Layer and Group Norm).
    PerExample,
    /// None: no normalisation, or Weight Norm alone.
    None,
}

/// The `norm` key, read. See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "NormKeys", into = "NormKeys")]
pub struct NormConfig {
    pub layer: LayerConfig,
    /// Where the layer sits (ignored when there is none).
    pub placement: Placement,
    /// ε, added to the variance inside the square root (BN, Batch Renorm, Layer and Group Norm).
    pub eps: f64,
    /// running = (1 − momentum)·running + momentum·batch, PyTorch's convention (the layers that
    /// keep moving averages).
    pub momentum: f64,
    /// Statistics for the final evaluation (`summary.final_test_acc`), for layers that keep some.
    pub inference: InferenceStats,
    /// K, the number of training mini-batches of the population pass.
    pub population_batches: usize,
    /// Run the population pass at the end and report its accuracy too.
    pub population_pass: bool,
    /// Santurkar et al.'s noisy BN: after the normalisation layer (or, without one, where it
    /// would sit before g), every training forward pass scales and shifts each value by fresh
    /// random noise, a ← s·a + m, with the distribution of `noise_params`. Training only.
    pub noise: bool,
    /// The distribution of `noise`.
    pub noise_params: NoiseConfig,
}

impl Default for NormConfig {
    fn default() -> Self {
        NormConfig::try_from(NormKeys::default()).expect("the default keys are consistent")
    }
}

impl NormConfig {
    pub fn kind(&self) -> NormKind {
        self.layer.kind()
    }

    /// True when the net has normalisation layers.
    pub fn has_norm(&self) -> bool {
        self.kind() != NormKind::None
    }

    /// Where the normalisation layers sit; `None` when the net has none.
    pub fn placement(&self) -> Option<Placement> {
        self.has_norm().then_some(self.placement)
    }

    /// Whether the layer before each normalisation drops its bias: when the normalisation sits
    /// before g and ends in its own shift β, which subsumes the bias (BN, Batch Renorm, Layer and
    /// Group Norm, mean-only BN). Weight Norm alone keeps the bias b of its layer.
    pub fn subsumes_bias(&self) -> bool {
        self.placement() == Some(Placement::Before)
            && !matches!(
                self.layer,
                LayerConfig::Weight(WeightConfig {
                    mean_only: false,
                    ..
                })
            )
    }

    /// Where the layer's inference statistics come from.
    pub fn inference_source(&self) -> InferenceSource {
        match &self.layer {
            LayerConfig::Batch(_) | LayerConfig::Renorm(_) => InferenceSource::Kept,
            LayerConfig::Weight(w) if w.mean_only => InferenceSource::Kept,
            LayerConfig::Layer | LayerConfig::Group(_) => InferenceSource::PerExample,
            LayerConfig::None | LayerConfig::Weight(_) => InferenceSource::None,
        }
    }

    /// Whether inference uses statistics kept from training (moving averages or the population
    /// pass).
    pub fn keeps_statistics(&self) -> bool {
        self.inference_source() == InferenceSource::Kept
    }

    /// The statistics evaluations during training use: the test batch's own when the config
    /// asks for them, else the moving averages (the population pass only runs at the end).
    pub fn training_eval_stats(&self) -> InferenceStats {
        match self.inference {
            InferenceStats::Batch => InferenceStats::Batch,
            InferenceStats::Moving | InferenceStats::Population => InferenceStats::Moving,
        }
    }

    /// Whether the layers take the paper's data-dependent initialisation from the first
    /// training batch before training (Weight Norm with `norm.data_init`).
    pub fn data_init(&self) -> bool {
        matches!(
            self.layer,
            LayerConfig::Weight(WeightConfig {
                data_init: true,
                ..
            })
        )
    }

    /// The noise distribution, when the net has Santurkar et al.'s noise.
    pub fn noise(&self) -> Option<&NoiseConfig> {
        self.noise.then_some(&self.noise_params)
    }

    /// Check every value against the net it normalises: `layers` gives each hidden layer's
    /// width and positions per channel (1 in an MLP, H·W in a conv map), `unit` what a width
    /// counts ("units", "channels"), `batch_size` the training batch. Each failure names its key.
    pub fn check(&self, layers: &[LayerShape], unit: &str, batch_size: usize) -> Result<()> {
        ensure!(
            self.eps.is_finite() && self.eps > 0.0,
            "norm.eps must be a positive finite number, got {}",
            self.eps
        );
        ensure!(
            self.momentum.is_finite() && (0.0..=1.0).contains(&self.momentum),
            "norm.momentum must be in [0, 1], got {}",
            self.momentum
        );
        ensure!(
            self.population_batches > 0,
            "norm.population_batches must be at least 1"
        );
        ensure!(
            self.population_batches as u64 <= MAX_POPULATION_BATCHES,
            "norm.population_batches is {}, more than the {MAX_POPULATION_BATCHES} bn-exp allows",
            self.population_batches
        );
        ensure!(
            !(self.inference == InferenceStats::Population
                && !self.population_pass
                && self.has_norm()),
            "norm.inference = \"population\" needs norm.population_pass = true"
        );
        ensure!(
            !(self.keeps_statistics() && batch_size < 2),
            "batch_size 1 with {} (norm.kind = \"{}\"): a batch of one value per feature has \
             no variance, so its training statistics are undefined; use batch_size >= 2, or a \
             per-example normalisation such as norm.kind = \"layer\"",
            self.kind().label(),
            self.kind().name()
        );
        self.noise_params.check()?;
        match &self.layer {
            LayerConfig::Batch(bn) => bn.check(batch_size),
            LayerConfig::Renorm(brn) => brn.check(batch_size),
            LayerConfig::Group(gn) => gn.check(layers, unit),
            LayerConfig::None | LayerConfig::Layer | LayerConfig::Weight(_) => Ok(()),
        }
    }

    /// The name people read for this layer with its distinguishing settings: "BN", "Group Norm
    /// (G = 4)", "Weight Norm + mean-only BN".
    pub fn label(&self) -> String {
        match &self.layer {
            LayerConfig::Group(gn) => gn.label(),
            LayerConfig::Weight(wn) => wn.label(),
            other => other.kind().label().to_string(),
        }
    }
}

/// Far beyond what the paper's population pass needs, low enough to never loop for ever.
const MAX_POPULATION_BATCHES: u64 = 100_000;

/// The `norm` key as a config file holds it: every layer's keys, flat, each with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NormKeys {
    kind: NormKind,
    placement: Placement,
    eps: f64,
    momentum: f64,
    inference: InferenceStats,
    population_batches: usize,
    population_pass: bool,
    groups: usize,
    stats_batch: Option<usize>,
    renorm: RenormSchedule,
    mean_only: bool,
    data_init: bool,
    noise: bool,
    noise_params: NoiseConfig,
}

impl Default for NormKeys {
    fn default() -> Self {
        let weight = WeightConfig::default();
        Self {
            kind: NormKind::Batch,
            placement: Placement::Before,
            eps: 1e-5,
            momentum: 0.1,
            inference: InferenceStats::Moving,
            population_batches: 100,
            population_pass: true,
            groups: GroupConfig::default().groups,
            stats_batch: None,
            renorm: RenormSchedule::default(),
            mean_only: weight.mean_only,
            data_init: weight.data_init,
            noise: false,
            noise_params: NoiseConfig::default(),
        }
    }
}

impl TryFrom<NormKeys> for NormConfig {
    type Error = String;

    /// The layer `kind` names, with its own keys; any other layer's key must hold its default.
    fn try_from(keys: NormKeys) -> Result<Self, String> {
        let default = NormKeys::default();
        let kind = keys.kind;
        // (key, whether it is set, the kinds it belongs to)
        // (key, its value if it is not the default, the kinds it belongs to)
        let differs = |differs: bool, value: Value| differs.then_some(value);
        let owned: [(&str, Option<Value>, &[NormKind]); 5] = [
            (
                "norm.groups",
                differs(keys.groups != default.groups, json!(default.groups)),
                &[NormKind::Group],
            ),
            (
                "norm.stats_batch",
                differs(keys.stats_batch.is_some(), Value::Null),
                &[NormKind::Batch, NormKind::Renorm],
            ),
            (
                "norm.renorm",
                differs(keys.renorm != default.renorm, json!(default.renorm)),
                &[NormKind::Renorm],
            ),
            (
                "norm.mean_only",
                differs(
                    keys.mean_only != default.mean_only,
                    json!(default.mean_only),
                ),
                &[NormKind::Weight],
            ),
            (
                "norm.data_init",
                differs(
                    keys.data_init != default.data_init,
                    json!(default.data_init),
                ),
                &[NormKind::Weight],
            ),
        ];
        for (key, default, kinds) in owned {
            if let Some(default) = default
                && !kinds.contains(&kind)
            {
                return Err(foreign_key_message(key, &default, kinds, kind));
            }
        }
        let bn = BatchConfig {
            stats_batch: keys.stats_batch,
        };
        let layer = match kind {
            NormKind::None => LayerConfig::None,
            NormKind::Batch => LayerConfig::Batch(bn),
            NormKind::Renorm => LayerConfig::Renorm(RenormConfig {
                bn,
                schedule: keys.renorm,
            }),
            NormKind::Layer => LayerConfig::Layer,
            NormKind::Group => LayerConfig::Group(GroupConfig {
                groups: keys.groups,
            }),
            NormKind::Weight => LayerConfig::Weight(WeightConfig {
                mean_only: keys.mean_only,
                data_init: keys.data_init,
            }),
        };
        Ok(NormConfig {
            layer,
            placement: keys.placement,
            eps: keys.eps,
            momentum: keys.momentum,
            inference: keys.inference,
            population_batches: keys.population_batches,
            population_pass: keys.population_pass,
            noise: keys.noise,
            noise_params: keys.noise_params,
        })
    }
}

/// `norm.groups is set, but it belongs to Group Norm (norm.kind = "group") and norm.kind is
/// "batch"; …`
fn foreign_key_message(key: &str, default: &Value, kinds: &[NormKind], kind: NormKind) -> String {
    let owners: Vec<String> = kinds
        .iter()
        .map(|k| format!("{} (norm.kind = \"{}\")", k.label(), k.name()))
        .collect();
    format!(
        "{key} is set, but it belongs to {} and norm.kind is \"{}\", which would ignore it; \
         remove {key} (or set it to its default, {default}), or choose a norm.kind it belongs to",
        owners.join(" or "),
        kind.name()
    )
}

impl From<NormConfig> for NormKeys {
    /// Every key, the chosen layer's from its settings and the others' defaults.
    fn from(config: NormConfig) -> Self {
        let mut keys = NormKeys {
            kind: config.kind(),
            placement: config.placement,
            eps: config.eps,
            momentum: config.momentum,
            inference: config.inference,
            population_batches: config.population_batches,
            population_pass: config.population_pass,
            noise: config.noise,
            noise_params: config.noise_params,
            ..NormKeys::default()
        };
        match config.layer {
            LayerConfig::None | LayerConfig::Layer => {}
            LayerConfig::Batch(bn) => keys.stats_batch = bn.stats_batch,
            LayerConfig::Renorm(brn) => {
                keys.stats_batch = brn.bn.stats_batch;
                keys.renorm = brn.schedule;
            }
            LayerConfig::Group(gn) => keys.groups = gn.groups,
            LayerConfig::Weight(wn) => {
                keys.mean_only = wn.mean_only;
                keys.data_init = wn.data_init;
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: serde_json::Value) -> Result<NormConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_key_of_another_layer_is_refused_by_name_and_its_default_is_not() {
        // Each key with a layer that would ignore it (every kind for the keys of one layer).
        let cases = [
            (r#"{"kind": "batch", "groups": 8}"#, "norm.groups"),
            (r#"{"kind": "layer", "groups": 2}"#, "norm.groups"),
            (r#"{"kind": "weight", "groups": 2}"#, "norm.groups"),
            (r#"{"kind": "none", "groups": 2}"#, "norm.groups"),
            (r#"{"kind": "batch", "mean_only": true}"#, "norm.mean_only"),
            (r#"{"kind": "layer", "mean_only": true}"#, "norm.mean_only"),
            (r#"{"kind": "group", "mean_only": true}"#, "norm.mean_only"),
            (r#"{"kind": "none", "mean_only": true}"#, "norm.mean_only"),
            (r#"{"kind": "group", "data_init": false}"#, "norm.data_init"),
            (r#"{"kind": "layer", "stats_batch": 4}"#, "norm.stats_batch"),
            (
                r#"{"kind": "batch", "renorm": {"r_max": 2}}"#,
                "norm.renorm",
            ),
        ];
        for (json, key) in cases {
            let err = read(serde_json::from_str(json).unwrap()).unwrap_err();
            assert!(
                err.contains(key) && err.contains("belongs to"),
                "{json}: {err}"
            );
        }
        // A default value is what every written config.json holds: accepted with any kind.
        read(serde_json::json!({"kind": "batch", "groups": 4, "mean_only": false})).unwrap();
        // The shared keys are accepted with any kind.
        read(serde_json::json!({"kind": "none", "eps": 0.001, "population_batches": 50})).unwrap();
    }

    #[test]
    fn every_key_is_written_back_whatever_the_layer() {
        for kind in NormKind::ALL {
            let config = read(serde_json::json!({ "kind": kind.name() })).unwrap();
            let written = serde_json::to_value(&config).unwrap();
            let keys: Vec<&String> = written.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 14, "{kind:?}: {keys:?}");
            assert_eq!(read(written).unwrap(), config);
        }
        let group = read(serde_json::json!({"kind": "group", "groups": 2})).unwrap();
        assert_eq!(serde_json::to_value(&group).unwrap()["groups"], 2);
    }
}
