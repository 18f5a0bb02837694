//! The run folder: what `bn-exp train` writes into it, and the one reader that `train`,
//! `compare` and `plot` use to read it back. Formats: `docs/formats.md`.
//!
//! A run folder holds `config.json` (the resolved config), `metrics.jsonl` (one line per
//! evaluation), `activations.jsonl` (one line per probe), `summary.json` (once the run has
//! finished or diverged) and `checkpoint/`. [`Run::read`] reads all of it and never gives up on
//! damage: plots and tables are most wanted exactly when a run diverged, was killed mid-write or
//! is still going. A line cut mid-JSON, a `null`, a stray `NaN` or an accuracy outside [0, 1]
//! each become a note in [`Run::notes`] and the rest is kept.
//!
//! It also gives the one definition of each number that tables and figures report about a
//! run: the final accuracy ([`Run::final_acc`], the last evaluation, with the moving averages
//! during training), the population accuracy ([`Run::population_acc`], Algorithm 2 after
//! training), the steps to a threshold ([`first_step_reaching`]), the drift of the tracked
//! unit ([`drift`]), and mean ± sample standard deviation over runs ([`mean_std`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The resolved config the run was started with.
pub const CONFIG_FILE: &str = "config.json";
/// One line per evaluation.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// One line per probe of the hidden layers' pre-activations.
pub const ACTIVATIONS_FILE: &str = "activations.jsonl";
/// One line per probe of Santurkar et al.'s optimisation measures (`measures.every`).
pub const MEASURES_FILE: &str = "measures.jsonl";
/// Written once the run has finished or diverged.
pub const SUMMARY_FILE: &str = "summary.json";
/// The resumable checkpoint.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// Where `compare` sends a child run's stdout and stderr.
pub const LOG_FILE: &str = "train.log";

/// Slack when testing `test_acc >= threshold`. Accuracies are multiples of 1/10000 (MNIST and
/// CIFAR-10 have 10000 test images), but a target can be a *mean* of accuracies, whose float
/// sum can land a hair above the very value a run reached. 1e-9 is far below 1/10000.
const ACC_TOLERANCE: f64 = 1e-9;

// ---------------------------------------------------------------------------------------------
// What train writes

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    /// Mean mini-batch loss since the previous evaluation; None at step 0.
    pub train_loss: Option<f64>,
    pub test_loss: f64,
    pub test_acc: f64,
    pub lr: f64,
    pub elapsed_s: f64,
}

/// Percentiles of the tracked unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedUnit {
    pub layer: usize,
    pub unit: usize,
    pub p15: f64,
    pub p50: f64,
    pub p85: f64,
}

/// Fixed-bin histogram over [lo, hi).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    pub below: u64,
    pub above: u64,
}

/// Pooled statistics of one hidden layer's pre-activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    pub layer: usize,
    pub units: usize,
    pub p15: f64,
    pub p50: f64,
    pub p85: f64,
    pub mean: f64,
    pub std: f64,
    pub hist: Histogram,
}

/// One line of `activations.jsonl`.
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

/// `summary.json`. Reading fills a missing field with its default, so summaries written by
/// earlier versions of bn-exp (or by hand) still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub name: String,
    pub study: String,
    /// "finished" or "diverged".
    pub status: String,
    pub diverged_at: Option<u64>,
    pub steps: u64,
    pub final_test_acc: Option<f64>,
    pub final_test_loss: Option<f64>,
    /// Which statistics gave the final numbers: "moving", "population" or "batch" for layers
    /// that keep statistics (BN, Batch Renorm, mean-only BN), "per-example" for Layer and Group
    /// Norm, "none" without normalisation or with Weight Norm alone.
    pub final_inference: String,
    pub best_test_acc: Option<f64>,
    pub best_step: Option<u64>,
    /// Threshold (as written, e.g. "0.97") → first evaluated step reaching it.
    pub steps_to: std::collections::BTreeMap<String, Option<u64>>,
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

/// A fresh [`Summary::run_id`] for this process.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// Writing

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

/// Write JSON to `path` atomically (a temporary file beside it, then rename), pretty-printed, so a
/// reader or a crash never sees half a file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_text_atomic(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

/// Write `text` to `path` through a temporary file beside it and a rename, so that a reader
/// (a resume, another array task reading a plan) never sees half a file.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Temporary files are created owner-only; results are for everyone who can read the folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The lock

/// The lock file that marks a run folder as in use by one bn-exp process.
pub const LOCK_FILE: &str = "run.lock";

/// The file `--steal-after` takers queue on (kept, like `run.lock`, so that all of them lock
/// one file).
const STEAL_GUARD_FILE: &str = "run.lock.steal";

/// Every file and folder bn-exp writes into a run folder: what `--force` removes, and nothing
/// else (a user's notes beside them stay).
pub const RUN_FILES: [&str; 10] = [
    CONFIG_FILE,
    METRICS_FILE,
    ACTIVATIONS_FILE,
    MEASURES_FILE,
    SUMMARY_FILE,
    LOG_FILE,
    CHECKPOINT_DIR,
    "checkpoint.tmp",
    "checkpoint.old",
    "plots",
];

