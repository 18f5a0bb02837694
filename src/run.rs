//! The run folder: what `bn-exp train` writes into it, how, and the one reader that `train`,
//! `compare` and `plot` use to read it back. Formats: `docs/formats.md`.
//!
//! A run folder holds `config.json` (the resolved config), `metrics.jsonl` (one line per
//! evaluation), `activations.jsonl` (one line per probe), `measures.jsonl` (with
//! `measures.every`), `summary.json` (once the run has finished or diverged), the TensorBoard
//! event file made from them, `checkpoint/` and `run.lock`. Its parts:
//!
//! - `files`: every name in the folder, said once ([`CONFIG_FILE`], …, [`RUN_FILES`]), and
//!   what counts as a run folder ([`is_run_folder`], [`run_progress`]);
//! - `records`: one type per record, which train writes and the reader reads back
//!   ([`EvalRecord`], [`ActivationRecord`], [`MeasureRecord`], [`Summary`] with its
//!   [`RunStatus`] and [`FinalInference`]);
//! - `write`: appending JSON lines and their events ([`RecordWriters`]);
//! - `atomic`: replacing a file whole ([`write_json_atomic`], [`write_text_atomic`]);
//! - `events`: TensorBoard's event file, made from the records ([`write_events`]) and appended
//!   to while a run trains;
//! - `lock`: [`RunLock`], one writer per folder, with the heartbeat `--steal-after` reads;
//! - `read`: [`Run::read`], the lenient reader, and [`read_run_config`], both giving the config
//!   with the older `bn` key resolved;
//! - `report`: the one definition of each number reported about a run (final and best
//!   accuracy, steps to a threshold, drift, mean ± std over runs, the measures' summary);
//! - `checkpoint`: saving and loading the model, optimiser and [`LoopState`], for any Burn
//!   module;
//! - `resume`: whether a training run may start in a folder, replace it or resume it, and
//!   trimming the records a resume continues.

mod atomic;
mod checkpoint;
mod events;
mod files;
mod lock;
mod read;
mod records;
mod report;
mod resume;
mod write;

pub use atomic::{write_json_atomic, write_text_atomic};
pub use checkpoint::{LoopState, checkpoint_step, load_checkpoint, save_checkpoint};
pub use events::{event_file, export_events, write_events};
pub use files::{
    ACTIVATIONS_FILE, CHECKPOINT_DIR, CHECKPOINT_OLD_DIR, CHECKPOINT_TMP_DIR, CONFIG_FILE,
    EVENTS_FILE, LOCK_FILE, LOG_FILE, MEASURES_FILE, METRICS_FILE, MODEL_FILE, OPTIM_FILE,
    PLOTS_DIR, RUN_FILES, RunProgress, STATE_FILE, STEAL_GUARD_FILE, SUMMARY_FILE, folder_name,
    is_run_folder, run_progress, run_subfolders,
};
pub use lock::{LOCK_HEARTBEAT, MIN_STEAL_AFTER, RunLock, TakenOver};
pub use read::{PLOTTABLE_LIMIT, Run, finite, fraction, read_run_config};
pub use records::{
    ActivationRecord, Drift, EvalRecord, FinalInference, Histogram, LayerIcs, LayerStats,
    MeasureRecord, Percentiles, PopulationResult, RunStatus, Summary, TrackedUnit, new_run_id,
};
pub use report::{
    EARLY_FRACTION, MeanStd, MeasureSummary, best_acc, drift, final_acc, first_step_reaching,
    mean_std, summarise_measures, threshold_key,
};
pub use resume::{
    Claimed, Found, claim_run_dir, inspect_run_dir, set_up_run_dir, truncate_records_after,
};
pub use write::{JsonlWriter, RecordWriters, write_summary, write_text_files};
