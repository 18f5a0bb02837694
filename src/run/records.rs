//! What a run folder's files hold: one type per record, which train writes and
//! [`crate::run::Run::read`] reads back. Formats: `docs/formats.md`.
//!
//! A value the lenient reader may find missing, `null` or not finite is an `Option`; train
//! writes `Some` of what it measured (a NaN or an infinity is written as `null`, as the bare
//! float would be, so the bytes on disk are the same either way). Counts stay integers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`: one evaluation. Read back, a missing, `null` or non-finite
/// value is `None` (and an accuracy outside [0, 1]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// SGD steps done before the evaluation.
    pub step: u64,
    /// Mean mini-batch loss since the previous evaluation; None at step 0.
    pub train_loss: Option<f64>,
    /// Mean cross-entropy on the full test set.
    pub test_loss: Option<f64>,
    /// Accuracy on the full test set, a fraction in [0, 1].
    pub test_acc: Option<f64>,
    /// The learning rate of the last step.
    pub lr: Option<f64>,
    /// Wall seconds since the run started.
    pub elapsed_s: Option<f64>,
}

/// 15th, 50th and 85th percentiles over the probe batch, of the tracked unit or of a whole
/// layer. A record writes them among its own fields: `"p15": …, "p50": …, "p85": …`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p15: Option<f64>,
    pub p50: Option<f64>,
    pub p85: Option<f64>,
}

impl Percentiles {
    /// The three a probe computed, `[p15, p50, p85]`.
    pub fn of([p15, p50, p85]: [f64; 3]) -> Self {
        Self {
            p15: Some(p15),
            p50: Some(p50),
            p85: Some(p85),
        }
    }

    /// `[p15, p50, p85]`, when all three are usable.
    pub fn all(&self) -> Option<[f64; 3]> {
        Some([self.p15?, self.p50?, self.p85?])
    }
}

/// The tracked unit of one line of `activations.jsonl` (`probe.layer`, `probe.unit`) and its
/// percentiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackedUnit {
    pub layer: Option<usize>,
    pub unit: Option<usize>,
    #[serde(flatten)]
    pub percentiles: Percentiles,
}

impl TrackedUnit {
    /// `(layer, unit)`, when the record says both.
    pub fn position(&self) -> Option<(usize, usize)> {
        Some((self.layer?, self.unit?))
    }
}

/// Fixed-bin histogram over [lo, hi): `counts` of the values in each equal bin, `below` and
/// `above` of those outside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    pub below: u64,
    pub above: u64,
}

impl Histogram {
    /// Every value counted, including those outside `[lo, hi)`.
    pub fn total(&self) -> f64 {
        self.counts.iter().map(|&c| c as f64).sum::<f64>() + self.below as f64 + self.above as f64
    }
}

/// Pooled statistics of one hidden layer's pre-activations. Read back, only layers with a
/// usable histogram are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// The hidden layer, 0-based.
    pub layer: usize,
    /// Its units (for a conv layer, its channels).
    pub units: Option<usize>,
    #[serde(flatten)]
    pub percentiles: Percentiles,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub hist: Histogram,
}

/// One line of `activations.jsonl`: a probe of the hidden layers' pre-activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRecord {
    pub step: u64,
    pub tracked: TrackedUnit,
    pub layers: Vec<LayerStats>,
}

/// One line of `measures.jsonl`: Santurkar et al.'s measures on the training batch of `step`,
/// taken before that step's update (see `crate::measures` for the definitions). A value that
/// was not finite is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureRecord {
    pub step: u64,
    /// The step's learning rate.
    pub lr: f64,
    /// L(w) on the batch.
    pub loss: Option<f64>,
    /// ‖∇L(w)‖₂ over every parameter.
    pub grad_norm: Option<f64>,
    /// ICS as gradient change, per weight layer, input to output.
    pub ics: Vec<LayerIcs>,
    /// The step sizes η along the gradient (absolute, not multiples of `lr`).
    pub step_sizes: Vec<f64>,
    /// L(w − η·g) per step size.
    pub losses: Vec<Option<f64>>,
    pub loss_min: Option<f64>,
    pub loss_max: Option<f64>,
    /// loss_max − loss_min: how much the loss varies along the gradient.
    pub loss_range: Option<f64>,
    /// ‖∇L(w) − ∇L(w − η·g)‖₂ per step size (gradient predictiveness; smaller is better).
    pub grad_change: Vec<Option<f64>>,
    pub grad_change_min: Option<f64>,
    pub grad_change_max: Option<f64>,
    /// max over η of ‖∇L(w) − ∇L(w − η·g)‖₂ / ‖η·g‖₂.
    pub beta_smoothness: Option<f64>,
}

/// ICS as gradient change of one weight layer: G is its gradient at w, G′ after the layers
/// before it took the optimiser's update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerIcs {
    /// 0 for the first weight layer; the output layer is last.
    pub layer: usize,
    pub name: String,
    /// ‖G − G′‖₂.
    pub l2: Option<f64>,
    /// ‖G − G′‖₂ / ‖G‖₂.
    pub relative: Option<f64>,
    /// cos(G, G′).
    pub cosine: Option<f64>,
}

