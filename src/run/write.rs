//! Writing a run folder's files: JSON Lines appended a whole line at a time, and whole files
//! replaced atomically, so that a reader (or a crash) never sees half of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::atomic::{write_json_atomic, write_text_atomic};
use super::events::EventAppender;
use super::files::{ACTIVATIONS_FILE, MEASURES_FILE, METRICS_FILE, SUMMARY_FILE};
use super::records::{ActivationRecord, EvalRecord, MeasureRecord, Summary};

/// Appends JSON lines to a file, flushing each line so a reader (or a crash) sees whole lines.
pub struct JsonlWriter {
    file: File,
    path: PathBuf,
}

impl JsonlWriter {
    /// Open for appending, creating the file if needed.
    pub fn append(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn write<T: Serialize>(&mut self, row: &T) -> Result<()> {
        let mut line = serde_json::to_string(row)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }
}

/// The record files a training run appends to: `metrics.jsonl`, `activations.jsonl` and, when
/// the run takes measures, `measures.jsonl`.
pub struct RecordWriters {
    metrics: JsonlWriter,
    activations: JsonlWriter,
    measures: Option<JsonlWriter>,
    /// TensorBoard's view of the same records, each event appended beside its line.
    events: EventAppender,
}

impl RecordWriters {
    /// Open the record files of `run_dir` for appending; `measures.jsonl` only with `measures`.
    /// The event file is first written whole from the records already there.
    pub fn open(run_dir: &Path, measures: bool) -> Result<Self> {
        Ok(Self {
            events: EventAppender::open(run_dir)?,
            metrics: JsonlWriter::append(&run_dir.join(METRICS_FILE))?,
            activations: JsonlWriter::append(&run_dir.join(ACTIVATIONS_FILE))?,
            measures: match measures {
                true => Some(JsonlWriter::append(&run_dir.join(MEASURES_FILE))?),
                false => None,
            },
        })
    }

    /// One line of `metrics.jsonl`.
    pub fn eval(&mut self, record: &EvalRecord) -> Result<()> {
        self.metrics.write(record)?;
        self.events.eval(record)
    }

    /// One line of `activations.jsonl`.
    pub fn activations(&mut self, record: &ActivationRecord) -> Result<()> {
        self.activations.write(record)?;
        self.events.probe(record)
    }

    /// One line of `measures.jsonl` (an error if the writers were opened without it).
    pub fn measures(&mut self, record: &MeasureRecord) -> Result<()> {
        self.measures
            .as_mut()
            .context("measures are on but measures.jsonl is not open")?
            .write(record)?;
        self.events.measures(record)
    }
}

/// Write `summary.json` into `run_dir`: the run is done.
pub fn write_summary(run_dir: &Path, summary: &Summary) -> Result<()> {
    write_json_atomic(&run_dir.join(SUMMARY_FILE), summary)
}

/// Write each `(name, text)` into `dir` (created if needed); returns the paths written.
pub fn write_text_files(dir: &Path, files: &[(&str, String)]) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            write_text_atomic(&path, text)?;
            Ok(path)
        })
        .collect()
}
