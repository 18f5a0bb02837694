//! The `model` key of a config: the architecture with its own settings, and what every net
//! shares (g, the weight init, dropout). docs/config.md lists the keys.
//!
//! As with `norm`, a config file holds one flat object of every architecture's keys, and a key
//! of another architecture set to anything but its default is an error that names it
//! (`model.hidden` with `arch: "cnn"` would be ignored). Written back, every key is written,
//! so a run's `config.json` keeps one shape.

use serde::{Deserialize, Serialize};

use super::block::{Activation, Init};
use super::cnn::CnnConfig;
use super::geometry::Architecture;
use super::inception::InceptionConfig;
use super::mlp::MlpConfig;

/// The `model.arch` key: which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The paper's multi-layer perceptron (`mlp.rs`).
    Mlp,
    /// A small CNN of 3×3 conv blocks (`cnn.rs`).
    Cnn,
    /// Zhang et al.'s small Inception for CIFAR-10 (`inception.rs`).
    Inception,
}

/// The architecture with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchConfig {
    Mlp(MlpConfig),
    Cnn(CnnConfig),
    Inception(InceptionConfig),
}

impl ArchConfig {
    /// The architecture's answers about itself (widths, checks, size).
    pub fn geometry(&self) -> &dyn Architecture {
        match self {
            ArchConfig::Mlp(mlp) => mlp,
            ArchConfig::Cnn(cnn) => cnn,
            ArchConfig::Inception(inception) => inception,
        }
    }

    pub fn arch(&self) -> Arch {
        match self {
            ArchConfig::Mlp(_) => Arch::Mlp,
            ArchConfig::Cnn(_) => Arch::Cnn,
            ArchConfig::Inception(_) => Arch::Inception,
        }
    }
}

/// The `model` key, read. See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelKeys", into = "ModelKeys")]
pub struct ModelConfig {
    pub arch: ArchConfig,
    pub activation: Activation,
    pub init: Init,
    /// Standard deviation for `init: "gaussian"`.
    pub init_std: f64,
    /// Dropout probability after each hidden activation (0 disables it).
    pub dropout: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::try_from(ModelKeys::default()).expect("the default keys are consistent")
    }
}

/// The `model` key as a config file holds it: every architecture's keys, flat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ModelKeys {
    arch: Arch,
    /// Hidden layer widths of the MLP.
    hidden: Vec<usize>,
    /// Output channels of each conv block of the CNN.
    channels: Vec<usize>,
    /// The Inception's channel counts times this. Written only when it is not 1, so the
    /// config.json of every other net keeps its shape.
    #[serde(skip_serializing_if = "is_one")]
    width: f64,
    activation: Activation,
    init: Init,
    init_std: f64,
    dropout: f64,
}

impl Default for ModelKeys {
    fn default() -> Self {
        Self {
            arch: Arch::Mlp,
            hidden: MlpConfig::default().hidden,
            channels: CnnConfig::default().channels,
            width: InceptionConfig::default().width,
            activation: Activation::Sigmoid,
            init: Init::Gaussian,
            init_std: 0.01,
            dropout: 0.0,
        }
    }
}

impl TryFrom<ModelKeys> for ModelConfig {
    type Error = String;

    /// The architecture `arch` names, with its own keys; the other's must hold their defaults.
    fn try_from(keys: ModelKeys) -> Result<Self, String> {
        let default = ModelKeys::default();
        let owned = [
            ("model.hidden", &keys.hidden, &default.hidden, Arch::Mlp),
            (
                "model.channels",
                &keys.channels,
                &default.channels,
                Arch::Cnn,
            ),
        ];
        for (key, value, default, owner) in owned {
            if value != default && keys.arch != owner {
                return Err(format!(
                    "{key} is set, but it belongs to model.arch = \"{}\" and model.arch is \
                     \"{}\", which would ignore it; remove {key} (or set it to its default, \
                     {default:?}), or set model.arch = \"{}\"",
                    owner.name(),
                    keys.arch.name(),
                    owner.name()
                ));
            }
        }
        if keys.width != default.width && keys.arch != Arch::Inception {
            return Err(format!(
                "model.width is set, but it belongs to model.arch = \"inception\" and \
                 model.arch is \"{}\", which would ignore it; remove model.width (or set it \
                 to 1), or set model.arch = \"inception\"",
                keys.arch.name()
            ));
        }
        let arch = match keys.arch {
            Arch::Mlp => ArchConfig::Mlp(MlpConfig {
                hidden: keys.hidden,
            }),
            Arch::Cnn => ArchConfig::Cnn(CnnConfig {
                channels: keys.channels,
            }),
            Arch::Inception => ArchConfig::Inception(InceptionConfig { width: keys.width }),
        };
        Ok(ModelConfig {
            arch,
            activation: keys.activation,
            init: keys.init,
            init_std: keys.init_std,
            dropout: keys.dropout,
        })
    }
}

impl From<ModelConfig> for ModelKeys {
    /// Every key, the architecture's from its settings and the others' defaults.
    fn from(config: ModelConfig) -> Self {
        let mut keys = ModelKeys {
            arch: config.arch.arch(),
            activation: config.activation,
            init: config.init,
            init_std: config.init_std,
            dropout: config.dropout,
            ..ModelKeys::default()
        };
        match config.arch {
            ArchConfig::Mlp(mlp) => keys.hidden = mlp.hidden,
            ArchConfig::Cnn(cnn) => keys.channels = cnn.channels,
            ArchConfig::Inception(inception) => keys.width = inception.width,
        }
        keys
    }
}

fn is_one(width: &f64) -> bool {
    *width == 1.0
}

impl Arch {
    /// The config's spelling (`"cnn"`), for messages.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mlp => "mlp",
            Arch::Cnn => "cnn",
            Arch::Inception => "inception",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_another_architecture_is_refused_by_name() {
        let err = serde_json::from_value::<ModelConfig>(
            serde_json::json!({"arch": "cnn", "hidden": [50]}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("model.hidden") && err.contains("belongs to"),
            "{err}"
        );
        let err = serde_json::from_value::<ModelConfig>(
            serde_json::json!({"arch": "mlp", "channels": [8]}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model.channels"), "{err}");
        let err =
            serde_json::from_value::<ModelConfig>(serde_json::json!({"arch": "cnn", "width": 0.5}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("model.width"), "{err}");
        // What every written config.json holds: the other architecture's defaults, but
        // `width` only for an Inception whose width is not 1.
        let written = serde_json::to_value(ModelConfig::default()).unwrap();
        assert_eq!(written["channels"], serde_json::json!([32, 64]));
        assert!(written.get("width").is_none(), "{written}");
        let narrow: ModelConfig =
            serde_json::from_value(serde_json::json!({"arch": "inception", "width": 0.25}))
                .unwrap();
        let narrow_written = serde_json::to_value(&narrow).unwrap();
        assert_eq!(narrow_written["width"], serde_json::json!(0.25));
        assert_eq!(
            serde_json::from_value::<ModelConfig>(narrow_written).unwrap(),
            narrow
        );
        let back: ModelConfig = serde_json::from_value(written).unwrap();
        assert_eq!(back, ModelConfig::default());
    }
}
