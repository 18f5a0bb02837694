//! Labels people read for groups of runs: "BN before sigmoid", "no BN", "noisy BN", "Batch
//! Renorm, statistics over 4", "lr 5", instead of `norm.placement=before`.
//!
//! A label names only what varies between the groups being compared. The normalisation keys
//! (`norm.kind`, `norm.placement`, `norm.noise`, `norm.stats_batch`, `norm.groups`,
//! `norm.mean_only`, and `bn.placement` of older run folders) read together as one phrase; the
//! activation joins it when BN's placement is part of the label ("BN after ReLU"). Other common
//! keys have a short phrase ("lr 5", "batch 256", "dropout 0.2"); any other key reads `key=value`
//! with its last segment. If two groups would get the same label, every group falls back to
//! the `key=value` form, so a label always identifies its group.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::norm::{NormConfig, NormKind};

/// A config flattened to dotted keys (`norm.kind`), as `compare` and `plot` group runs.
pub type Leaves = BTreeMap<String, Value>;

/// The keys that make up the normalisation phrase.
const NORM_KEYS: [&str; 7] = [
    "norm.kind",
    "norm.placement",
    "norm.noise",
    "norm.stats_batch",
    "norm.groups",
    "norm.mean_only",
    "bn.placement",
];

/// One label per group, in the same order, for the groups' `configs` and the `varying` keys
/// (the dotted keys whose values differ between groups).
pub fn readable_labels(configs: &[Leaves], varying: &[String]) -> Vec<String> {
    // "no BN" beside BN alone; "no normalisation" beside any other layer.
    let none_label = if configs.iter().any(|c| {
        NormKind::from_name(&norm_kind(c))
            .is_some_and(|kind| !matches!(kind, NormKind::None | NormKind::Batch))
    }) {
        "no normalisation"
    } else {
        "no BN"
    };
    let labels: Vec<String> = configs
        .iter()
        .map(|c| readable_label(c, varying, none_label))
        .collect();
    let mut sorted = labels.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() == labels.len() {
        labels
    } else {
        configs
            .iter()
            .map(|c| key_value_label(c, varying))
            .collect()
    }
}

/// `norm.kind=none, optim.lr=5`: each varying key by its full dotted path, so that the label
/// tells groups apart even where two keys share their last segment.
pub fn key_value_label(config: &Leaves, varying: &[String]) -> String {
    varying
        .iter()
        .map(|k| format!("{k}={}", value_text(config.get(k))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn readable_label(config: &Leaves, varying: &[String], none_label: &str) -> String {
    let varies = |key: &str| varying.iter().any(|k| k == key);
    // A condition its author named ("BN-x5") reads as that name: a study that varies several
    // settings together names each set of them once, instead of listing all of them.
    if varies("label")
        && let Some(label) = config.get("label").and_then(Value::as_str)
    {
        return label.to_string();
    }
    let placement_varies = varies("norm.placement") || varies("bn.placement");
    let norm_varies = NORM_KEYS.iter().any(|k| varies(k));
    let kind = norm_kind(config);
    // The activation reads inside "BN before sigmoid" when placement is in the label too.
    let activation_in_norm =
        norm_varies && kind != "none" && (placement_varies || varies("model.activation"));
    let mut parts = Vec::new();
    if norm_varies || activation_in_norm {
        parts.push(norm_phrase(config, varying, none_label, activation_in_norm));
    }
    for key in varying {
        if key == "label"
            || NORM_KEYS.contains(&key.as_str())
            || (activation_in_norm && key == "model.activation")
        {
            continue;
        }
        parts.push(other_phrase(key, config.get(key)));
    }
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(", ")
    }
}

/// The normalisation of a config: `norm.kind`, or what an older `bn.placement` meant.
fn norm_kind(config: &Leaves) -> String {
    match config.get("norm.kind").and_then(Value::as_str) {
        Some(kind) => kind.to_string(),
        None => match config.get("bn.placement").and_then(Value::as_str) {
            Some("none") => "none".to_string(),
            Some(_) => "batch".to_string(),
            None => "batch".to_string(),
        },
    }
}

fn norm_phrase(
    config: &Leaves,
    varying: &[String],
    none_label: &str,
    with_activation: bool,
) -> String {
    let varies = |key: &str| varying.iter().any(|k| k == key);
    let kind = norm_kind(config);
    let noise = config.get("norm.noise").and_then(Value::as_bool) == Some(true);
    if kind == "none" {
        if noise {
            return "noise without BN".to_string();
        }
        // A net without normalisation has no placement; its activation is still a condition.
        return match (varies("model.activation"), config.get("model.activation")) {
            (true, Some(act)) => format!("{none_label}, {}", activation_name(act)),
            _ => none_label.to_string(),
        };
    }
    let name = layer_name(config, &kind);
    let mut phrase = if noise { format!("noisy {name}") } else { name };
    if with_activation {
        let placement = config
            .get("norm.placement")
            .or_else(|| config.get("bn.placement"))
            .and_then(Value::as_str)
            .unwrap_or("before");
        let act = config
            .get("model.activation")
            .map_or("the nonlinearity".to_string(), activation_name);
        phrase = format!("{phrase} {placement} {act}");
    }
    if varies("norm.stats_batch")
        && let Some(k) = config.get("norm.stats_batch").filter(|v| !v.is_null())
    {
        phrase = format!("{phrase}, statistics over {}", value_text(Some(k)));
    }
    phrase
}

/// The layer's name with the settings that tell it apart ("Group Norm (G = 4)"), as the layer
/// says it ([`NormConfig::label`]) from the config's `norm.*` keys; the kind as written when
/// those do not read as a config (a damaged or foreign run folder).
fn layer_name(config: &Leaves, kind: &str) -> String {
    let mut norm = serde_json::Map::new();
    for (key, value) in config {
        if let Some(path) = key.strip_prefix("norm.") {
            insert_path(&mut norm, path, value.clone());
        }
    }
    norm.insert("kind".into(), Value::String(kind.to_string()));
    match serde_json::from_value::<NormConfig>(Value::Object(norm)) {
        Ok(layer) => layer.label(),
        Err(_) => NormKind::from_name(kind).map_or(kind.to_string(), |k| k.label().to_string()),
    }
}

/// Put `value` at the dotted `path` of a JSON object (`renorm.r_max`), creating objects.
fn insert_path(object: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            object.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let child = object
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(child) = child {
                insert_path(child, rest, value);
            }
        }
    }
}