/// How often a lock's holder touches `run.lock`: its heartbeat, which `--steal-after` reads.
pub const LOCK_HEARTBEAT: Duration = Duration::from_secs(5);

/// The shortest `--steal-after`: six missed heartbeats, so that a busy machine's late beat is
/// never taken for a dead holder.
pub const MIN_STEAL_AFTER: Duration = Duration::from_secs(30);

/// An exclusive claim on a run folder for as long as it lives: two processes never write one
/// run.
///
/// It is an advisory lock (`flock`) on `run.lock`, which the kernel releases when its holder
/// exits, however it exits: a killed holder's lock is free at once, with no guessing from
/// process ids. The file also names the holder (host and pid) for the message a refused
/// process prints, and is emptied on a clean release; a non-empty file whose lock is free
/// therefore means the previous holder was killed, which [`RunLock::took_over`] reports.
///
/// A lock can outlive its holder where the kernel cannot see the holder die: a node that
/// crashed while holding a lock on a shared filesystem, a lock server that has not yet
/// expired the dead client. For those, the holder beats: a thread touches the file's mtime
/// every [`LOCK_HEARTBEAT`]. [`RunLock::acquire`] with `steal_after` takes a lock whose
/// heartbeat has been silent that long, by replacing the file (the old holder's lock stays on
/// the unlinked one). It never steals from a process it can see alive on its own host (a
/// stopped process does not beat either). A holder that wakes up to find its file replaced
/// stops before its next write: [`RunLock::ensure_held`].
#[derive(Debug)]
pub struct RunLock {
    shared: Arc<HeldLock>,
    /// Dropping it stops the heartbeat thread.
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// Set when the previous holder was killed while holding the run (or, with
    /// `steal_after`, went silent): who it was.
    pub took_over: Option<String>,
}

/// Why a process stopped writing to a run: another process took its lock over.
#[derive(Debug)]
pub struct TakenOver {
    dir: PathBuf,
    by: String,
}

impl std::fmt::Display for TakenOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was taken over by {} (--steal-after) while this process was silent; stopping \
             without writing to it again",
            self.dir.display(),
            self.by
        )
    }
}

impl std::error::Error for TakenOver {}

/// The open, locked `run.lock`, shared with the heartbeat thread.
#[derive(Debug)]
struct HeldLock {
    file: File,
    path: PathBuf,
    /// Set by the heartbeat once `path` is no longer this file: the run was taken over.
    lost: AtomicBool,
}

impl HeldLock {
    /// Whether `path` still names the file this process locked.
    fn still_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(&self.path), self.file.metadata()) {
            (Ok(now), Ok(ours)) => now.dev() == ours.dev() && now.ino() == ours.ino(),
            _ => false,
        }
    }
}

impl RunLock {
    /// Take the lock of `dir` (which must exist), or say who holds it. With `steal_after`, a
    /// lock whose holder's heartbeat has been silent at least that long is taken over.
    pub fn acquire(dir: &Path, steal_after: Option<Duration>) -> Result<RunLock> {
        if let Some(limit) = steal_after {
            ensure!(
                limit >= MIN_STEAL_AFTER,
                "--steal-after must be at least {} s (the holder beats every {} s)",
                MIN_STEAL_AFTER.as_secs(),
                LOCK_HEARTBEAT.as_secs()
            );
        }
        let path = dir.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        let (file, took_over) = match try_lock(&file, &path)? {
            true => {
                let took_over = killed_holder(&file);
                (file, took_over)
            }
            false => match steal_after {
                None => return Err(refusal(dir, &path, &file, None)),
                Some(limit) => steal(dir, &path, limit)?,
            },
        };
        let me = format!("{} {}\n", host_name(), std::process::id());
        (|| {
            use std::io::Seek;
            file.set_len(0)?;
            (&file).rewind()?;
            (&file).write_all(me.as_bytes())?;
            file.sync_all()
        })()
        .with_context(|| format!("cannot write {}", path.display()))?;
        let shared = Arc::new(HeldLock {
            file,
            path,
            lost: AtomicBool::new(false),
        });
        let (stop, stopped) = mpsc::channel();
        let beating = Arc::clone(&shared);
        let heartbeat = std::thread::Builder::new()
            .name("run.lock heartbeat".into())
            .spawn(move || beat_until_stopped(&beating, &stopped))
            .context("cannot start the run lock's heartbeat thread")?;
        Ok(RunLock {
            shared,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
            took_over,
        })
    }

    /// A [`TakenOver`] error if the run was taken over (`--steal-after` in another process)
    /// since this process locked it: the caller must stop without writing to the folder again.
    pub fn ensure_held(&self) -> Result<()> {
        let held = &self.shared;
        if !held.lost.load(Ordering::Relaxed) && held.still_ours() {
            return Ok(());
        }
        held.lost.store(true, Ordering::Relaxed);
        let now = fs::read_to_string(&held.path).unwrap_or_default();
        Err(TakenOver {
            dir: held.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            by: describe_holder(now.trim()),
        }
        .into())
    }

