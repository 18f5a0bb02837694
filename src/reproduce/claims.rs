//! `configs/claims.json`: the claims, the tests that judge them, and the quick mode's settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::verdict::{Better, Bootstrap};

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

/// Read and check the claims file; each study must have a file in `studies_dir`.
pub fn load_claims(path: &Path, studies_dir: &Path) -> Result<ClaimsFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the claims file {}", path.display()))?;
    let claims: ClaimsFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid claims file", path.display()))?;
    ensure!(
        !claims.claims.is_empty(),
        "{} holds no claims",
        path.display()
    );
    ensure!(
        claims.bootstrap.resamples >= 100,
        "bootstrap.resamples must be at least 100"
    );
    for claim in &claims.claims {
        ensure!(!claim.tests.is_empty(), "claim {} has no test", claim.id);
        for test in &claim.tests {
            let what = format!("claim {} ({})", claim.id, test.setting);
            ensure!(
                study_file(studies_dir, &test.study).is_file(),
                "{what}: no study file {}",
                study_file(studies_dir, &test.study).display()
            );
            if test.metric == Metric::StepsTo {
                match test.threshold {
                    Some(t) if t > 0.0 && t <= 1.0 => {}
                    _ => bail!("{what}: steps_to needs a threshold in (0, 1]"),
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
    Ok(claims)
}

pub fn study_file(studies_dir: &Path, study: &str) -> PathBuf {
    studies_dir.join(format!("{study}.json"))
}
