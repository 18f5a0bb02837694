//! Dot-separated key paths into JSON configs (`norm.kind`, `optim.lr`), the same paths
//! `bn-exp train --set` takes, plus the small JSON helpers studies and tables share.

use anyhow::{Result, bail};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Tolerance when comparing numbers read back from JSON: `1` and `1.0` are the same learning
/// rate, and a value that went through a float print/parse round trip may differ in the last bit.
const NUMBER_TOLERANCE: f64 = 1e-12;

/// A JSON object whose keys keep the order they were written in.
///
/// `serde_json::Map` sorts keys (the crate is built without `preserve_order`), but the order of
/// a study's grid keys decides the order of the runs and how they are named, so study files are
/// read through this type instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedMap(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedMapVisitor)
    }
}

struct OrderedMapVisitor;

impl<'de> Visitor<'de> for OrderedMapVisitor {
    type Value = OrderedMap;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of \"key.path\": value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<OrderedMap, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("key `{key}` appears twice")));
            }
            entries.push((key, value));
        }
        Ok(OrderedMap(entries))
    }
}

/// Config keys that name or seed a run rather than describe its experimental condition: runs
/// equal in everything else are repeats of one condition and form one group of the table.
pub const NON_CONDITION_KEYS: &[&str] = &["seed", "name", "study"];

/// A config without its non-condition keys (`seed`, `name`, `study`): the group identity.
pub fn condition_of(config: &Value) -> Value {
    let mut condition = config.clone();
    if let Some(object) = condition.as_object_mut() {
        for key in NON_CONDITION_KEYS {
            object.remove(*key);
        }
    }
    condition
}

/// Check that a key path is well formed: non-empty segments separated by dots.
pub fn check_key_path(path: &str) -> Result<()> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        bail!("`{path}` is not a key path: use dot-separated names such as `norm.kind`");
    }
    Ok(())
}

/// The value at `path` in `config`, if every object on the way exists.
pub fn get_path<'a>(config: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(config, |node, segment| node.as_object()?.get(segment))
}

/// Set `path` in `config` to `value`, creating the objects on the way: `train --set`'s own code,
/// after the stricter key-path check studies make.
pub fn set_path(config: &mut Value, path: &str, value: Value) -> Result<()> {
    check_key_path(path)?;
    crate::config::set_path(config, path, value)
}

/// Equality of JSON values where numbers compare by value (`1` equals `1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= NUMBER_TOLERANCE * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Every leaf of a config as `(key.path, value)`, in key order. Arrays are leaves: a layer-size
/// list such as `model.hidden` is one setting, not one setting per layer.
pub fn flatten_leaves(config: &Value) -> Vec<(String, Value)> {
    let mut leaves = Vec::new();
    collect_leaves(config, "", &mut leaves);
    leaves
}

fn collect_leaves(node: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match node {
        Value::Object(object) if !object.is_empty() || prefix.is_empty() => {
            for (key, child) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_leaves(child, &path, out);
            }
        }
        _ => out.push((prefix.to_string(), node.clone())),
    }
}

/// A value as a person would type it: strings without quotes, everything else as JSON.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The name of a JSON type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Short display names for key paths: the last segment (`norm.kind` → `kind`), or as
/// many trailing segments as it takes to tell paths apart (`bn.momentum` and `optim.momentum`
/// stay `bn.momentum` and `optim.momentum`).
pub fn short_names(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .map(|path| {
            let segments: Vec<&str> = path.split('.').collect();
            (1..=segments.len())
                .map(|take| segments[segments.len() - take..].join("."))
                .find(|candidate| {
                    paths
                        .iter()
                        .filter(|other| has_suffix(other, candidate))
                        .count()
                        == 1
                })
                .unwrap_or_else(|| path.clone())
        })
        .collect()
}

/// Whether `path` ends with the whole segments `suffix` (`optim.lr` ends with `lr`, not `r`).
pub fn has_suffix(path: &str, suffix: &str) -> bool {
    path == suffix || path.ends_with(&format!(".{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_path_creates_objects_and_refuses_non_objects() {
        let mut config = json!({"model": {"hidden": [1, 2]}});
        set_path(&mut config, "bn.placement", json!("before")).unwrap();
        assert_eq!(config["bn"]["placement"], "before");
        assert!(set_path(&mut config, "model.hidden.x", json!(1)).is_err());
        assert!(set_path(&mut config, "a..b", json!(1)).is_err());
    }

    #[test]
    fn short_names_disambiguate_shared_last_segments() {
        let paths = vec![
            "bn.momentum".to_string(),
            "optim.momentum".to_string(),
            "optim.lr".to_string(),
        ];
        assert_eq!(
            short_names(&paths),
            vec!["bn.momentum", "optim.momentum", "lr"]
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_equal(&json!({"lr": 1}), &json!({"lr": 1.0})));
        assert!(!json_equal(&json!([1, 2]), &json!([1, 3])));
    }
}