    /// Whether the heartbeat has seen the run taken over (cheap: no system call). A `false`
    /// can be up to one heartbeat late; [`RunLock::ensure_held`] looks at the file itself.
    pub fn taken_over(&self) -> bool {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Give the lock up and remove its file: for a folder that is about to be removed.
    pub fn release_and_remove(self) {
        if self.shared.still_ours() {
            let _ = fs::remove_file(&self.shared.path);
        }
    }
}

impl Drop for RunLock {
    /// Stop the heartbeat, empty the file (a clean end) and let the lock go. The file stays:
    /// removing it could let two later processes lock two different files of the same name.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        let held = &self.shared;
        if held.still_ours() {
            let _ = held.file.set_len(0);
        }
        let _ = held.file.unlock();
    }
}

/// The heartbeat thread: touch the file every [`LOCK_HEARTBEAT`] until told to stop, and
/// note when the path no longer names it.
fn beat_until_stopped(held: &HeldLock, stopped: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LOCK_HEARTBEAT) {
        if !held.still_ours() {
            held.lost.store(true, Ordering::Relaxed);
            return;
        }
        let _ = held.file.set_modified(SystemTime::now());
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// `flock` without waiting: `Ok(false)` when another process holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The holder line in a lock file ("host pid"), trimmed; empty after a clean release.
fn read_holder(mut file: &File) -> String {
    use std::io::{Read, Seek};
    let mut holder = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut holder));
    holder.trim().to_string()
}

/// Who held a lock this process has just taken, if anyone: a name left in the file means its
/// holder was killed (a clean release empties it).
fn killed_holder(file: &File) -> Option<String> {
    let previous = read_holder(file);
    (!previous.is_empty()).then(|| format!("{}, which was killed", describe_holder(&previous)))
}

/// How long ago the lock file's holder last beat.
fn silent_for(path: &Path) -> Duration {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// The error a refused process prints: who holds the run and when it last beat.
fn refusal(dir: &Path, path: &Path, file: &File, why: Option<String>) -> anyhow::Error {
    // A holder that has just locked writes its name a moment later: wait for it, briefly.
    let mut holder = read_holder(file);
    for _ in 0..50 {
        if !holder.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        holder = read_holder(file);
    }
    let holder = match holder.is_empty() {
        true => "a process that is just starting".to_string(),
        false => describe_holder(&holder),
    };
    let silent = silent_for(path).as_secs();
    let why = why.unwrap_or_else(|| {
        "wait for it to end, or, if that process is gone for good (a crashed node), pass \
         --steal-after SECS to take over a lock silent that long"
            .to_string()
    });
    anyhow!(
        "{} is in use by another bn-exp process ({holder}, last heartbeat {silent} s ago); {why}",
        dir.display()
    )
}

/// Take over a lock another process holds, if its heartbeat has been silent for `limit` and
/// its holder is not a live process on this host. Stealers queue on `run.lock.steal`, so two
/// of them never both take the run; a process that locks the new file first wins.
fn steal(dir: &Path, path: &Path, limit: Duration) -> Result<(File, Option<String>)> {
    let guard_path = dir.join(STEAL_GUARD_FILE);
    let guard = open_lock_file(&guard_path)?;
    guard
        .lock()
        .with_context(|| format!("cannot lock {}", guard_path.display()))?;
    // Another stealer may have replaced the file while this one waited: look again.
    let file = open_lock_file(path)?;
    if try_lock(&file, path)? {
        let took_over = killed_holder(&file);
        return Ok((file, took_over));
    }
    let silent = silent_for(path);
    if silent < limit {
        return Err(refusal(
            dir,
            path,
            &file,
            Some(format!(
                "it is not stale (--steal-after {} s); wait for it to end",
                limit.as_secs()
            )),
        ));
    }
    let holder = read_holder(&file);
    if holder_is_alive_here(&holder) {
        return Err(refusal(
            dir,
            path,
            &file,
            Some(
                "that process is alive on this host (perhaps stopped), so it is not taken over; \
                 end it first"
                    .to_string(),
            ),
        ));
    }
    fs::remove_file(path).with_context(|| format!("cannot remove the stale {}", path.display()))?;
    let fresh = open_lock_file(path)?;
    if !try_lock(&fresh, path)? {
        anyhow::bail!(
            "{} was taken by another bn-exp process while this one was taking over its stale lock",
            dir.display()
        );
    }
    let took_over = format!(
        "{}, whose heartbeat had been silent for {} s",
        describe_holder(&holder),
        silent.as_secs()
    );
    Ok((fresh, Some(took_over)))
}

/// Whether a lock's holder ("host pid") is a process that exists on this host.
fn holder_is_alive_here(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|p| p.parse::<u32>().ok()),
    ) {
        (Some(host), Some(pid)) => {
            host == host_name() && Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// This machine's name, as the lock records it.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown-host".to_string())
}

fn describe_holder(holder: &str) -> String {
    let mut parts = holder.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(host), Some(pid)) => format!("process {pid} on {host}"),
        _ => format!("lock content {holder:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The reader

/// One evaluation from `metrics.jsonl`; a missing, `null` or non-finite value is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub step: u64,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
}

/// The tracked unit's 15th, 50th and 85th percentiles at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p15: f64,
    pub p50: f64,
    pub p85: f64,
}

/// A pooled histogram of one hidden layer's inputs to the nonlinearity.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramCounts {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<f64>,
    pub below: f64,
    pub above: f64,
}