fn activation_name(value: &Value) -> String {
    match value.as_str() {
        Some("relu") => "ReLU".to_string(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    }
}

fn other_phrase(key: &str, value: Option<&Value>) -> String {
    let text = value_text(value);
    match key {
        "optim.lr" => format!("lr {text}"),
        "batch_size" => format!("batch {text}"),
        "steps" => format!("{text} steps"),
        "eval_every" => format!("evaluated every {text}"),
        "optim.momentum" => format!("momentum {text}"),
        "model.activation" => value.map_or(text, activation_name),
        "model.dropout" if value.and_then(Value::as_f64) == Some(0.0) => "no dropout".to_string(),
        "model.dropout" => format!("dropout {text}"),
        "device" => format!("on the {}", text.to_uppercase()),
        _ => {
            let short = key.rsplit('.').next().unwrap_or(key);
            format!("{short}={text}")
        }
    }
}

/// A value as a label shows it: strings bare, whole numbers without `.0`, other numbers as
/// [`format_float`] with at most 4 significant digits.
pub fn value_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => float_text(f, true),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Shortest readable form of a float: `0.5`, `1`, `0.0001`, `1e-6`.
pub fn format_float(x: f64) -> String {
    float_text(x, false)
}

/// [`format_float`]; with `four_digits`, a long decimal is cut to 4 significant digits (a
/// learning rate of 1.0·2/60 reads 0.03333).
fn float_text(x: f64, four_digits: bool) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x != 0.0 && (x.abs() < 1e-4 || x.abs() >= 1e6) {
        format!("{x:e}")
    } else {
        let text = format!("{x}");
        if !four_digits || text.len() <= 7 {
            text
        } else {
            let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
            let rounded = format!("{x:.digits$}");
            rounded
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaves(pairs: &[(&str, Value)]) -> Leaves {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn labels(configs: &[Leaves], varying: &[&str]) -> Vec<String> {
        let varying: Vec<String> = varying.iter().map(|s| s.to_string()).collect();
        readable_labels(configs, &varying)
    }

    #[test]
    fn studies_read_as_people_say_them() {
        let fig1 = [
            leaves(&[("norm.kind", json!("none"))]),
            leaves(&[("norm.kind", json!("batch"))]),
        ];
        assert_eq!(labels(&fig1, &["norm.kind"]), ["no BN", "BN"]);
        let devices = [
            leaves(&[("norm.kind", json!("batch")), ("device", json!("cpu"))]),
            leaves(&[("norm.kind", json!("batch")), ("device", json!("gpu"))]),
        ];
        assert_eq!(labels(&devices, &["device"]), ["on the CPU", "on the GPU"]);
        let santurkar = [
            leaves(&[("norm.kind", json!("none")), ("norm.noise", json!(false))]),
            leaves(&[("norm.kind", json!("batch")), ("norm.noise", json!(false))]),
            leaves(&[("norm.kind", json!("batch")), ("norm.noise", json!(true))]),
            leaves(&[("norm.kind", json!("none")), ("norm.noise", json!(true))]),
        ];
        assert_eq!(
            labels(&santurkar, &["norm.kind", "norm.noise"]),
            ["no BN", "BN", "noisy BN", "noise without BN"]
        );
        let act = |a: &str, p: &str| {
            leaves(&[
                ("norm.kind", json!("batch")),
                ("norm.placement", json!(p)),
                ("model.activation", json!(a)),
            ])
        };
        assert_eq!(
            labels(
                &[act("sigmoid", "before"), act("relu", "after")],
                &["model.activation", "norm.placement"]
            ),
            ["BN before sigmoid", "BN after ReLU"]
        );
        let zoo = [
            leaves(&[("norm.kind", json!("none"))]),
            leaves(&[("norm.kind", json!("group")), ("norm.groups", json!(4))]),
            leaves(&[
                ("norm.kind", json!("weight")),
                ("norm.mean_only", json!(true)),
            ]),
        ];
        assert_eq!(
            labels(&zoo, &["norm.kind", "norm.mean_only"]),
            [
                "no normalisation",
                "Group Norm (G = 4)",
                "Weight Norm + mean-only BN"
            ]
        );
        let small = [
            leaves(&[
                ("norm.kind", json!("renorm")),
                ("norm.stats_batch", json!(4)),
            ]),
            leaves(&[
                ("norm.kind", json!("layer")),
                ("norm.stats_batch", Value::Null),
            ]),
        ];
        assert_eq!(
            labels(&small, &["norm.kind", "norm.stats_batch"]),
            ["Batch Renorm, statistics over 4", "Layer Norm"]
        );
        let lr = [
            leaves(&[("norm.kind", json!("none")), ("optim.lr", json!(5.0))]),
            leaves(&[("norm.kind", json!("batch")), ("optim.lr", json!(0.5))]),
        ];
        assert_eq!(
            labels(&lr, &["norm.kind", "optim.lr"]),
            ["no BN, lr 5", "BN, lr 0.5"]
        );
        // Run folders from before `norm` had kinds say `bn.placement`.
        let old = [
            leaves(&[("bn.placement", json!("none"))]),
            leaves(&[
                ("bn.placement", json!("after")),
                ("model.activation", json!("sigmoid")),
            ]),
        ];
        assert_eq!(
            labels(&old, &["bn.placement"]),
            ["no BN", "BN after sigmoid"]
        );
        assert_eq!(value_text(Some(&json!(2.0 / 60.0))), "0.03333");
        assert_eq!(value_text(Some(&json!(4.266666666666667))), "4.267");
        assert_eq!(value_text(Some(&json!(0.5))), "0.5");
        assert_eq!(value_text(Some(&json!(60.0))), "60");
        assert_eq!(value_text(Some(&json!(1.5e-6))), "1.5e-6");
        assert_eq!(value_text(Some(&json!(12345678.9))), "1.23456789e7");
    }

    #[test]
    fn floats_read_well() {
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(60.0), "60");
        assert_eq!(format_float(1e-6), "1e-6");
        // Long decimals stay whole here; labels cut them (`value_text`).
        assert_eq!(format_float(2.0 / 60.0), "0.03333333333333333");
    }

    #[test]
    fn a_named_condition_reads_as_its_name() {
        // The paper's BN-x5 against its baseline: several settings differ, the names say it.
        let base = leaves(&[
            ("label", json!("Inception")),
            ("norm.kind", json!("none")),
            ("optim.lr", json!(0.005)),
        ]);
        let x5 = leaves(&[
            ("label", json!("BN-x5")),
            ("norm.kind", json!("batch")),
            ("optim.lr", json!(0.025)),
        ]);
        let varying = ["label", "norm.kind", "optim.lr"];
        assert_eq!(
            labels(&[base, x5.clone()], &varying),
            ["Inception", "BN-x5"]
        );
        // A group without a label beside a named one reads by its settings, the label left out.
        let unnamed = leaves(&[("norm.kind", json!("none")), ("optim.lr", json!(0.005))]);
        assert_eq!(
            labels(&[unnamed, x5], &varying),
            ["no BN, lr 0.005", "BN-x5"]
        );
    }

    #[test]
    fn nothing_varying_reads_all() {
        let one = [leaves(&[("norm.kind", json!("batch"))])];
        assert_eq!(labels(&one, &[]), ["all"]);
    }

    #[test]
    fn clashing_or_unknown_keys_fall_back_to_key_value() {
        let a = leaves(&[
            ("norm.kind", json!("batch")),
            ("norm.renorm.r_max", json!(2)),
        ]);
        let b = leaves(&[
            ("norm.kind", json!("batch")),
            ("norm.renorm.r_max", json!(3)),
        ]);
        assert_eq!(
            labels(&[a, b], &["norm.renorm.r_max"]),
            ["r_max=2", "r_max=3"]
        );
        // Two groups whose phrases coincide (a placement of no normalisation): every label
        // becomes key=value.
        let c = leaves(&[
            ("norm.kind", json!("none")),
            ("norm.placement", json!("before")),
        ]);
        let d = leaves(&[
            ("norm.kind", json!("none")),
            ("norm.placement", json!("after")),
        ]);
        assert_eq!(
            labels(&[c, d], &["norm.placement"]),
            ["norm.placement=before", "norm.placement=after"]
        );
    }
}
