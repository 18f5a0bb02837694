//! Runs of one experimental condition: what a run's condition is, how runs fall into groups,
//! the order of the groups, the keys that vary between them and the labels people read.
//! `compare`'s tables, `plot`'s figures and `reproduce`'s claims all group runs here, so a
//! table and a figure of the same runs have the same groups, in the same order, with the same
//! labels.
//!
//! - A run's **condition** is its config flattened to dotted keys (`norm.kind`, `optim.lr`)
//!   without `seed`, `name` and `study`: runs equal in everything else are repeats of one
//!   condition. Numbers compare by value, so `1` equals `1.0`. A run without a readable config
//!   is a condition of its own, named by its folder, rather than lumped with every such run.
//! - **Groups** come ordered by their values on the keys that vary: `norm.kind` (or, in run
//!   folders written before it existed, `bn.placement`) first, `none` first among strings and
//!   numbers in numeric order; runs without a config last.
//! - A group's **label** names only the keys that vary, as people say them
//!   ([`crate::labels::readable_labels`]); with nothing varying the one group is `all`.
//!
//! Colours are `plot`'s business: it colours a group by its index in this order.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::Value;

pub use crate::labels::Leaves;
use crate::labels::{readable_labels, value_text};
use crate::run::Run;

/// Config keys that name or seed a run rather than describe its experimental condition.
pub const NOT_CONDITION_KEYS: [&str; 3] = ["seed", "name", "study"];

/// The keys whose values lead the order of groups, so "without BN" comes first everywhere:
/// `norm.kind`, and `bn.placement` in run folders written before normalisation had its own key.
const PRIMARY_KEYS: [&str; 2] = ["norm.kind", "bn.placement"];

/// The only key of the condition of a run without a readable config (its folder name). Not a
/// dotted name, so it cannot clash with a real config key.
const NO_CONFIG_KEY: &str = "(no config)";

/// Tolerance when comparing numbers read back from JSON: `1` and `1.0` are the same learning
/// rate, and a value that went through a float print/parse round trip may differ in the last bit.
const NUMBER_TOLERANCE: f64 = 1e-12;

/// Every leaf of a config as `key.path → value`. Arrays are leaves (a layer-size list such as
/// `model.hidden` is one setting, not one per layer), and so are empty objects. Anything but
/// an object has no leaves.
pub fn flatten(config: &Value) -> Leaves {
    let mut leaves = Leaves::new();
    if let Value::Object(object) = config {
        for (key, child) in object {
            collect_leaves(child, key, &mut leaves);
        }
    }
    leaves
}

fn collect_leaves(node: &Value, path: &str, out: &mut Leaves) {
    match node {
        Value::Object(object) if !object.is_empty() => {
            for (key, child) in object {
                collect_leaves(child, &format!("{path}.{key}"), out);
            }
        }
        leaf => {
            out.insert(path.to_string(), leaf.clone());
        }
    }
}

/// The condition of a run whose config is `config` and whose folder is called `folder`: the
/// flattened config without [`NOT_CONDITION_KEYS`], or, for a config with nothing in it (missing
/// or damaged), the folder's name alone.
pub fn condition(config: &Value, folder: &str) -> Leaves {
    let mut leaves = flatten(config);
    if leaves.is_empty() {
        leaves.insert(NO_CONFIG_KEY.to_string(), Value::String(folder.to_string()));
        return leaves;
    }
    for key in NOT_CONDITION_KEYS {
        leaves.remove(key);
    }
    leaves
}

/// The condition of a run as read from its folder ([`condition`], named by the folder).
pub fn run_condition(run: &Run) -> Leaves {
    let folder = run
        .dir
        .file_name()
        .map_or_else(|| run.name.clone(), |n| n.to_string_lossy().into_owned());
    condition(&run.config, &folder)
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

/// Whether two conditions are the same: the same keys, with equal values ([`json_equal`]).
pub fn same_condition(a: &Leaves, b: &Leaves) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(key, v)| b.get(key).is_some_and(|w| json_equal(v, w)))
}

/// Runs grouped by condition, the groups in order.
#[derive(Debug, Clone)]
pub struct Grouping {
    pub groups: Vec<Group>,
    /// The keys whose value (or presence) differs between groups (those with a config), in
    /// the order that sorts the groups: `norm.kind` or `bn.placement` first, then by name.
    pub varying: Vec<String>,
}

impl Grouping {
    /// Group conditions (one per run, as [`condition`] gives them): equal ones form one group,
    /// the groups ordered by their values on the keys that vary, and labelled.
    pub fn new(conditions: &[Leaves]) -> Self {
        let mut distinct: Vec<(Leaves, Vec<usize>)> = Vec::new();
        for (index, condition) in conditions.iter().enumerate() {
            match distinct
                .iter_mut()
                .find(|(known, _)| same_condition(known, condition))
            {
                Some((_, members)) => members.push(index),
                None => distinct.push((condition.clone(), vec![index])),
            }
        }
        // Config-less runs would make every key look varying; they are labelled by folder.
        let configured: Vec<&Leaves> = distinct
            .iter()
            .map(|(condition, _)| condition)
            .filter(|condition| !is_configless(condition))
            .collect();
        let varying = varying_keys(&configured);
        distinct.sort_by(|(a, _), (b, _)| {
            is_configless(a)
                .cmp(&is_configless(b))
                .then_with(|| compare_on_keys(a, b, &varying))
                .then_with(|| {
                    value_text(a.get(NO_CONFIG_KEY)).cmp(&value_text(b.get(NO_CONFIG_KEY)))
                })
        });
        let configured: Vec<Leaves> = distinct
            .iter()
            .map(|(condition, _)| condition)
            .filter(|condition| !is_configless(condition))
            .cloned()
            .collect();
        let mut readable = readable_labels(&configured, &varying).into_iter();
        let groups = distinct
            .into_iter()
            .map(|(condition, members)| {
                let label = match condition.get(NO_CONFIG_KEY) {
                    Some(folder) => format!("{} (no config)", value_text(Some(folder))),
                    None => readable.next().unwrap_or_default(),
                };
                Group {
                    condition,
                    label,
                    members,
                }
            })
            .collect();
        Self { groups, varying }
    }