impl HistogramCounts {
    /// Every probe value counted, including those outside `[lo, hi)`.
    pub fn total(&self) -> f64 {
        self.counts.iter().sum::<f64>() + self.below + self.above
    }
}

/// One line of `activations.jsonl`, reduced to what the figures draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationPoint {
    pub step: u64,
    /// `(layer, unit)` of the tracked unit, when the file says.
    pub tracked_unit: Option<(u64, u64)>,
    pub tracked: Option<Percentiles>,
    /// `(layer index, histogram)` for each hidden layer with a usable histogram.
    pub layers: Vec<(u64, HistogramCounts)>,
}

/// Everything read from one run folder.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub name: String,
    /// The resolved config, or `Value::Null` when `config.json` is missing or damaged.
    pub config: Value,
    pub seed: Option<i64>,
    pub metrics: Vec<MetricPoint>,
    pub activations: Vec<ActivationPoint>,
    /// `measures.jsonl`, empty when the run took no measures.
    pub measures: Vec<MeasureRecord>,
    /// `summary.json`, absent for an unfinished run (or one whose summary is damaged).
    pub summary: Option<Summary>,
    /// What was left out while reading, and why (damaged lines, missing files, bad values).
    pub notes: Vec<String>,
}

impl Run {
    /// True when `summary.json` says the loss became NaN or infinite.
    pub fn diverged(&self) -> bool {
        self.summary
            .as_ref()
            .is_some_and(|s| s.status == "diverged")
    }

    /// For a diverged run, the step at which its loss went non-finite (summary.json's
    /// `diverged_at`, else the first evaluation without a test loss). Evaluations from there on
    /// show a broken network, not training progress, so figures cut the run there.
    pub fn diverged_at(&self) -> Option<u64> {
        if !self.diverged() {
            return None;
        }
        self.summary
            .as_ref()
            .and_then(|s| s.diverged_at)
            .or_else(|| {
                self.metrics
                    .iter()
                    .find(|m| m.step > 0 && m.test_loss.is_none())
                    .map(|m| m.step)
            })
    }

    /// Evaluations before divergence (all of them for a run that did not diverge).
    pub fn healthy_metrics(&self) -> impl Iterator<Item = &MetricPoint> + '_ {
        let cut = self.diverged_at();
        self.metrics
            .iter()
            .filter(move |m| cut.is_none_or(|c| m.step < c))
    }
}

impl Run {
    /// Read one run folder. Never fails on content: whatever cannot be used is left out and
    /// said in [`Run::notes`].
    pub fn read(dir: &Path) -> Run {
        let mut notes = Vec::new();
        let config =
            read_json_object(&dir.join(CONFIG_FILE), &mut notes, true).unwrap_or(Value::Null);
        let summary_path = dir.join(SUMMARY_FILE);
        let summary = read_json_object(&summary_path, &mut notes, false).and_then(|value| {
            match serde_json::from_value::<Summary>(value) {
                Ok(summary) => Some(summary),
                Err(err) => {
                    notes.push(format!(
                        "{}: not a summary ({err}); ignored",
                        summary_path.display()
                    ));
                    None
                }
            }
        });
        if !summary_path.exists() {
            notes.push(format!(
                "{}: no summary.json (run unfinished or interrupted); its last evaluation stands in for the final one",
                dir.display()
            ));
        }
        let name = run_name(dir, &config, summary.as_ref());
        let seed = config.get("seed").and_then(Value::as_i64);
        let metrics = read_metrics(&dir.join(METRICS_FILE), &mut notes);
        let activations = read_activations(&dir.join(ACTIVATIONS_FILE), &mut notes);
        let measures = read_measures(&dir.join(MEASURES_FILE), &mut notes);
        Run {
            dir: dir.to_path_buf(),
            name,
            config,
            seed,
            metrics,
            activations,
            measures,
            summary,
            notes,
        }
    }
}

/// `measures.jsonl`, if the run has one; a line that is not a record is left out with a note.
fn read_measures(path: &Path, notes: &mut Vec<String>) -> Vec<MeasureRecord> {
    if !path.exists() {
        return Vec::new();
    }
    // Checked above: a run without measures is normal, not worth a note.
    let lines = read_json_lines(path, notes, "");
    let mut bad = 0;
    let mut records: Vec<MeasureRecord> = lines
        .into_iter()
        .filter_map(|(_, v)| {
            let record = serde_json::from_value(v).ok();
            bad += usize::from(record.is_none());
            record
        })
        .collect();
    if bad > 0 {
        notes.push(format!(
            "{}: {bad} line(s) are not measure records; skipped",
            path.display()
        ));
    }
    // As with the other records: a step written twice (a hand-edited file) counts once.
    keep_latest_by_step(&mut records, |r| r.step);
    records
}

