//! Groups as figures draw them: [`crate::groups`]'s groups of runs (one condition across
//! seeds, in its order, with its labels, the same as `compare`'s tables), each with a colour
//! from its place in that order, so one group has one colour in every figure; and the seed
//! order, file names and statistics across seeds the figures share.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::style::{Colour, palette_colour};
use crate::groups::{Grouping, Leaves, run_condition};
use crate::run::Run;

/// Runs of one configuration, across seeds.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub colour: Colour,
    pub condition: Leaves,
    /// Indices into the run list, ordered by seed (runs without a seed last, by name).
    pub runs: Vec<usize>,
}

/// Group runs by condition ([`crate::groups`]), and colour the groups in their order. When no
/// setting varies, a figure names the one group by its first run rather than `all`.
pub fn group_runs(runs: &[Run]) -> Vec<Group> {
    let conditions: Vec<Leaves> = runs.iter().map(run_condition).collect();
    let grouping = Grouping::new(&conditions);
    let nothing_varies = grouping.varying.is_empty();
    grouping
        .groups
        .into_iter()
        .enumerate()
        .map(|(index, group)| {
            let mut members = group.members;
            members.sort_by(|&a, &b| compare_seeds(&runs[a], &runs[b]));
            let label = if nothing_varies && !crate::groups::is_configless(&group.condition) {
                runs[members[0]].name.clone()
            } else {
                group.label
            };
            Group {
                label,
                colour: palette_colour(index),
                condition: group.condition,
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
    use serde_json::{Value, json};

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
            damage: Vec::new(),
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
