//! What a comparison is asked for: the accuracy thresholds, the baseline, and the
//! `key.path: value` specs that pick a group (a study's `baseline`, a claim's groups).

use anyhow::{Result, ensure};
use serde_json::Value;

use super::keys::get_path;
use crate::groups::json_equal;

/// Accuracy thresholds used when neither `--thresholds` nor the study gives any.
pub const DEFAULT_THRESHOLDS: [f64; 4] = [0.9, 0.95, 0.97, 0.98];

/// Accept thresholds as fractions (0.97) or percents (97); return fractions in (0, 1].
pub fn normalize_thresholds(values: &[f64]) -> Result<Vec<f64>> {
    ensure!(!values.is_empty(), "no thresholds given");
    values
        .iter()
        .map(|&value| {
            ensure!(
                value.is_finite() && value > 0.0 && value <= 100.0,
                "threshold {value} is not an accuracy: give fractions (0.97) or percents (97)"
            );
            Ok(if value > 1.0 { value / 100.0 } else { value })
        })
        .collect()
}

/// Which group the speed-up is measured against.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// The group of the first run (what a study lists first, usually the "none" condition).
    FirstGroup,
    /// A group label as printed (`BN before sigmoid, lr 1`), or `key=value` parts of the
    /// groups' configs that pick one (`placement=before`, `optim.lr=5`).
    Label(String),
    /// Config key paths and values, as a study file's `baseline`.
    Spec(Vec<(String, Value)>),
}

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub thresholds: Vec<f64>,
    pub baseline: Baseline,
}

/// Whether a config has every `(key.path, value)` of a spec.
pub fn matches_spec(config: &Value, spec: &[(String, Value)]) -> bool {
    spec.iter()
        .all(|(key, value)| get_path(config, key).is_some_and(|have| json_equal(have, value)))
}

/// `{norm.kind: "none", optim.lr: 0.1}`, for messages.
pub fn describe_spec(spec: &[(String, Value)]) -> String {
    let parts: Vec<String> = spec.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", parts.join(", "))
}