/// A run's measures reduced to the numbers a table shows: means over its probes, over the
/// whole run and over the early probes (steps before 10% of the run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureSummary {
    /// Weight layer names, input to output.
    pub layers: Vec<String>,
    /// Mean ‖G − G′‖₂ per weight layer.
    pub ics_l2: Vec<Option<f64>>,
    /// Mean ‖G − G′‖₂ / ‖G‖₂ per weight layer.
    pub ics_relative: Vec<Option<f64>>,
    /// Mean cos(G, G′) per weight layer.
    pub ics_cosine: Vec<Option<f64>>,
    /// Mean of the largest gradient change over the step sizes: early, and overall.
    pub grad_change_early: Option<f64>,
    pub grad_change: Option<f64>,
    /// Mean effective β-smoothness: early, and overall.
    pub beta_early: Option<f64>,
    pub beta: Option<f64>,
    /// Mean range of the loss along the gradient: early, and overall.
    pub loss_range_early: Option<f64>,
    pub loss_range: Option<f64>,
}

/// The fraction of a run whose probes count as "early" (Santurkar et al. report the start of
/// training, where BN's landscape differs most).
pub const EARLY_FRACTION: f64 = 0.1;

/// [`MeasureSummary`] of a run of `total_steps` steps; `None` without measures.
pub fn summarise_measures(records: &[MeasureRecord], total_steps: u64) -> Option<MeasureSummary> {
    let first = records.first()?;
    let early_end = EARLY_FRACTION * total_steps as f64;
    let early: Vec<&MeasureRecord> = records
        .iter()
        .filter(|r| (r.step as f64) < early_end)
        .collect();
    let all: Vec<&MeasureRecord> = records.iter().collect();
    let mean_of = |rs: &[&MeasureRecord], f: &dyn Fn(&MeasureRecord) -> Option<f64>| {
        let values: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
        mean_std(&values).map(|m| m.mean)
    };
    let per_layer = |f: &dyn Fn(&LayerIcs) -> Option<f64>| -> Vec<Option<f64>> {
        (0..first.ics.len())
            .map(|i| mean_of(&all, &|r| r.ics.get(i).and_then(f)))
            .collect()
    };
    Some(MeasureSummary {
        layers: first.ics.iter().map(|l| l.name.clone()).collect(),
        ics_l2: per_layer(&|l| l.l2),
        ics_relative: per_layer(&|l| l.relative),
        ics_cosine: per_layer(&|l| l.cosine),
        grad_change_early: mean_of(&early, &|r| r.grad_change_max),
        grad_change: mean_of(&all, &|r| r.grad_change_max),
        beta_early: mean_of(&early, &|r| r.beta_smoothness),
        beta: mean_of(&all, &|r| r.beta_smoothness),
        loss_range_early: mean_of(&early, &|r| r.loss_range),
        loss_range: mean_of(&all, &|r| r.loss_range),
    })
}

fn run_name(dir: &Path, config: &Value, summary: Option<&Summary>) -> String {
    config
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| summary.map(|s| s.name.clone()).filter(|n| !n.is_empty()))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// Read a whole-file JSON object; `None` (with a warning unless merely absent and optional).
fn read_json_object(path: &Path, notes: &mut Vec<String>, warn_if_missing: bool) -> Option<Value> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if warn_if_missing {
                notes.push(format!(
                    "{}: missing; the run is plotted under its folder name",
                    path.display()
                ));
            }
            return None;
        }
        Err(err) => {
            notes.push(format!("{}: cannot read ({err}); ignored", path.display()));
            return None;
        }
    };
    match parse_json_lenient(&text) {
        Some(v @ Value::Object(_)) => Some(v),
        _ => {
            notes.push(format!(
                "{}: not a valid JSON object (damaged?); ignored",
                path.display()
            ));
            None
        }
    }
}

/// Parse JSON, and if that fails, once more with bare `NaN` / `Infinity` read as `null`.
///
/// Our writer never emits them (docs/formats.md), but files edited or produced by Python's
/// `json` module do, and one such token should not cost a whole evaluation.
fn parse_json_lenient(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        let patched = text
            .replace("-Infinity", "null")
            .replace("Infinity", "null")
            .replace("NaN", "null");
        serde_json::from_str(&patched).ok()
    })
}

/// The non-empty lines of a JSON Lines file as `(line number, value)`; bad lines are warned
/// about once per file (with the first bad line number) and skipped.
fn read_json_lines(
    path: &Path,
    notes: &mut Vec<String>,
    missing_note: &str,
) -> Vec<(usize, Value)> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            notes.push(format!("{}: missing; {missing_note}", path.display()));
            return Vec::new();
        }
        Err(err) => {
            notes.push(format!("{}: cannot read ({err}); ignored", path.display()));
            return Vec::new();
        }
    };
    let mut values = Vec::new();
    let mut bad: Vec<usize> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_json_lenient(line) {
            Some(v @ Value::Object(_)) => values.push((i + 1, v)),
            _ => bad.push(i + 1),
        }
    }
    if let Some(first) = bad.first() {
        notes.push(format!(
            "{}: {} line(s) not valid JSON (cut short?), first at line {first}; skipped",
            path.display(),
            bad.len()
        ));
    }
    values
}

/// Largest magnitude drawn. Beyond it a value means a blown-up network, not a measurement,
/// and plotters' axis arithmetic overflows (a span near `f64::MAX` hangs its tick search).
pub const PLOTTABLE_LIMIT: f64 = 1e100;

/// A finite, plottable number, or `None` for missing, `null`, non-numeric or absurd values.
pub fn finite(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
        .filter(|x| x.is_finite() && x.abs() <= PLOTTABLE_LIMIT)
}

