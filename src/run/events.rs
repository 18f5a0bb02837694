//! TensorBoard's view of a run: `events.out.tfevents.bn-exp` in the run folder, which `tensorboard --logdir
//! results/` reads (and with it W&B's and Aim's TensorBoard sync), so a bn-exp run can be laid
//! over other runs, zoomed, and watched while it trains.
//!
//! The event file is made from the run's record files (`metrics.jsonl`, `activations.jsonl`,
//! `measures.jsonl`, `config.json`, `summary.json`) as [`Run::read`] reads them: written whole
//! (to a temporary file, then renamed) when training starts or resumes, after the resume has
//! trimmed the records, then each new record's event appended as the record is written
//! ([`EventAppender`]), and written whole again at the end. So it says what the records say,
//! and never holds a step twice or a step the records lost. `bn-exp export --tensorboard` makes it for runs of older
//! versions the same way.
//!
//! What it holds, by tag: `accuracy/test` and `loss/train`, `loss/test`, `learning rate` per
//! evaluation; the final `accuracy/test (population statistics)`; the Figure 1 (b, c)
//! percentiles of the tracked unit, `tracked unit/p15|p50|p85`, and each hidden layer's
//! `layer N/p15|p50|p85` and histogram `activations/layer N` per probe; Santurkar et al.'s
//! measures (`measures/...`, `ics/<layer>`) when taken; and the resolved config as text
//! (`config`).
//!
//! The format is TensorFlow's `Event` protocol buffer in TFRecord framing, encoded here by hand
//! (about a dozen fields; no crate for it builds offline without protoc):
//!
//! ```text
//! record  = u64 length (LE) · u32 masked CRC-32C(length) · data · u32 masked CRC-32C(data)
//! masked  = ((crc >> 15) | (crc << 17)) + 0xa282ead8
//! Event   = 1 wall_time: double · 2 step: int64 · 3 file_version: string · 5 summary: Summary
//! Summary = 1 value: repeated Value
//! Value   = 1 tag: string · 2 simple_value: float · 5 histo: HistogramProto
//!         · 8 tensor: TensorProto (text) · 9 metadata: SummaryMetadata
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::atomic::write_bytes_atomic;
use super::files::{CONFIG_FILE, EVENTS_FILE, is_run_folder, run_subfolders};
use super::read::Run;
use super::records::{ActivationRecord, EvalRecord, Histogram, MeasureRecord, Percentiles};

