//! The checkpoint a run resumes from: `checkpoint/` in the run folder, holding the model
//! ([`MODEL_FILE`]), the optimiser ([`OPTIM_FILE`]) and the training loop's state
//! ([`STATE_FILE`], a [`LoopState`]). Generic over any Burn module, so that the run folder's
//! format does not depend on which network is trained.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::atomic::write_json_atomic;
use super::files::{
    CHECKPOINT_DIR, CHECKPOINT_OLD_DIR, MODEL_FILE, OPTIM_FILE, STATE_FILE, checkpoint_staging_name,
};
use super::lock::RunLock;

/// The training loop's state, saved in every checkpoint beside the model and optimiser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopState {
    /// SGD steps done.
    pub step: u64,
    /// Sum and count of the mini-batch losses since the last evaluation.
    pub loss_sum: f64,
    pub loss_count: u64,
    /// Wall seconds since the run started, and of them those spent in training steps.
    pub elapsed_s: f64,
    pub train_s: f64,
}

/// Save the model, the optimiser and the loop state as the run's checkpoint. Written to a
/// fresh folder and renamed into place, so a crash mid-save leaves the previous checkpoint
/// intact. `before_put_in_place` runs once everything is written, just before the renames.
///
/// The lock is checked before anything is written, and again just before the renames, which
/// replace the folder's checkpoint: a holder frozen mid-save while another process took the
/// run over must not put its stale checkpoint in place when it wakes.
pub fn save_checkpoint<M: Module>(
    run_dir: &Path,
    model: M,
    optim: &ModuleOptimizer,
    state: &LoopState,
    lock: &RunLock,
    before_put_in_place: impl FnOnce(),
) -> Result<()> {
    let dir = run_dir.join(CHECKPOINT_DIR);
    // A staging folder of this save's own: a holder frozen mid-save that wakes to find the run
    // taken over removes what it staged, and can never remove what the new holder stages.
    let tmp = run_dir.join(checkpoint_staging_name());
    lock.ensure_held()?;
    let staged = stage_checkpoint(&tmp, model, optim, state, before_put_in_place)
        .and_then(|()| lock.ensure_held());
    if let Err(err) = staged {
        let _ = std::fs::remove_dir_all(&tmp);
        // A write that failed because the new holder cleared the folder is the take-over.
        lock.ensure_held()?;
        return Err(err);
    }
    put_in_place(run_dir, &dir, &tmp)
}

/// The context of a failed file operation: "cannot <what> <path>".
fn io(what: &str, path: &Path) -> String {
    format!("cannot {what} {}", path.display())
}

/// Write the model, the optimiser and the loop state into the staging folder `tmp`.
fn stage_checkpoint<M: Module>(
    tmp: &Path,
    model: M,
    optim: &ModuleOptimizer,
    state: &LoopState,
    before_put_in_place: impl FnOnce(),
) -> Result<()> {
    std::fs::create_dir_all(tmp).with_context(|| io("create", tmp))?;
    model
        .save_file(tmp.join(MODEL_FILE))
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| io("save the model checkpoint to", &tmp.join(MODEL_FILE)))?;
    optim
        .save(tmp.join(OPTIM_FILE))
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| io("save the optimiser checkpoint to", &tmp.join(OPTIM_FILE)))?;
    write_json_atomic(&tmp.join(STATE_FILE), state)?;
    before_put_in_place();
    Ok(())
}

/// Replace the run's checkpoint with the staged one: the old one is moved aside first, so a
/// crash between the renames leaves one of the two whole.
fn put_in_place(run_dir: &Path, dir: &Path, tmp: &Path) -> Result<()> {
    let old = run_dir.join(CHECKPOINT_OLD_DIR);
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| io("remove", &old))?;
        }
        std::fs::rename(dir, &old).with_context(|| io("move aside", dir))?;
    }
    std::fs::rename(tmp, dir).with_context(|| io("move into place", dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| io("remove", &old))?;
    }
    Ok(())
}

/// The model and optimiser as the run's checkpoint left them, with its loop state; `model` and
/// `optim` (freshly built, to load into) as they are, at [`LoopState::default`], when the run
/// has no checkpoint.
pub fn load_checkpoint<M: Module>(
    run_dir: &Path,
    model: M,
    optim: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, LoopState)> {
    let Some(dir) = checkpoint_folder(run_dir) else {
        return Ok((model, optim, LoopState::default()));
    };
    let damaged = |file: &str| {
        format!(
            "the checkpoint {} is damaged or unreadable; pass --force to start the run afresh",
            dir.join(file).display()
        )
    };
    let state_text =
        std::fs::read_to_string(dir.join(STATE_FILE)).with_context(|| damaged(STATE_FILE))?;
    let state: LoopState =
        serde_json::from_str(&state_text).with_context(|| damaged(STATE_FILE))?;
    let model = model
        .try_load_file(dir.join(MODEL_FILE))
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| damaged(MODEL_FILE))?;
    let optim = optim
        .load(dir.join(OPTIM_FILE))
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| damaged(OPTIM_FILE))?;
    Ok((model, optim, state))
}

/// The step of the checkpoint a resume would start from (0 without one), from its loop state
/// alone.
pub fn checkpoint_step(run_dir: &Path) -> Result<u64> {
    let Some(dir) = checkpoint_folder(run_dir) else {
        return Ok(0);
    };
    let state = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state)
        .with_context(|| format!("cannot read {}", state.display()))?;
    let state: LoopState = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged; pass --force to start the run afresh",
            state.display()
        )
    })?;
    Ok(state.step)
}

/// The folder a resume loads: `checkpoint/`, or `checkpoint.old/` when a crash between the
/// two renames of [`save_checkpoint`] left only the previous one; `None` without either.
fn checkpoint_folder(run_dir: &Path) -> Option<PathBuf> {
    [CHECKPOINT_DIR, CHECKPOINT_OLD_DIR]
        .into_iter()
        .map(|name| run_dir.join(name))
        .find(|dir| dir.join(STATE_FILE).exists())
}
