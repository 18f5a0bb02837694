//! Study files (`configs/studies/*.json`): a base config, fixed overrides, and a grid of values
//! whose Cartesian product (with `zip` sets varying together) gives the study's runs.
//!
//! Everything a study file can get wrong is checked here, before any training starts: a typo in
//! a grid key found after an hour of training costs the hour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::keys::{
    OrderedMap, check_key_path, display_value, one_or_more_maps, set_path, short_names, type_name,
};
use super::options::{describe_spec, matches_spec, normalize_thresholds};
use crate::config::resolve_legacy_bn;
use crate::groups::{Grouping, Leaves, condition, flatten, json_equal};

/// Keys compare writes itself into every run's config.
const RESERVED_KEYS: &[&str] = &["name", "study"];

/// Name given to the only run of a study in which nothing varies.
const SINGLE_RUN_NAME: &str = "run";

/// A study file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    study: Option<String>,
    description: Option<String>,
    base: Option<Value>,
    #[serde(default)]
    set: OrderedMap,
    #[serde(default)]
    grid: OrderedMap,
    #[serde(default, deserialize_with = "zip_sets")]
    zip: Vec<OrderedMap>,
    baseline: Option<OrderedMap>,
    thresholds: Option<Vec<f64>>,
}

/// `"zip"`: one object of equally long lists, or a list of such objects.
fn zip_sets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<OrderedMap>, D::Error> {
    one_or_more_maps(
        deserializer,
        "an object of equally long lists, or a list of such objects",
    )
}

/// A validated study, with its runs already planned.
#[derive(Debug, Clone)]
pub struct Study {
    /// Folder name under the results root, and the `study` key of every run.
    pub name: String,
    pub description: String,
    /// Where the base config came from: a path as found, or `inline`.
    pub base_source: String,
    /// Dimensions of the grid, in file order: `zip` sets first, then `grid` keys.
    pub axes: Vec<Axis>,
    /// Key-path conditions picking the speed-up baseline group.
    pub baseline: Option<Vec<(String, Value)>>,
    /// Accuracy thresholds (fractions) for the table, if the study sets them.
    pub thresholds: Option<Vec<f64>>,
    /// Every run, in the order of the product (first axis slowest, last fastest).
    pub runs: Vec<PlannedRun>,
}

/// One dimension of the grid: a single `grid` key, or the keys of one `zip` set.
#[derive(Debug, Clone)]
pub struct Axis {
    pub keys: Vec<String>,
    /// One entry per point on the axis, holding one value per key.
    pub points: Vec<Vec<Value>>,
}

/// One run of a study: its name, the values the grid chose, and the full config to train.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub name: String,
    /// The grid values of this run, `(key.path, value)`, in axis order.
    pub overrides: Vec<(String, Value)>,
    /// Base config + `set` + overrides, with `study` and `name` filled in.
    pub config: Value,
}

/// What compare keeps of a study next to its runs (`<results>/<study>/study.json`), so that
/// `bn-exp compare <results>/<study>` rebuilds the same table without the study file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StudyRecord {
    pub study: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub base: String,
    #[serde(default)]
    pub baseline: Option<Map<String, Value>>,
    #[serde(default)]
    pub thresholds: Option<Vec<f64>>,
    #[serde(default)]
    pub runs: Vec<String>,
}

impl Study {
    /// The record saved as `study.json` in the study's results folder.
    pub fn record(&self) -> StudyRecord {
        StudyRecord {
            study: self.name.clone(),
            description: self.description.clone(),
            base: self.base_source.clone(),
            baseline: self
                .baseline
                .as_ref()
                .map(|spec| spec.iter().cloned().collect()),
            thresholds: self.thresholds.clone(),
            runs: self.runs.iter().map(|run| run.name.clone()).collect(),
        }
    }
}

/// Read, validate and expand a study file, and check every run's config as train will.
pub fn load_study(path: &Path) -> Result<Study> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read study file {}", path.display()))?;
    let study =
        parse_study(&text, path).with_context(|| format!("in study file {}", path.display()))?;
    check_run_configs(&study).with_context(|| format!("in study file {}", path.display()))?;
    Ok(study)
}

/// Parse every run's config with train's own parser and validation, so that a misspelt key or
/// a bad value is reported once, before anything trains, rather than as a failure of each run.
pub fn check_run_configs(study: &Study) -> Result<()> {
    for run in &study.runs {
        crate::config::config_from_value(run.config.clone())
            .with_context(|| format!("run {} would be refused by train", run.name))?;
    }
    Ok(())
}

