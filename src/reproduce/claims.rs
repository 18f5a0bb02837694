//! `configs/claims.json`: the claims, the tests that judge them, and the quick mode's settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::verdict::{Better, Bootstrap};
use crate::config::parse_json_strict;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsFile {
    pub description: String,
    pub bootstrap: Bootstrap,
    pub quick: QuickSettings,
    pub claims: Vec<Claim>,
}

/// What `--quick` changes: the seeds, and per study the settings laid over every run (a
/// `steps_fraction` scales each run's own steps and evaluation interval). Studies not listed
/// are not run in quick mode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuickSettings {
    pub seeds: Vec<u64>,
    pub note: String,
    pub set: BTreeMap<String, Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub id: String,
    pub statement: String,
    pub source: String,
    pub tests: Vec<ClaimTest>,
}

/// The metric a test compares, per seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The last evaluation's test accuracy (a fraction).
    FinalAcc,
    /// The first evaluated step at or above `threshold`.
    StepsTo,
    /// The tracked unit's drift (Figure 1 b, c), mean of its three percentiles.
    Drift,
    /// ICS as gradient change: ‖G−G′‖/‖G‖, mean over the weight layers after the first.
    Ics,
}

impl Metric {
    pub fn describe(self, threshold: Option<f64>) -> String {
        match self {
            Metric::FinalAcc => "final test accuracy".to_string(),
            Metric::StepsTo => format!(
                "steps to {} test accuracy",
                threshold.map_or("?".to_string(), crate::compare::percent_label)
            ),
            Metric::Drift => "Figure 1 drift (mean of p15, p50, p85)".to_string(),
            Metric::Ics => "ICS as gradient change, ‖G−G′‖/‖G‖".to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimTest {
    pub setting: String,
    pub study: String,
    pub metric: Metric,
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Config key paths and values that pick group A, and group B.
    pub a: Map<String, Value>,
    pub b: Map<String, Value>,
    pub better: Better,
    pub min_effect: f64,
    pub min_seeds: usize,
}

impl ClaimsFile {
    /// Every study the tests use, in first-use order.
    pub fn studies(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for test in self.claims.iter().flat_map(|c| &c.tests) {
            if !out.contains(&test.study) {
                out.push(test.study.clone());
            }
        }
        out
    }
}

/// The most bootstrap resamples a claims file may ask for. The CI's ends are resample
/// quantiles, and their Monte Carlo error shrinks as 1/√resamples: at a million, the 2.5%
/// quantile's own level is known to ±0.0003 (95%), far below the seed-to-seed spread the CI
/// describes, and with the 2 or 3 seeds of the shipped studies there are only 3⁶ = 729
/// distinct resamples anyway. A million costs 8 MB and about a second per test; an unbounded
/// value was allocated as asked (a large one aborted bn-exp before anything was judged).
pub const MAX_RESAMPLES: usize = 1_000_000;

/// The fewest bootstrap resamples a claims file may ask for: fewer leave the CI's ends to a
/// handful of draws.
pub const MIN_RESAMPLES: usize = 100;

/// Read and check the claims file; each study must have a file in `studies_dir`. Every error
/// names the file and the key.
pub fn load_claims(path: &Path, studies_dir: &Path) -> Result<ClaimsFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the claims file {}", path.display()))?;
    parse_claims(&text, studies_dir)
        .with_context(|| format!("{} is not a valid claims file", path.display()))
}

/// Parse and check the text of a claims file (as [`load_claims`], without naming the file):
/// strict JSON (no key given twice), the known keys with their types, and the rules below.
pub fn parse_claims(text: &str, studies_dir: &Path) -> Result<ClaimsFile> {
    let value = parse_json_strict(text)?;
    // serde would read a struct from a list too, and name only an index.
    ensure!(
        value.is_object(),
        "a claims file is an object of description, bootstrap, quick and claims, not {}",
        match value {
            Value::Array(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        }
    );
    let claims: ClaimsFile = serde_path_to_error::deserialize(value).map_err(|err| {
        match err.path().to_string().as_str() {
            "." => anyhow::anyhow!(
                "{} (a claims file is an object of description, bootstrap, quick and claims)",
                err.inner()
            ),
            path => anyhow::anyhow!("{path}: {}", err.inner()),
        }
    })?;
    check_claims(&claims, studies_dir)?;
    Ok(claims)
}

/// The rules a claims file's values must follow, each error naming its key: one seed or one
/// claim id listed twice would be counted twice (a single seed judged as two, a claim
/// reported twice), and resamples are bounded ([`MIN_RESAMPLES`], [`MAX_RESAMPLES`]).
fn check_claims(claims: &ClaimsFile, studies_dir: &Path) -> Result<()> {
    ensure!(
        !claims.claims.is_empty(),
        "claims: the file holds no claims"
    );
    let resamples = claims.bootstrap.resamples;
    ensure!(
        (MIN_RESAMPLES..=MAX_RESAMPLES).contains(&resamples),
        "bootstrap.resamples is {resamples}: it must be from {MIN_RESAMPLES} to {MAX_RESAMPLES} \
         (more draws than that no longer change the CI's ends a reader sees)"
    );
    let mut ids = BTreeMap::new();
    for (i, claim) in claims.claims.iter().enumerate() {
        ensure!(
            !claim.id.trim().is_empty(),
            "claims[{i}].id is empty: every claim needs an id"
        );
        if let Some(first) = ids.insert(claim.id.as_str(), i) {
            bail!(
                "claims[{i}].id is \"{}\", the id of claims[{first}] too: each claim needs an id \
                 of its own, or the report lists it twice",
                claim.id
            );
        }
        ensure!(
            !claim.tests.is_empty(),
            "claims[{i}].tests: claim {} has no test",
            claim.id
        );
        for (j, test) in claim.tests.iter().enumerate() {
            let what = format!(
                "claims[{i}].tests[{j}] (claim {}, {})",
                claim.id, test.setting
            );
            ensure!(
                study_file(studies_dir, &test.study).is_file(),
                "{what}: study: no study file {}",
                study_file(studies_dir, &test.study).display()
            );
            if test.metric == Metric::StepsTo {
                match test.threshold {
                    Some(t) if t > 0.0 && t <= 1.0 => {}
                    _ => bail!("{what}: threshold: steps_to needs a threshold in (0, 1]"),
                }
            }
            ensure!(
                test.min_seeds >= 2,
                "{what}: min_seeds must be at least 2 (one seed has no spread to judge)"
            );
            ensure!(
                test.min_effect.is_finite() && test.min_effect >= 0.0,
                "{what}: min_effect must be a finite number of at least 0"
            );
        }
    }
    for study in claims.quick.set.keys() {
        ensure!(
            claims.studies().contains(study),
            "quick.set names {study}, which no claim uses"
        );
    }
    ensure!(!claims.quick.seeds.is_empty(), "quick.seeds is empty");
    let mut seeds = BTreeMap::new();
    for (i, seed) in claims.quick.seeds.iter().enumerate() {
        if let Some(first) = seeds.insert(seed, i) {
            bail!(
                "quick.seeds lists seed {seed} twice (at {first} and {i}): its runs would be \
                 trained once and counted as two seeds, which min_seeds is there to prevent"
            );
        }
    }
    Ok(())
}

pub fn study_file(studies_dir: &Path, study: &str) -> PathBuf {
    studies_dir.join(format!("{study}.json"))
}