/// Test metrics from the population pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationResult {
    #[serde(deserialize_with = "nan_if_null")]
    pub test_acc: f64,
    /// NaN or infinite when the population statistics blew the net up; written as `null`.
    #[serde(deserialize_with = "nan_if_null")]
    pub test_loss: f64,
    pub batches: usize,
}

/// A float that JSON wrote as `null` (serde_json's form of NaN and infinity) reads back as NaN,
/// so that a summary holding one still reads.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nans_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 3], D::Error> {
    Ok(<[Option<f64>; 3]>::deserialize(d)?.map(|v| v.unwrap_or(f64::NAN)))
}

/// Mean absolute change of each tracked percentile between consecutive evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Over the whole run: [p15, p50, p85].
    #[serde(deserialize_with = "nans_if_null")]
    pub all: [f64; 3],
    /// Over evaluations after the first 10% of the steps: [p15, p50, p85].
    #[serde(deserialize_with = "nans_if_null")]
    pub after_10pct: [f64; 3],
    /// Width p85 − p15 of the tracked unit at the first and last evaluation after step 0.
    #[serde(deserialize_with = "nan_if_null")]
    pub spread_first: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub spread_last: f64,
}

/// How a run ended (`summary.json`'s `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Trained all its steps. (A summary without a status reads as finished.)
    #[default]
    Finished,
    /// Its loss became NaN or infinite (`diverged_at`).
    Diverged,
}

impl RunStatus {
    /// As `summary.json` writes it: `"finished"` or `"diverged"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::Diverged => "diverged",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which statistics gave a run's final numbers (`summary.json`'s `final_inference`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalInference {
    /// BN's moving averages (layers that keep statistics: BN, Batch Renorm, mean-only BN).
    Moving,
    /// The population statistics of the paper's Algorithm 2.
    Population,
    /// The test batch's own statistics.
    Batch,
    /// Each example's own statistics (Layer and Group Norm).
    PerExample,
    /// No statistics: no normalisation, or Weight Norm alone. (A summary without the field
    /// reads as this: it claims nothing about statistics.)
    #[default]
    None,
}

impl FinalInference {
    /// As `summary.json` writes it: `"moving"`, `"population"`, `"batch"`, `"per-example"` or
    /// `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moving => "moving",
            Self::Population => "population",
            Self::Batch => "batch",
            Self::PerExample => "per-example",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for FinalInference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `summary.json`. Reading fills a missing field with its default, so summaries written by
/// earlier versions of bn-exp (or by hand) still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub name: String,
    pub study: String,
    pub status: RunStatus,
    pub diverged_at: Option<u64>,
    pub steps: u64,
    pub final_test_acc: Option<f64>,
    pub final_test_loss: Option<f64>,
    /// Which statistics gave the final numbers.
    pub final_inference: FinalInference,
    pub best_test_acc: Option<f64>,
    pub best_step: Option<u64>,
    /// Threshold (as written, e.g. "0.97") → first evaluated step reaching it.
    pub steps_to: BTreeMap<String, Option<u64>>,
    pub population: Option<PopulationResult>,
    pub drift: Option<Drift>,
    pub wall_s: f64,
    pub steps_per_s: f64,
    pub backend: String,
    /// The device the run computed on: "CPU (flex, 2 threads)" or the GPU adapter's name.
    pub device: String,
    pub threads: usize,
    /// Identifies the invocation that wrote this summary (host-independent: process id and
    /// start time in nanoseconds). A summary left as it was keeps its id; one a later
    /// invocation rewrote gets a new one, however coarse the file system's clock.
    pub run_id: String,
}

impl Summary {
    /// True when the run's loss became NaN or infinite.
    pub fn diverged(&self) -> bool {
        self.status == RunStatus::Diverged
    }
}

/// A fresh [`Summary::run_id`] for this process.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enums_read_and_write_todays_strings() {
        for (status, text) in [
            (RunStatus::Finished, "finished"),
            (RunStatus::Diverged, "diverged"),
        ] {
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(status.to_string(), text);
        }
        for kind in [
            FinalInference::Moving,
            FinalInference::Population,
            FinalInference::Batch,
            FinalInference::PerExample,
            FinalInference::None,
        ] {
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(text, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<FinalInference>(&text).unwrap(), kind);
        }
        // A summary from before either field (or written by hand) still reads.
        let old: Summary = serde_json::from_str(r#"{"name": "old"}"#).unwrap();
        assert_eq!(old.status, RunStatus::Finished);
        assert_eq!(old.final_inference, FinalInference::None);
    }

    #[test]
    fn options_write_as_the_bare_values_did() {
        let record = EvalRecord {
            step: 3,
            train_loss: None,
            test_loss: Some(f64::NAN),
            test_acc: Some(0.5),
            lr: Some(1.0),
            elapsed_s: Some(0.25),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"step":3,"train_loss":null,"test_loss":null,"test_acc":0.5,"lr":1.0,"elapsed_s":0.25}"#
        );
        let hist = Histogram {
            lo: -1.0,
            hi: 1.0,
            counts: vec![0, 3],
            below: 1,
            above: 0,
        };
        assert_eq!(
            serde_json::to_string(&hist).unwrap(),
            r#"{"lo":-1.0,"hi":1.0,"counts":[0,3],"below":1,"above":0}"#
        );
        assert_eq!(hist.total(), 4.0);
    }
}