/// Validate and expand the text of a study file; `path` names it and anchors a relative `base`.
pub fn parse_study(text: &str, path: &Path) -> Result<Study> {
    let value = crate::config::parse_json_strict(text).context("not a valid study file")?;
    let file: StudyFile = serde_path_to_error::deserialize(value)
        .map_err(|err| anyhow::anyhow!("{}: {}", err.path(), err.inner()))
        .context("not a valid study file")?;
    let name = match &file.study {
        Some(name) => name.clone(),
        None => path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    crate::config::check_folder_name(&name).context("bad `study` name")?;
    let (base, base_source) = resolve_base(file.base.as_ref(), path)?;

    let set = file.set.0;
    let axes = build_axes(&file.grid, &file.zip)?;
    check_keys(&set, &axes)?;
    let thresholds = file
        .thresholds
        .as_deref()
        .map(normalize_thresholds)
        .transpose()
        .context("bad `thresholds`")?;
    let baseline = file.baseline.map(|spec| spec.0);
    if let Some(spec) = &baseline {
        for (key, _) in spec {
            check_key_path(key).context("bad `baseline` key")?;
        }
    }

    let mut runs = plan_runs(&name, &base, &set, &axes)?;
    // Studies may use the `bn` key of earlier configs: resolve it the way train does, so that
    // the planned configs, the baseline and the run folders all speak of `norm`.
    for run in &mut runs {
        resolve_legacy_bn(&mut run.config).with_context(|| format!("run {}", run.name))?;
    }
    let baseline = baseline
        .map(resolve_legacy_spec)
        .transpose()
        .context("bad `baseline`")?;
    if let Some(spec) = &baseline {
        spec_picks_one_group(spec, &runs, "`baseline`")?;
    }
    Ok(Study {
        name,
        description: file.description.unwrap_or_default(),
        base_source,
        axes,
        baseline,
        thresholds,
        runs,
    })
}

/// The base config: an inline object, or a file found relative to the working directory, else
/// relative to the study file's folder or any folder above it (so `configs/x.json` works from
/// the repository root and from anywhere else).
pub fn resolve_base(base: Option<&Value>, study_path: &Path) -> Result<(Value, String)> {
    match base {
        None => bail!(
            "the study has no `base`: give a config file (\"base\": \"configs/mnist_mlp_sigmoid_bn.json\") \
or an inline config object"
        ),
        Some(Value::Object(object)) => Ok((Value::Object(object.clone()), "inline".to_string())),
        Some(Value::String(relative)) => {
            let candidates = base_candidates(relative, study_path);
            let Some(found) = candidates.iter().find(|candidate| candidate.is_file()) else {
                let tried: Vec<String> = candidates
                    .iter()
                    .map(|c| format!("  {}", c.display()))
                    .collect();
                bail!(
                    "base config `{relative}` not found; looked at:\n{}",
                    tried.join("\n")
                );
            };
            let text = std::fs::read_to_string(found)
                .with_context(|| format!("cannot read base config {}", found.display()))?;
            let config: Value = serde_json::from_str(&text)
                .with_context(|| format!("base config {} is not valid JSON", found.display()))?;
            ensure!(
                config.is_object(),
                "base config {} is {}, not a config object",
                found.display(),
                type_name(&config)
            );
            Ok((config, found.display().to_string()))
        }
        Some(other) => bail!(
            "`base` is {}: give a config file path or an inline config object",
            type_name(other)
        ),
    }
}

fn base_candidates(relative: &str, study_path: &Path) -> Vec<PathBuf> {
    let relative = Path::new(relative);
    if relative.is_absolute() {
        return vec![relative.to_path_buf()];
    }
    let mut candidates = vec![relative.to_path_buf()];
    let mut folder = study_path.parent();
    while let Some(dir) = folder {
        let candidate = dir.join(relative);
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
        folder = dir.parent();
    }
    candidates
}

/// Turn `zip` sets and `grid` keys into axes, checking that every value list is a non-empty
/// list and that zipped lists have equal lengths.
fn build_axes(grid: &OrderedMap, zip: &[OrderedMap]) -> Result<Vec<Axis>> {
    let mut axes = Vec::new();
    for (index, set) in zip.iter().enumerate() {
        ensure!(
            !set.0.is_empty(),
            "`zip` set {} is empty: list the keys that vary together, e.g. \
{{\"batch_size\": [30, 60], \"optim.lr\": [0.5, 1.0]}}",
            index + 1
        );
        let mut lists = Vec::new();
        for (key, value) in &set.0 {
            lists.push(value_list(key, value, "zip")?);
        }
        let len = lists[0].len();
        for ((key, _), list) in set.0.iter().zip(&lists) {
            ensure!(
                list.len() == len,
                "`zip` lists must be equally long: `{}` has {len} values but `{key}` has {}",
                set.0[0].0,
                list.len()
            );
        }
        axes.push(Axis {
            keys: set.0.iter().map(|(key, _)| key.clone()).collect(),
            points: (0..len)
                .map(|i| lists.iter().map(|list| list[i].clone()).collect())
                .collect(),
        });
    }
    for (key, value) in &grid.0 {
        let list = value_list(key, value, "grid")?;
        axes.push(Axis {
            keys: vec![key.clone()],
            points: list.into_iter().map(|v| vec![v]).collect(),
        });
    }
    for (index, axis) in axes.iter().enumerate() {
        let section = match index < zip.len() {
            true => "zip",
            false => "grid",
        };
        check_no_repeated_point(axis, section)?;
    }
    ensure!(
        !axes.is_empty(),
        "the study has an empty grid, so it has nothing to compare: add e.g. \
\"grid\": {{\"norm.kind\": [\"none\", \"batch\"], \"seed\": [0, 1, 2]}}"
    );
    Ok(axes)
}

/// No point of an axis is given twice: a repeated value would plan the same run twice under
/// two names, which every table and claim then counts as two runs (a seed listed twice, one
/// seed judged as two).
fn check_no_repeated_point(axis: &Axis, section: &str) -> Result<()> {
    for (i, point) in axis.points.iter().enumerate() {
        let Some(first) = axis.points[..i]
            .iter()
            .position(|earlier| same_point(earlier, point))
        else {
            continue;
        };
        let values: Vec<String> = point.iter().map(display_value).collect();
        let (what, keys) = match axis.keys.as_slice() {
            [key] => (format!("value {}", values[0]), format!("key `{key}`")),
            keys => (
                format!("values ({})", values.join(", ")),
                format!("set ({})", keys.join(", ")),
            ),
        };
        bail!(
            "`{section}` {keys} lists {what} twice (entries {} and {}): the same run would be \
             trained twice under two names and counted twice; list each value once",
            first + 1,
            i + 1
        );
    }
    Ok(())
}

/// Whether two points of an axis plan the same run: their values equal as configs compare
/// them ([`json_equal`]: `1` is `1.0`), whole numbers exactly (two seeds a float cannot tell
/// apart are still two seeds).
fn same_point(a: &[Value], b: &[Value]) -> bool {
    a.iter().zip(b).all(|(a, b)| match (a, b) {
        (Value::Number(x), Value::Number(y)) if !x.is_f64() && !y.is_f64() => {
            x.as_i128() == y.as_i128()
        }
        _ => json_equal(a, b),
    })
}

fn value_list(key: &str, value: &Value, section: &str) -> Result<Vec<Value>> {
    check_key_path(key).with_context(|| format!("bad `{section}` key"))?;
    match value {
        Value::Array(list) if !list.is_empty() => Ok(list.clone()),
        Value::Array(_) => bail!("`{section}` key `{key}` has an empty list of values"),
        other => bail!(
            "`{section}` key `{key}` must be a list of values, not {} ({other}); \
write [{other}] for a single value, or put it under \"set\"",
            type_name(other)
        ),
    }
}

/// Every key is set once and leaves `name`/`study` to compare. Whether a key exists in the
/// config is left to [`check_run_configs`], which asks train's own parser.
fn check_keys(set: &[(String, Value)], axes: &[Axis]) -> Result<()> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let set_keys = set.iter().map(|(key, _)| (key.as_str(), "set"));
    let axis_keys = axes
        .iter()
        .flat_map(|axis| axis.keys.iter().map(|key| (key.as_str(), "grid/zip")));
    for (key, section) in set_keys.chain(axis_keys) {
        check_key_path(key).with_context(|| format!("bad `{section}` key"))?;
        if let Some(first) = seen.insert(key, section) {
            bail!("key `{key}` is given twice (in `{first}` and in `{section}`)");
        }
        let top = key.split('.').next().unwrap_or(key);
        ensure!(
            !RESERVED_KEYS.contains(&top),
            "key `{key}` cannot be set by a study: compare names every run itself"
        );
    }
    Ok(())
}

