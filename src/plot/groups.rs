//! Runs that differ only by seed form a group; groups get short labels and stable colours.
//!
//! A group's identity is its config flattened to dotted keys (`norm.kind`, `optim.lr`) with
//! `seed`, `name` and `study` removed. Labels name only the keys that vary across the groups
//! being plotted, as people say them ([`crate::labels`]), so a study of BN against none reads
//! "no BN" / "BN" rather than a wall of settings. Groups are ordered with no-BN first and numbers in numeric order,
//! and colours are handed out in that order, so one group has one colour in every figure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::load::Run;
use super::style::{Colour, palette_colour};
use crate::labels::{readable_labels, value_text};

/// Config keys that tell runs of one configuration apart without changing the configuration.
const NOT_IDENTITY: [&str; 3] = ["seed", "name", "study"];

/// The keys whose values lead the order of groups, so "without BN" comes first everywhere:
/// `norm.kind`, and `bn.placement` in run folders written before normalisation had its own key.
const PRIMARY_KEYS: [&str; 2] = ["norm.kind", "bn.placement"];

/// The only key of the identity of a run without a readable config (its folder name). Not a
/// dotted name, so it cannot clash with a real config key.
const NO_CONFIG_KEY: &str = "(no config)";

/// A config flattened to dotted keys; arrays are leaves.
pub type FlatConfig = BTreeMap<String, Value>;

/// Runs of one configuration, across seeds.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub colour: Colour,
    pub identity: FlatConfig,
    /// Indices into the run list, ordered by seed (runs without a seed last, by name).
    pub runs: Vec<usize>,
}

/// Flatten nested objects into `a.b.c` keys.
pub fn flatten_config(config: &Value) -> FlatConfig {
    let mut out = FlatConfig::new();
    flatten_into(config, "", &mut out);
    out
}

fn flatten_into(value: &Value, prefix: &str, out: &mut FlatConfig) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(v, &key, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// The identity of a run's configuration. A run without a readable config gets an identity of
/// its own (its folder name) rather than being lumped with every other such run.
pub fn run_identity(run: &Run) -> FlatConfig {
    let mut flat = flatten_config(&run.config);
    if flat.is_empty() {
        let folder = run
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| run.name.clone());
        flat.insert(NO_CONFIG_KEY.to_string(), Value::String(folder));
        return flat;
    }
    for key in NOT_IDENTITY {
        flat.remove(key);
    }
    flat
}

/// Keys whose value (or presence) differs between any two of the given configs.
pub fn varying_keys<'a>(configs: impl IntoIterator<Item = &'a FlatConfig> + Clone) -> Vec<String> {
    let all_keys: BTreeSet<&String> = configs.clone().into_iter().flat_map(|c| c.keys()).collect();
    let mut keys: Vec<String> = all_keys
        .into_iter()
        .filter(|key| {
            let mut values = configs.clone().into_iter().map(|c| c.get(*key));
            let first = values.next().flatten();
            values.any(|v| v != first)
        })
        .cloned()
        .collect();
    keys.sort_by(|a, b| key_rank(a).cmp(&key_rank(b)).then_with(|| a.cmp(b)));
    keys
}

fn key_rank(key: &str) -> u8 {
    u8::from(!PRIMARY_KEYS.contains(&key))
}

/// Order configs by their values on `keys`: `none` first among strings, numbers numerically.
pub fn compare_on_keys(a: &FlatConfig, b: &FlatConfig, keys: &[String]) -> Ordering {
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

/// Group runs by configuration, order the groups, label and colour them.
pub fn group_runs(runs: &[Run]) -> Vec<Group> {
    let mut by_identity: Vec<(FlatConfig, Vec<usize>)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let id = run_identity(run);
        match by_identity.iter_mut().find(|(known, _)| *known == id) {
            Some((_, members)) => members.push(i),
            None => by_identity.push((id, vec![i])),
        }
    }
    // Config-less runs would make every key look varying; they are labelled by folder instead.
    let keys = varying_keys(
        by_identity
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !id.contains_key(NO_CONFIG_KEY)),
    );
    by_identity.sort_by(|(a, _), (b, _)| {
        let configless = |id: &FlatConfig| id.contains_key(NO_CONFIG_KEY);
        configless(a)
            .cmp(&configless(b))
            .then_with(|| compare_on_keys(a, b, &keys))
            .then_with(|| value_text(a.get(NO_CONFIG_KEY)).cmp(&value_text(b.get(NO_CONFIG_KEY))))
    });
    // Labels people read ("BN before sigmoid"), from the configs that have one.
    let configured: Vec<FlatConfig> = by_identity
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !id.contains_key(NO_CONFIG_KEY))
        .cloned()
        .collect();
    let mut readable = readable_labels(&configured, &keys).into_iter();
    by_identity
        .into_iter()
        .enumerate()
        .map(|(index, (identity, mut members))| {
            members.sort_by(|&a, &b| compare_seeds(&runs[a], &runs[b]));
            let label = match identity.get(NO_CONFIG_KEY) {
                Some(folder) => format!("{} (no config)", value_text(Some(folder))),
                None => {
                    let readable = readable.next().unwrap_or_default();
                    if keys.is_empty() {
                        runs[members[0]].name.clone()
                    } else {
                        readable
                    }
                }
            };
            Group {
                label,
                colour: palette_colour(index),
                identity,
                runs: members,
            }
        })
        .collect()
}