/// An accuracy: a finite fraction in [0, 1] (docs/formats.md), else `None`.
pub fn fraction(v: Option<&Value>) -> Option<f64> {
    finite(v).filter(|x| (0.0..=1.0).contains(x))
}

/// Steps beyond this are damage, not training (and would overflow axis arithmetic).
const MAX_STEP: u64 = 1 << 53;

fn step_of(v: &Value) -> Option<u64> {
    let step = v.get("step")?;
    step.as_u64()
        .or_else(|| {
            step.as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| s as u64)
        })
        .filter(|s| *s <= MAX_STEP)
}

fn read_metrics(path: &Path, notes: &mut Vec<String>) -> Vec<MetricPoint> {
    let lines = read_json_lines(path, notes, "no convergence curves for this run");
    let mut points = Vec::with_capacity(lines.len());
    let (mut no_step, mut no_acc, mut no_loss) = (0, 0, 0);
    for (_, v) in &lines {
        let Some(step) = step_of(v) else {
            no_step += 1;
            continue;
        };
        let test_acc = fraction(v.get("test_acc"));
        let test_loss = finite(v.get("test_loss"));
        no_acc += usize::from(test_acc.is_none());
        no_loss += usize::from(test_loss.is_none());
        points.push(MetricPoint {
            step,
            test_acc,
            test_loss,
        });
    }
    report_gaps(
        path,
        notes,
        &[
            (no_step, "step"),
            (no_acc, "test_acc"),
            (no_loss, "test_loss"),
        ],
    );
    keep_latest_by_step(&mut points, |p| p.step);
    if points.is_empty() && !lines.is_empty() {
        notes.push(format!("{}: no usable evaluation", path.display()));
    }
    points
}

fn read_activations(path: &Path, notes: &mut Vec<String>) -> Vec<ActivationPoint> {
    let lines = read_json_lines(
        path,
        notes,
        "no percentile or distribution plots for this run",
    );
    let mut points = Vec::with_capacity(lines.len());
    let (mut no_step, mut no_tracked, mut bad_hist) = (0, 0, 0);
    for (_, v) in &lines {
        let Some(step) = step_of(v) else {
            no_step += 1;
            continue;
        };
        let tracked = v.get("tracked").and_then(parse_percentiles);
        no_tracked += usize::from(tracked.is_none());
        let tracked_unit = v.get("tracked").and_then(|t| {
            Some((
                t.get("layer").and_then(Value::as_u64)?,
                t.get("unit").and_then(Value::as_u64)?,
            ))
        });
        let mut layers = Vec::new();
        for (i, layer) in v
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = layer
                .get("layer")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            match layer.get("hist").and_then(parse_histogram) {
                Some(hist) => layers.push((index, hist)),
                None => bad_hist += 1,
            }
        }
        points.push(ActivationPoint {
            step,
            tracked_unit,
            tracked,
            layers,
        });
    }
    report_gaps(
        path,
        notes,
        &[
            (no_step, "step"),
            (no_tracked, "tracked percentiles"),
            (bad_hist, "layer histogram"),
        ],
    );
    keep_latest_by_step(&mut points, |p| p.step);
    points
}

fn report_gaps(path: &Path, notes: &mut Vec<String>, gaps: &[(usize, &str)]) {
    for (count, what) in gaps {
        if *count > 0 {
            notes.push(format!(
                "{}: {count} entr{} without a usable {what} (null, NaN, missing or out of range); left out",
                path.display(),
                if *count == 1 { "y" } else { "ies" }
            ));
        }
    }
}

/// Keep the lines that describe the training that led to the final model: a later line
/// replaces every earlier one from its step on. A run resumed from a checkpoint at step c
/// writes again the evaluations after c, and the earlier ones after c belong to the abandoned
/// continuation. The result is in increasing step order.
fn keep_latest_by_step<T>(items: &mut Vec<T>, step: impl Fn(&T) -> u64) {
    // `kept` stays in increasing step order, so the lines a new one replaces are at its end.
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        let s = step(&item);
        while kept.last().is_some_and(|earlier| step(earlier) >= s) {
            kept.pop();
        }
        kept.push(item);
    }
    *items = kept;
}

fn parse_percentiles(t: &Value) -> Option<Percentiles> {
    Some(Percentiles {
        p15: finite(t.get("p15"))?,
        p50: finite(t.get("p50"))?,
        p85: finite(t.get("p85"))?,
    })
}

fn parse_histogram(h: &Value) -> Option<HistogramCounts> {
    let lo = finite(h.get("lo"))?;
    let hi = finite(h.get("hi"))?;
    // A histogram narrower than this (relative to where it sits) has no drawable bins.
    if hi - lo <= 1e-9 * hi.abs().max(lo.abs()).max(1.0) {
        return None;
    }
    let counts: Vec<f64> = h
        .get("counts")?
        .as_array()?
        .iter()
        .map(|c| finite(Some(c)).unwrap_or(0.0).max(0.0))
        .collect();
    if counts.is_empty() {
        return None;
    }
    let outside = |key| finite(h.get(key)).unwrap_or(0.0).max(0.0);
    Some(HistogramCounts {
        lo,
        hi,
        below: outside("below"),
        above: outside("above"),
        counts,
    })
}