/// Expand the grid: the Cartesian product of the axes, first axis slowest, each run's config
/// being base + `set` + its grid values.
fn plan_runs(
    study: &str,
    base: &Value,
    set: &[(String, Value)],
    axes: &[Axis],
) -> Result<Vec<PlannedRun>> {
    let mut fixed = base.clone();
    for (key, value) in set {
        set_path(&mut fixed, key, value.clone()).context("in `set`")?;
    }
    let points = cartesian_product(axes);
    let overrides: Vec<Vec<(String, Value)>> = points
        .iter()
        .map(|point| {
            axes.iter()
                .zip(point)
                .flat_map(|(axis, &i)| axis.keys.iter().cloned().zip(axis.points[i].clone()))
                .collect()
        })
        .collect();
    let names = run_names(axes, &overrides);
    overrides
        .into_iter()
        .zip(names)
        .map(|(overrides, name)| {
            let mut config = fixed.clone();
            for (key, value) in &overrides {
                set_path(&mut config, key, value.clone())?;
            }
            set_path(&mut config, "study", Value::String(study.to_string()))?;
            set_path(&mut config, "name", Value::String(name.clone()))?;
            Ok(PlannedRun {
                name,
                overrides,
                config,
            })
        })
        .collect()
}

/// Indices into each axis for every point of the product, last axis fastest.
fn cartesian_product(axes: &[Axis]) -> Vec<Vec<usize>> {
    axes.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.into_iter()
            .flat_map(|prefix| {
                (0..axis.points.len()).map(move |i| {
                    let mut point = prefix.clone();
                    point.push(i);
                    point
                })
            })
            .collect()
    })
}

