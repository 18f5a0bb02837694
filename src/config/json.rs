//! The JSON under a config, before it is typed: strict parsing (no key twice, no byte-order
//! mark), `--set key.path=value` overrides, the `bn` key of configs written before
//! normalisation had its own, and serde's type errors said as a config's author reads them.
//! Studies read their files through the same strict parser.

use anyhow::{Result, bail, ensure};
use serde::Deserialize;
use serde_json::Value;

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

/// `optim.lr: expected a number, got the string "abc"` from serde's `invalid type: string "abc",
/// expected f64` at path `optim.lr`: the key, what it got, and what it expects.
pub(super) fn describe_type_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
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
        // A section's own check (`norm`, `model`) names its key in full already.
        _ if message.starts_with(&format!("{path}.")) => message,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