// ---------------------------------------------------------------------------------------------
// Definitions of what is reported about a run

impl Run {
    /// The final accuracy: the last evaluation's, with the statistics evaluations use during
    /// training (BN's moving averages). `None` without any evaluation.
    pub fn final_acc(&self) -> Option<f64> {
        final_acc(&self.metrics)
    }

    /// Test accuracy with the paper's population statistics (Algorithm 2), for BN runs whose
    /// population pass ran.
    pub fn population_acc(&self) -> Option<f64> {
        self.summary
            .as_ref()
            .and_then(|s| s.population.as_ref())
            .map(|p| p.test_acc)
            .filter(|acc| (0.0..=1.0).contains(acc))
    }

    /// The tracked unit's drift ([`drift`]) over `total_steps` (the run's configured length).
    pub fn drift(&self, total_steps: u64) -> Option<Drift> {
        let points: Vec<(u64, [f64; 3])> = self
            .activations
            .iter()
            .filter_map(|a| a.tracked.map(|p| (a.step, [p.p15, p.p50, p.p85])))
            .collect();
        drift(&points, total_steps)
    }
}

/// The last evaluation's accuracy (see [`Run::final_acc`]).
pub fn final_acc(metrics: &[MetricPoint]) -> Option<f64> {
    metrics.iter().rev().find_map(|m| m.test_acc)
}

/// The best accuracy and the first step that reached it.
pub fn best_acc(metrics: &[MetricPoint]) -> Option<(f64, u64)> {
    metrics
        .iter()
        .fold(None, |best, m| match (best, m.test_acc) {
            (Some((acc, _)), Some(now)) if now > acc => Some((now, m.step)),
            (None, Some(now)) => Some((now, m.step)),
            (best, _) => best,
        })
}

/// The first evaluated step whose test accuracy reached `threshold` (within 1e-9), if any.
pub fn first_step_reaching(metrics: &[MetricPoint], threshold: f64) -> Option<u64> {
    metrics
        .iter()
        .find(|m| {
            m.test_acc
                .is_some_and(|acc| acc >= threshold - ACC_TOLERANCE)
        })
        .map(|m| m.step)
}

/// Key used for a threshold in `summary.steps_to`: the shortest decimal, e.g. "0.97".
pub fn threshold_key(t: f64) -> String {
    format!("{t}")
}

/// How much the tracked unit's 15th, 50th and 85th percentiles move: the mean absolute change
/// between consecutive evaluations, over the whole run and over the evaluations from 10% of
/// `total_steps` on, and the 15–85 spread at the first evaluation after step 0 and at the last.
/// `points` are `(step, [p15, p50, p85])` in step order; `None` with fewer than two.
pub fn drift(points: &[(u64, [f64; 3])], total_steps: u64) -> Option<Drift> {
    if points.len() < 2 {
        return None;
    }
    let mean_abs_change = |pts: &[(u64, [f64; 3])]| -> [f64; 3] {
        let mut sums = [0.0; 3];
        let n = pts.len().saturating_sub(1).max(1) as f64;
        for w in pts.windows(2) {
            for (k, sum) in sums.iter_mut().enumerate() {
                *sum += (w[1].1[k] - w[0].1[k]).abs();
            }
        }
        sums.map(|s| s / n)
    };
    let cutoff = total_steps / 10;
    let late: Vec<_> = points
        .iter()
        .copied()
        .filter(|(s, _)| *s >= cutoff)
        .collect();
    let first = points.iter().find(|(s, _)| *s > 0).unwrap_or(&points[0]).1;
    let last = points[points.len() - 1].1;
    Some(Drift {
        all: mean_abs_change(points),
        after_10pct: mean_abs_change(&late),
        spread_first: first[2] - first[0],
        spread_last: last[2] - last[0],
    })
}

/// Mean and sample standard deviation (n − 1) of one quantity over runs; `std` is `None` for a
/// single run (shown as "–"), since one run says nothing about the spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

/// [`MeanStd`] of the finite values; `None` when there are none.
pub fn mean_std(values: &[f64]) -> Option<MeanStd> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    let n = finite.len();
    let mean = finite.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| {
        let square_sum: f64 = finite.iter().map(|v| (v - mean).powi(2)).sum();
        (square_sum / (n - 1) as f64).sqrt()
    });
    Some(MeanStd { mean, std, n })
}

/// Where a run folder stands, from which files it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunProgress {
    /// Nothing trained yet: no run file.
    Fresh,
    /// Started but not done (running or interrupted): no `summary.json` yet.
    Started,
    /// Done, finished or diverged: `summary.json` is there.
    Done,
}

/// Where a run folder stands.
pub fn run_progress(dir: &Path) -> RunProgress {
    if dir.join(SUMMARY_FILE).is_file() {
        RunProgress::Done
    } else if is_run_folder(dir) {
        RunProgress::Started
    } else {
        RunProgress::Fresh
    }
}

/// A folder holds a run when train has written any of its records or checkpoints into it:
/// the one definition train (before it overwrites), compare (before it reuses or resumes) and
/// plot (before it reads) all use. A log or our plots alone do not make a run.
pub fn is_run_folder(dir: &Path) -> bool {
    [
        CONFIG_FILE,
        METRICS_FILE,
        ACTIVATIONS_FILE,
        SUMMARY_FILE,
        CHECKPOINT_DIR,
        "checkpoint.old",
    ]
    .iter()
    .any(|file| dir.join(file).exists())
}