/// Run names from the keys that vary (axes with more than one point): `placement-none_seed-0`.
/// Keys are shortened to their last segment unless two share it; values are made safe for file
/// names. Should two runs still get the same name (values that differ only in characters a file
/// name cannot hold), later ones get `-2`, `-3`, ... in grid order, which is stable.
pub fn run_names(axes: &[Axis], overrides: &[Vec<(String, Value)>]) -> Vec<String> {
    // A zip that names its conditions (`label`) is named by the label alone, not by every
    // setting the label stands for.
    let varying: Vec<String> = axes
        .iter()
        .filter(|axis| axis.points.len() > 1)
        .flat_map(|axis| match axis.keys.iter().find(|k| *k == "label") {
            Some(label) => vec![label.clone()],
            None => axis.keys.clone(),
        })
        .collect();
    let labels = short_names(&varying);
    let raw: Vec<String> = overrides
        .iter()
        .map(|run| {
            let parts: Vec<String> = varying
                .iter()
                .zip(&labels)
                .filter_map(|(key, label)| {
                    let (_, value) = run.iter().find(|(k, _)| k == key)?;
                    Some(format!("{label}-{}", name_fragment(value)))
                })
                .collect();
            if parts.is_empty() {
                SINGLE_RUN_NAME.to_string()
            } else {
                parts.join("_")
            }
        })
        .collect();
    make_unique(raw)
}

/// A value as part of a file name: lists of numbers as `100x100x100`, anything outside
/// `[A-Za-z0-9.+-]` replaced by `_`.
fn name_fragment(value: &Value) -> String {
    let text = match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(name_fragment)
            .collect::<Vec<_>>()
            .join("x"),
        other => display_value(other),
    };
    let mut fragment = String::new();
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+') {
            c
        } else {
            '_'
        };
        if !(c == '_' && fragment.ends_with('_')) {
            fragment.push(c);
        }
    }
    let fragment = fragment.trim_matches('_');
    if fragment.is_empty() {
        "_".to_string()
    } else {
        fragment.to_string()
    }
}

fn make_unique(names: Vec<String>) -> Vec<String> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut unique = Vec::with_capacity(names.len());
    for name in names {
        let mut candidate = name.clone();
        let mut count = 1;
        while taken.contains_key(&candidate) {
            count += 1;
            candidate = format!("{name}-{count}");
        }
        taken.insert(candidate.clone(), 1);
        unique.push(candidate);
    }
    unique
}

/// A spec (the study's `baseline`, a claim's group) must pick exactly one group of the planned
/// runs (runs equal up to the seed); `what` names it in the error.
pub fn spec_picks_one_group(
    spec: &[(String, Value)],
    runs: &[PlannedRun],
    what: &str,
) -> Result<()> {
    let picked: Vec<&PlannedRun> = runs
        .iter()
        .filter(|run| matches_spec(&run.config, spec))
        .collect();
    let conditions: Vec<Leaves> = picked
        .iter()
        .map(|run| condition(&run.config, &run.name))
        .collect();
    let groups = Grouping::new(&conditions).groups;
    let wanted = describe_spec(spec);
    match groups.len() {
        1 => Ok(()),
        0 => bail!("{what} {wanted} matches no run of the study"),
        n => {
            let examples: Vec<&str> = groups
                .iter()
                .map(|group| picked[group.members[0]].name.as_str())
                .collect();
            bail!(
                "{what} {wanted} matches {n} groups (e.g. runs {}); add keys until it picks one",
                examples.join(", ")
            )
        }
    }
}

/// A `(key.path, value)` spec with `bn.*` keys resolved into `norm.*` as in a config.
pub(crate) fn resolve_legacy_spec(spec: Vec<(String, Value)>) -> Result<Vec<(String, Value)>> {
    if !spec
        .iter()
        .any(|(key, _)| key == "bn" || key.starts_with("bn."))
    {
        return Ok(spec);
    }
    let mut value = Value::Object(Default::default());
    for (key, v) in &spec {
        set_path(&mut value, key, v.clone())?;
    }
    resolve_legacy_bn(&mut value)?;
    Ok(flatten(&value).into_iter().collect())
}
