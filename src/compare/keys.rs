//! Dot-separated key paths into JSON configs (`norm.kind`, `optim.lr`), the same paths
//! `bn-exp train --set` takes, plus the small JSON helpers studies and tables share. How runs
//! group by condition (and the one flattening of a config into key paths) is
//! [`crate::groups`]'s.

use anyhow::{Result, bail};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON object whose keys keep the order they were written in.
///
/// `serde_json::Map` sorts keys (the crate is built without `preserve_order`), but the order of
/// a study's grid keys decides the order of the runs and how they are named, so study files are
/// read through this type instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedMap(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reader = OrderedMaps {
            expecting: "an object of \"key.path\": value",
            list: false,
        };
        let mut maps = deserializer.deserialize_map(reader)?;
        Ok(maps.pop().unwrap_or_default())
    }
}

/// One object read as an [`OrderedMap`], or a list of them (a study's `zip`); `expecting` says
/// what the value should have been when it is neither.
pub fn one_or_more_maps<'de, D: Deserializer<'de>>(
    deserializer: D,
    expecting: &'static str,
) -> Result<Vec<OrderedMap>, D::Error> {
    deserializer.deserialize_any(OrderedMaps {
        expecting,
        list: true,
    })
}

/// Reads objects keeping their keys' order (refusing a key given twice): one object, or with
/// `list` a list of them too.
struct OrderedMaps {
    expecting: &'static str,
    list: bool,
}

impl<'de> Visitor<'de> for OrderedMaps {
    type Value = Vec<OrderedMap>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("key `{key}` appears twice")));
            }
            entries.push((key, value));
        }
        Ok(vec![OrderedMap(entries)])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        if !self.list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut maps = Vec::new();
        while let Some(map) = access.next_element::<OrderedMap>()? {
            maps.push(map);
        }
        Ok(maps)
    }
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
}