/// Write `dir`'s event file from its record files, replacing any older one.
pub fn write_events(dir: &Path) -> Result<PathBuf> {
    let run = Run::read(dir);
    let path = dir.join(EVENTS_FILE);
    write_bytes_atomic(&path, &event_file(&run, start_time(dir)))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The event file of a run that is training: written whole from the records when it opens
/// (after a resume's trim, so it holds what they hold), then each record's event appended as
/// train writes the record, so an evaluation costs one event, not a rewrite. [`write_events`]
/// makes it whole again at the end.
pub struct EventAppender {
    file: std::fs::File,
    path: PathBuf,
    start: f64,
    /// The last evaluation's `elapsed_s`: the wall time of the probes and measures after it.
    elapsed: f64,
}

impl EventAppender {
    /// Write `dir`'s event file from its records and open it to append to.
    pub fn open(dir: &Path) -> Result<Self> {
        let run = Run::read(dir);
        let start = start_time(dir);
        let path = dir.join(EVENTS_FILE);
        write_bytes_atomic(&path, &event_file(&run, start))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        let elapsed = run.metrics.iter().rev().find_map(|m| m.elapsed_s);
        Ok(Self {
            file,
            path,
            start,
            elapsed: elapsed.unwrap_or(0.0),
        })
    }

    /// The event of an evaluation.
    pub fn eval(&mut self, m: &EvalRecord) -> Result<()> {
        self.elapsed = m.elapsed_s.unwrap_or(self.elapsed);
        self.append(m.step, &eval_values(m))
    }

    /// The event of a probe.
    pub fn probe(&mut self, a: &ActivationRecord) -> Result<()> {
        self.append(a.step, &probe_values(a))
    }

    /// The event of a probe of the measures.
    pub fn measures(&mut self, m: &MeasureRecord) -> Result<()> {
        self.append(m.step, &measure_values(m))
    }

    fn append(&mut self, step: u64, values: &[Vec<u8>]) -> Result<()> {
        use std::io::Write;
        if values.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        record(
            &mut bytes,
            &summary_event(self.start + self.elapsed, step, values),
        );
        self.file
            .write_all(&bytes)
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }
}

/// Write the event file of every run `inputs` name: a run folder stands for itself, any other
/// folder for the runs inside it, or inside its subfolders (a results folder of studies).
/// Returns the files written; a folder with no run in it is an error that names it.
pub fn export_events(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for input in inputs {
        let runs = if is_run_folder(input) {
            vec![input.clone()]
        } else {
            let mut runs = run_subfolders(input)?;
            if runs.is_empty() {
                for study in subfolders(input)? {
                    runs.extend(run_subfolders(&study)?);
                }
            }
            runs
        };
        anyhow::ensure!(
            !runs.is_empty(),
            "{} holds no run folder (nor do its subfolders)",
            input.display()
        );
        for run in runs {
            written.push(write_events(&run)?);
        }
    }
    Ok(written)
}

/// The folders directly inside `dir` that are not hidden, in name order.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// When the run started, in seconds since 1970, for the events' wall times (an evaluation's is
/// this plus its `elapsed_s`): `config.json`'s modification time, which a run writes once when
/// it starts; 0 when it cannot be read.
fn start_time(dir: &Path) -> f64 {
    std::fs::metadata(dir.join(CONFIG_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The whole event file of `run`, its events in step order (TensorBoard takes a step that goes
/// back for a restarted run and drops what came after it).
pub fn event_file(run: &Run, start: f64) -> Vec<u8> {
    let mut events: Vec<(u64, f64, Vec<Vec<u8>>)> = Vec::new();
    let mut event = |step: u64, elapsed: f64, values: Vec<Vec<u8>>| {
        if !values.is_empty() {
            events.push((step, elapsed, values));
        }
    };
    let mut first = Vec::new();
    double_field(&mut first, 1, start);
    varint_field(&mut first, 2, 0);
    bytes_field(&mut first, 3, b"brain.Event:2");
    let mut out = Vec::new();
    record(&mut out, &first);
    if run.config.is_object() {
        let text = serde_json::to_string_pretty(&run.config).unwrap_or_default();
        event(0, 0.0, vec![text_value("config", &text)]);
    }
    let mut last_elapsed = 0.0;
    for m in &run.metrics {
        last_elapsed = m.elapsed_s.unwrap_or(last_elapsed);
        event(m.step, last_elapsed, eval_values(m));
    }
    if let Some(population) = run.summary.as_ref().and_then(|s| s.population.as_ref()) {
        let step = run.summary.as_ref().map_or(0, |s| s.steps);
        let tag = "accuracy/test (population statistics)";
        event(
            step,
            last_elapsed,
            vec![scalar_value(tag, population.test_acc)],
        );
    }
    for a in &run.activations {
        event(a.step, elapsed_at(run, a.step), probe_values(a));
    }
    for m in &run.measures {
        event(m.step, elapsed_at(run, m.step), measure_values(m));
    }
    // Stable: at one step, the evaluation, then the population pass, the probe, the measures.
    events.sort_by_key(|e| e.0);
    for (step, elapsed, values) in events {
        record(&mut out, &summary_event(start + elapsed, step, &values));
    }
    out
}

/// An evaluation's scalars.
fn eval_values(m: &EvalRecord) -> Vec<Vec<u8>> {
    scalar_values(&[
        ("accuracy/test", m.test_acc),
        ("loss/train", m.train_loss),
        ("loss/test", m.test_loss),
        ("learning rate", m.lr),
    ])
}

/// A probe's percentiles (the tracked unit's and each layer's) and each layer's histogram.
fn probe_values(a: &ActivationRecord) -> Vec<Vec<u8>> {
    let mut values = percentile_values("tracked unit", &a.tracked.percentiles);
    for layer in &a.layers {
        let name = format!("layer {}", layer.layer + 1);
        values.extend(percentile_values(&name, &layer.percentiles));
        values.push(histogram_value(&format!("activations/{name}"), &layer.hist));
    }
    values
}

/// Santurkar et al.'s measures of one probe, with each weight layer's relative ICS.
fn measure_values(m: &MeasureRecord) -> Vec<Vec<u8>> {
    let mut values = scalar_values(&[
        ("measures/loss", m.loss),
        ("measures/gradient norm", m.grad_norm),
        ("measures/loss range along the gradient", m.loss_range),
        ("measures/gradient change (max)", m.grad_change_max),
        ("measures/beta-smoothness", m.beta_smoothness),
    ]);
    for ics in &m.ics {
        if let Some(v) = ics.relative {
            values.push(scalar_value(&format!("ics/{} (relative)", ics.name), v));
        }
    }
    values
}

/// The wall time of `step`, from the last evaluation at or before it.
fn elapsed_at(run: &Run, step: u64) -> f64 {
    run.metrics
        .iter()
        .take_while(|m| m.step <= step)
        .filter_map(|m| m.elapsed_s)
        .last()
        .unwrap_or(0.0)
}

/// `name/p15`, `name/p50` and `name/p85`, those that are known.
fn percentile_values(name: &str, p: &Percentiles) -> Vec<Vec<u8>> {
    let tags = ["p15", "p50", "p85"].map(|q| format!("{name}/{q}"));
    scalar_values(&[(&tags[0], p.p15), (&tags[1], p.p50), (&tags[2], p.p85)])
}

/// A scalar value for each tag whose value is known.
fn scalar_values(tagged: &[(&str, Option<f64>)]) -> Vec<Vec<u8>> {
    tagged
        .iter()
        .filter_map(|&(tag, v)| Some(scalar_value(tag, v?)))
        .collect()
}

/// An `Event` at `wall_time` and `step` holding a `Summary` of `values`.
fn summary_event(wall_time: f64, step: u64, values: &[Vec<u8>]) -> Vec<u8> {
    let mut summary = Vec::new();
    for value in values {
        bytes_field(&mut summary, 1, value);
    }
    let mut event = Vec::new();
    double_field(&mut event, 1, wall_time);
    varint_field(&mut event, 2, step);
    bytes_field(&mut event, 5, &summary);
    event
}

/// A `Summary.Value` with a float `simple_value`.
fn scalar_value(tag: &str, v: f64) -> Vec<u8> {
    let mut value = Vec::new();
    bytes_field(&mut value, 1, tag.as_bytes());
    value.push(2 << 3 | 5);
    value.extend_from_slice(&(v as f32).to_le_bytes());
    value
}

/// A `Summary.Value` with a `HistogramProto` of bn-exp's fixed-bin histogram: one bucket per
/// bin (right edges), with the values below `lo` in a first bucket ending at `lo` and those
/// above `hi` in a last one; min, max, sum and sum of squares are taken at the bins' centres.
fn histogram_value(tag: &str, h: &Histogram) -> Vec<u8> {
    let bins = h.counts.len().max(1);
    let width = (h.hi - h.lo) / bins as f64;
    let mut limits = vec![h.lo];
    let mut counts = vec![h.below as f64];
    for (i, &c) in h.counts.iter().enumerate() {
        limits.push(h.lo + width * (i + 1) as f64);
        counts.push(c as f64);
    }
    limits.push(f64::MAX);
    counts.push(h.above as f64);
    let centre = |i: usize| h.lo + width * (i as f64 + 0.5);
    let (mut num, mut sum, mut squares) = (0.0, 0.0, 0.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut take = |x: f64, n: f64| {
        if n > 0.0 {
            num += n;
            sum += x * n;
            squares += x * x * n;
            min = min.min(x);
            max = max.max(x);
        }
    };
    take(h.lo, h.below as f64);
    for (i, &c) in h.counts.iter().enumerate() {
        take(centre(i), c as f64);
    }
    take(h.hi, h.above as f64);
    if num == 0.0 {
        (min, max) = (0.0, 0.0);
    }
    let mut histo = Vec::new();
    double_field(&mut histo, 1, min);
    double_field(&mut histo, 2, max);
    double_field(&mut histo, 3, num);
    double_field(&mut histo, 4, sum);
    double_field(&mut histo, 5, squares);
    packed_doubles(&mut histo, 6, &limits);
    packed_doubles(&mut histo, 7, &counts);
    let mut value = Vec::new();
    bytes_field(&mut value, 1, tag.as_bytes());
    bytes_field(&mut value, 5, &histo);
    value
}

/// A `Summary.Value` that TensorBoard's text plugin shows: a string tensor with the plugin's
/// name in its metadata.
fn text_value(tag: &str, text: &str) -> Vec<u8> {
    let mut plugin = Vec::new();
    bytes_field(&mut plugin, 1, b"text");
    let mut metadata = Vec::new();
    bytes_field(&mut metadata, 1, &plugin);
    let mut tensor = Vec::new();
    varint_field(&mut tensor, 1, 7); // DT_STRING
    bytes_field(&mut tensor, 2, &[]); // a scalar: no dimensions
    bytes_field(&mut tensor, 8, text.as_bytes());
    let mut value = Vec::new();
    bytes_field(&mut value, 1, tag.as_bytes());
    bytes_field(&mut value, 8, &tensor);
    bytes_field(&mut value, 9, &metadata);
    value
}

// Protocol buffer wire format: a key (field << 3 | wire type), then the value.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

fn double_field(out: &mut Vec<u8>, field: u32, v: f64) {
    varint(out, u64::from(field) << 3 | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field) << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packed_doubles(out: &mut Vec<u8>, field: u32, values: &[f64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes_field(out, field, &bytes);
}

/// One TFRecord: the length and the data, each followed by its masked CRC-32C.
fn record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: event files are small.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check values of CRC-32C (RFC 3720, appendix B.4, and the catalogue's "123456789").
    #[test]
    fn crc32c_matches_its_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn varints_and_records_have_their_wire_layout() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xAC, 0x02]);
        let mut rec = Vec::new();
        record(&mut rec, b"abc");
        assert_eq!(rec.len(), 8 + 4 + 3 + 4);
        assert_eq!(&rec[..8], &3u64.to_le_bytes());
        assert_eq!(&rec[12..15], b"abc");
    }
}