    /// The group the `index`-th run grouped belongs to.
    pub fn group_of(&self, index: usize) -> Option<usize> {
        self.groups
            .iter()
            .position(|group| group.members.contains(&index))
    }
}

/// Runs of one condition.
#[derive(Debug, Clone)]
pub struct Group {
    pub condition: Leaves,
    pub label: String,
    /// Where the group's runs are in the list that was grouped, in that list's order.
    pub members: Vec<usize>,
}

/// Whether a condition is that of a run without a readable config.
pub fn is_configless(condition: &Leaves) -> bool {
    condition.contains_key(NO_CONFIG_KEY)
}

/// Keys whose value (or presence) differs between any two of the conditions, `norm.kind` and
/// `bn.placement` first, then in name order.
pub fn varying_keys(conditions: &[&Leaves]) -> Vec<String> {
    let all_keys: BTreeSet<&String> = conditions.iter().flat_map(|c| c.keys()).collect();
    let mut keys: Vec<String> = all_keys
        .into_iter()
        .filter(|key| {
            let first = conditions.first().and_then(|c| c.get(*key));
            conditions.iter().any(|c| match (c.get(*key), first) {
                (Some(a), Some(b)) => !json_equal(a, b),
                (a, b) => a.is_some() != b.is_some(),
            })
        })
        .cloned()
        .collect();
    keys.sort_by_key(|key| !PRIMARY_KEYS.contains(&key.as_str()));
    keys
}

/// Order conditions by their values on `keys`, in turn: missing or null first, then `none`,
/// booleans, numbers (numerically), other strings, anything else.
pub fn compare_on_keys(a: &Leaves, b: &Leaves, keys: &[String]) -> Ordering {
    keys.iter()
        .map(|k| compare_values(a.get(k), b.get(k)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) if s == "none" => 1,
            Some(Value::Bool(_)) => 2,
            Some(Value::Number(_)) => 3,
            Some(Value::String(_)) => 4,
            Some(_) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.total_cmp(&y)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => {
            rank(a).cmp(&rank(b)).then_with(|| x.cmp(y))
        }
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| value_text(a).cmp(&value_text(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conditions(configs: &[Value]) -> Vec<Leaves> {
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| condition(c, &format!("run{i}")))
            .collect()
    }

    fn labels(grouping: &Grouping) -> Vec<&str> {
        grouping.groups.iter().map(|g| g.label.as_str()).collect()
    }

    #[test]
    fn flatten_keeps_arrays_and_empty_objects_as_leaves() {
        let leaves = flatten(&json!({"model": {"hidden": [1, 2]}, "probe": {}, "lr": null}));
        let keys: Vec<&str> = leaves.keys().map(String::as_str).collect();
        assert_eq!(keys, ["lr", "model.hidden", "probe"]);
        assert_eq!(leaves["probe"], json!({}));
        assert!(flatten(&Value::Null).is_empty());
    }

    #[test]
    fn seeds_and_names_are_not_the_condition_and_numbers_compare_by_value() {
        let runs = conditions(&[
            json!({"name": "a", "seed": 0, "study": "s", "optim": {"lr": 1}}),
            json!({"name": "b", "seed": 1, "study": "s", "optim": {"lr": 1.0}}),
        ]);
        let grouping = Grouping::new(&runs);
        assert_eq!(grouping.groups.len(), 1);
        assert_eq!(grouping.groups[0].members, [0, 1]);
        assert_eq!(labels(&grouping), ["all"]);
        assert!(grouping.varying.is_empty());
    }

    #[test]
    fn none_comes_first_numbers_numerically_and_configless_runs_last() {
        let cfg = |kind: &str, lr: f64, seed: u64| json!({"seed": seed, "norm": {"kind": kind}, "optim": {"lr": lr}});
        let runs = conditions(&[
            cfg("batch", 10.0, 0),
            Value::Null,
            cfg("none", 2.0, 0),
            cfg("batch", 2.0, 1),
            cfg("batch", 10.0, 1),
        ]);
        let grouping = Grouping::new(&runs);
        assert_eq!(grouping.varying, ["norm.kind", "optim.lr"]);
        assert_eq!(
            labels(&grouping),
            ["no BN, lr 2", "BN, lr 2", "BN, lr 10", "run1 (no config)"]
        );
        let members: Vec<&[usize]> = grouping
            .groups
            .iter()
            .map(|g| g.members.as_slice())
            .collect();
        assert_eq!(members, [&[2][..], &[3], &[0, 4], &[1]]);
        assert_eq!(grouping.group_of(4), Some(2));
    }

    #[test]
    fn presence_of_a_key_varies_and_older_folders_order_by_placement() {
        let a = flatten(&json!({"bn": {"placement": "before"}, "optim": {"lr": 0.5}}));
        let b = flatten(&json!({"bn": {"placement": "none"}}));
        assert_eq!(varying_keys(&[&a, &b]), ["bn.placement", "optim.lr"]);
        assert_eq!(
            compare_on_keys(&a, &b, &varying_keys(&[&a, &b])),
            Ordering::Greater
        );
    }
}