/// The run folders directly inside `dir` (not hidden ones, not our own `plots/`), in name
/// order.
pub fn run_subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && path.is_dir() && is_run_folder(&path) {
            runs.push(path);
        }
    }
    runs.sort();
    Ok(runs)
}

/// A folder's last path component, used as a run's name.
pub fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parse_reads_nan_as_null() {
        let v = parse_json_lenient(r#"{"step": 3, "test_loss": NaN, "x": -Infinity}"#).unwrap();
        assert_eq!(v["test_loss"], Value::Null);
        assert_eq!(v["x"], Value::Null);
        assert!(parse_json_lenient(r#"{"step": 3, "test_lo"#).is_none());
    }

    #[test]
    fn a_later_line_replaces_the_earlier_ones_from_its_step_on() {
        // 0, 5, 10 written, then a resume from step 5 writes 5 again: the old 10 belonged to
        // the abandoned continuation.
        let mut items = vec![(0, 'a'), (5, 'b'), (10, 'c'), (5, 'd')];
        keep_latest_by_step(&mut items, |i| i.0);
        assert_eq!(items, vec![(0, 'a'), (5, 'd')]);
        let mut items = vec![(0, 'a'), (5, 'b'), (5, 'd'), (10, 'e')];
        keep_latest_by_step(&mut items, |i| i.0);
        assert_eq!(items, vec![(0, 'a'), (5, 'd'), (10, 'e')]);
    }

    #[test]
    fn histogram_rejects_empty_or_inverted_ranges() {
        let ok = serde_json::json!({"lo": -1.0, "hi": 1.0, "counts": [1, 2, null], "below": 1});
        let h = parse_histogram(&ok).unwrap();
        assert_eq!(h.counts, vec![1.0, 2.0, 0.0]);
        assert_eq!(h.total(), 4.0);
        let bad = serde_json::json!({"lo": 1.0, "hi": 1.0, "counts": [1]});
        assert!(parse_histogram(&bad).is_none());
    }

    #[test]
    fn drift_is_mean_absolute_change() {
        let points = [
            (0, [0.0, 0.0, 0.0]),
            (10, [-1.0, 0.0, 1.0]),
            (20, [-1.0, 0.5, 2.0]),
        ];
        let d = drift(&points, 100).unwrap();
        assert_eq!(d.all, [0.5, 0.25, 1.0]);
        // After 10% of 100 steps: the evaluations at 10 and 20 only.
        assert_eq!(d.after_10pct, [0.0, 0.5, 1.0]);
        assert_eq!(d.spread_first, 2.0);
        assert_eq!(d.spread_last, 3.0);
        assert!(drift(&points[..1], 100).is_none());
    }

    #[test]
    fn mean_std_is_the_sample_std_and_none_for_one_run() {
        let s = mean_std(&[1.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (2.0, Some(1.0), 3));
        let one = mean_std(&[0.97]).unwrap();
        assert_eq!((one.mean, one.std, one.n), (0.97, None, 1));
        assert!(mean_std(&[]).is_none());
    }

    #[test]
    fn a_summary_with_a_nan_population_loss_reads_back() {
        let summary = Summary {
            status: "finished".into(),
            population: Some(PopulationResult {
                test_acc: 0.1,
                test_loss: f64::NAN,
                batches: 10,
            }),
            drift: Some(Drift {
                all: [f64::INFINITY, 0.5, 0.25],
                after_10pct: [0.0; 3],
                spread_first: f64::NAN,
                spread_last: 1.0,
            }),
            ..Summary::default()
        };
        let dir = tempfile::tempdir().unwrap();
        write_json_atomic(&dir.path().join(SUMMARY_FILE), &summary).unwrap();
        let run = Run::read(dir.path());
        let read = run.summary.expect("the summary reads back");
        let population = read.population.unwrap();
        assert!(population.test_loss.is_nan() && population.test_acc == 0.1);
        let drift = read.drift.unwrap();
        assert!(drift.all[0].is_nan() && drift.spread_first.is_nan() && drift.all[1] == 0.5);
    }

    #[test]
    fn a_nan_test_loss_keeps_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = JsonlWriter::append(&dir.path().join(METRICS_FILE)).unwrap();
        for (step, loss) in [(0, 2.3), (100, f64::NAN), (200, f64::INFINITY)] {
            writer
                .write(&EvalRecord {
                    step,
                    train_loss: None,
                    test_loss: loss,
                    test_acc: 0.1,
                    lr: 1.0,
                    elapsed_s: 0.0,
                })
                .unwrap();
        }
        let run = Run::read(dir.path());
        let steps: Vec<u64> = run.metrics.iter().map(|m| m.step).collect();
        assert_eq!(steps, [0, 100, 200], "{:?}", run.notes);
        assert_eq!(run.metrics[0].test_loss, Some(2.3));
        assert_eq!(
            (run.metrics[1].test_loss, run.metrics[2].test_loss),
            (None, None)
        );
        assert_eq!(run.final_acc(), Some(0.1));
    }
}
