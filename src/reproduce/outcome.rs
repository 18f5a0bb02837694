//! What a reproduction is made of and produces, shared by the run (`reproduce.rs`) and the
//! report (`report.rs`): the mode, each study as planned and as compared, and each claim's and
//! test's outcome.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::claims::Metric;
use super::verdict::{Better, Judged, Verdict};
use crate::compare::{Comparison, RunRecord, Study, matches_spec};

/// Quick or full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Quick,
    Full,
}

/// A study as this mode runs it: its (possibly derived) file, its runs, and their folder.
pub struct PlannedStudy {
    pub study: Study,
    pub file: PathBuf,
    pub dir: PathBuf,
    /// The study file as written in the repository.
    pub source: PathBuf,
}

/// A study's finished runs as `compare` read and compared them.
pub struct StudyRuns {
    pub name: String,
    pub records: Vec<RunRecord>,
    /// `None` when no run finished.
    pub comparison: Option<Comparison>,
}

impl StudyRuns {
    /// The label `compare` gave the group `spec` picks ([`check_groups`] made sure it picks
    /// one); `None` when none of its runs finished.
    pub(super) fn group_label(&self, spec: &[(String, Value)]) -> Option<&str> {
        let run = self
            .records
            .iter()
            .find(|r| matches_spec(r.config(), spec))?;
        let group = self
            .comparison
            .as_ref()?
            .groups
            .iter()
            .find(|g| g.runs.iter().any(|r| r.name == run.name()))?;
        Some(&group.label)
    }
}

/// One test, judged.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub setting: String,
    pub study: String,
    pub metric: Metric,
    pub metric_name: String,
    pub threshold: Option<f64>,
    pub better: Better,
    pub min_effect: f64,
    pub label_a: String,
    pub label_b: String,
    pub values_a: Vec<Option<f64>>,
    pub values_b: Vec<Option<f64>>,
    pub judged: Option<Judged>,
    /// Set when the test could not be judged (study not run in this mode, no runs).
    pub note: Option<String>,
    /// The figure that shows it, if drawn.
    pub figure: Option<PathBuf>,
}

impl TestOutcome {
    pub fn verdict(&self) -> Verdict {
        self.judged
            .as_ref()
            .map_or(Verdict::Inconclusive, |j| j.verdict)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimOutcome {
    /// The claim's place in the claims file, from 1: its number in every report, also one
    /// that `--studies` leaves claims out of.
    pub number: usize,
    pub id: String,
    pub statement: String,
    pub source: String,
    /// The commit that added the claim to the claims file, so a reader can check that it was
    /// written before the runs that judge it (`git log` on the file; "unknown" outside a
    /// checkout).
    pub registered: String,
    pub verdict: Verdict,
    pub tests: Vec<TestOutcome>,
    /// The full report's verdict, on a quick report.
    pub full_verdict: Option<String>,
}