/// Seed order; runs without a seed go last, by name, so "the first seed" is well defined.
pub fn compare_seeds(a: &Run, b: &Run) -> Ordering {
    match (a.seed, b.seed) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    }
    .then_with(|| a.name.cmp(&b.name))
}

/// A label turned into a file-name fragment: `bn.placement=before, optim.lr=0.5` →
/// `bn.placement=before_optim.lr=0.5`.
pub fn file_slug(label: &str) -> String {
    let mut slug = String::with_capacity(label.len());
    for c in label.chars() {
        let keep = c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '=' | '+');
        let c = if keep { c } else { '_' };
        if !(c == '_' && slug.ends_with('_')) {
            slug.push(c);
        }
    }
    let slug = slug.trim_matches('_').to_string();
    if slug.is_empty() {
        "group".to_string()
    } else {
        slug
    }
}

/// Mean and sample standard deviation of the finite values ([`crate::run::mean_std`], the
/// definition the tables use). A single run has no spread: it is drawn without a band or bar,
/// which is what the 0 here means.
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    crate::run::mean_std(values).map(|s| (s.mean, s.std.unwrap_or(0.0)))
}

/// Mean ± std of one quantity across seeds at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStat {
    pub step: f64,
    pub mean: f64,
    pub std: f64,
    /// How many seeds had a value at this step.
    pub n: usize,
}

/// Align several `(step, value)` series on their steps and reduce each step to mean ± std over
/// the series that have a value there. Seeds of one configuration evaluate at the same steps;
/// an unfinished seed simply stops contributing where its file ends.
pub fn aggregate_by_step(series: &[Vec<(u64, f64)>]) -> Vec<StepStat> {
    let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for points in series {
        for &(step, value) in points {
            if value.is_finite() {
                at.entry(step).or_default().push(value);
            }
        }
    }
    at.into_iter()
        .filter_map(|(step, values)| {
            let (mean, std) = mean_std(&values)?;
            Some(StepStat {
                step: step as f64,
                mean,
                std,
                n: values.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flatten_and_vary() {
        let a =
            flatten_config(&json!({"seed": 1, "bn": {"placement": "none"}, "optim": {"lr": 0.5}}));
        let b = flatten_config(
            &json!({"seed": 2, "bn": {"placement": "before"}, "optim": {"lr": 0.5}}),
        );
        assert_eq!(a.get("bn.placement"), Some(&json!("none")));
        assert_eq!(varying_keys([&a, &b]), vec!["bn.placement", "seed"]);
    }

    #[test]
    fn none_sorts_first_and_numbers_numerically() {
        let keys = vec!["bn.placement".to_string(), "optim.lr".to_string()];
        let mk = |p: &str, lr: f64| {
            flatten_config(&json!({"bn": {"placement": p}, "optim": {"lr": lr}}))
        };
        let mut configs = [
            mk("before", 2.0),
            mk("none", 10.0),
            mk("before", 0.5),
            mk("after", 1.0),
        ];
        configs.sort_by(|a, b| compare_on_keys(a, b, &keys));
        let labels: Vec<String> = configs
            .iter()
            .map(|c| crate::labels::key_value_label(c, &keys))
            .collect();
        assert_eq!(
            labels,
            [
                "bn.placement=none, optim.lr=10",
                "bn.placement=after, optim.lr=1",
                "bn.placement=before, optim.lr=0.5",
                "bn.placement=before, optim.lr=2",
            ]
        );
    }

    fn run(folder: &str, config: Value) -> Run {
        Run {
            dir: std::path::PathBuf::from("study").join(folder),
            name: folder.to_string(),
            seed: config.get("seed").and_then(Value::as_i64),
            config,
            metrics: Vec::new(),
            activations: Vec::new(),
            measures: Vec::new(),
            summary: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn seeds_group_together_and_configless_runs_stand_apart() {
        let cfg = |p: &str, seed: u64| json!({"name": format!("{p}{seed}"), "seed": seed, "bn": {"placement": p}});
        let runs = [
            run("b1", cfg("before", 1)),
            run("lost", Value::Null),
            run("n0", cfg("none", 0)),
            run("b0", cfg("before", 0)),
        ];
        let groups = group_runs(&runs);
        let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(
            labels,
            ["no BN", "BN before the nonlinearity", "lost (no config)"]
        );
        assert_eq!(groups[1].runs, vec![3, 0], "first seed first");
        assert_eq!(groups[0].colour, palette_colour(0));
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(
            file_slug("bn.placement=before, optim.lr=0.5"),
            "bn.placement=before_optim.lr=0.5"
        );
        assert_eq!(file_slug("/// "), "group");
    }

    #[test]
    fn aggregate_skips_missing_values() {
        let stats = aggregate_by_step(&[vec![(0, 1.0), (10, 3.0)], vec![(0, 3.0), (10, f64::NAN)]]);
        assert_eq!(stats.len(), 2);
        assert_eq!((stats[0].mean, stats[0].n), (2.0, 2));
        assert!((stats[0].std - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!((stats[1].mean, stats[1].std, stats[1].n), (3.0, 0.0, 1));
    }
}
