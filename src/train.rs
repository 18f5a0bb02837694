//! `bn-exp train`: one run, from config to summary.
//!
//! The loop counts SGD steps, as the paper does. Step s uses mini-batch s of a stream of epochs,
//! each a fresh permutation of the training set drawn from (seed, epoch); a partial batch at the
//! end of an epoch is dropped so every batch has exactly `batch_size` images. Because every random
//! choice derives from (seed, purpose, index), a resumed run repeats the uninterrupted one
//! exactly.
//!
//! Every `eval_every` steps (and at step 0 and the last step) the run evaluates the full test
//! set with BN in inference mode, and probes the pre-activations of every hidden layer on a fixed
//! batch of training images in training mode (the paper's Figure 1 b, c), without touching the
//! running statistics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::backend;
use crate::config::Config;
use crate::data::{DataSource, LoadedData, Split};
use crate::kernels::cross_entropy;
use crate::measures::{Probe, measure};
use crate::metrics::{histogram, percentiles_15_50_85, values_mean_std};
use crate::model::{CLASSES, Mode, Net, Trace};
use crate::norm::{InferenceSource, InferenceStats, PopulationAccumulator};
use crate::progress::Progress;
use crate::rng::Rng;
use crate::run::{
    ActivationRecord, EvalRecord, FinalInference, Found, LayerStats, LoopState, PopulationResult,
    RecordWriters, Run, RunLock, RunStatus, Summary, TakenOver, TrackedUnit, best_acc,
    claim_run_dir, first_step_reaching, inspect_run_dir, load_checkpoint, new_run_id,
    save_checkpoint, set_up_run_dir, threshold_key, truncate_records_after, write_summary,
};
use crate::tensor::vector_tensor;

/// Exit code of a run that diverged (so sweeps can tell it from an error, which exits 2).
pub const EXIT_DIVERGED: u8 = 3;

/// Stream identifiers for [`Rng::stream`].
const STREAM_DATA: u64 = 1;
const STREAM_PROBE: u64 = 2;
const STREAM_DROPOUT: u64 = 3;
const STREAM_POPULATION: u64 = 4;
const STREAM_NOISE: u64 = 5;

/// Settings of one invocation that are not part of the run's config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Stop (resumably) once this many steps have been done in this invocation.
    pub stop_after: Option<u64>,
    /// Once this many steps have been done in this invocation, say so on stderr and sleep
    /// until killed, saving nothing: the files are exactly what a kill at that step finds.
    /// Lets a test place a real SIGKILL at a chosen step instead of racing the run.
    pub hold_after: Option<u64>,
    /// In the checkpoint of this step, once it is written and before it is put in place, say
    /// so on stderr and stop this process (SIGSTOP), as a node that stops answering would:
    /// lets a test take the run over from a holder frozen mid-save, then continue it.
    pub stop_in_checkpoint: Option<u64>,
    /// Take over the run's lock when its holder's heartbeat has been silent this long (a
    /// holder on a crashed node); see [`RunLock`].
    pub steal_after: Option<std::time::Duration>,
}

/// How a training request ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Summary),
    Diverged(Summary),
    /// Stopped by `stop_after` at this step; resumable.
    Stopped(u64),
    /// `--resume` found the run already finished (or diverged); nothing was trained.
    AlreadyDone(Summary),
}

/// One `bn-exp train`, resolved: the config, its run folder, what to do with a run already
/// there, and where the data is.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub config: Config,
    pub run_dir: PathBuf,
    /// Continue the run in `run_dir` (refused if its config differs).
    pub resume: bool,
    /// Delete the run in `run_dir` and start afresh.
    pub force: bool,
    pub data: DataSource,
    pub options: TrainOptions,
}

/// Where a run goes without `--out`: `<results_dir>/<study>/<name>`.
pub fn default_run_dir(results_dir: &Path, config: &Config) -> PathBuf {
    results_dir.join(&config.study).join(&config.name)
}

/// Train (or resume) the run a request describes. Prepares the run folder, loads the data,
/// and trains; a finished run asked to resume is returned as it is.
///
/// Nothing the user did not ask to delete is lost: the run folder is locked for the whole run
/// ([`RunLock`]); everything that can fail before training (the folder's state, the data, the
/// batch against the data) is checked before anything is written; a folder this call created
/// is removed again if that preparation fails; and `--force` removes only the files bn-exp
/// writes.
pub fn train(request: &TrainRequest, progress: &dyn Progress) -> Result<Outcome> {
    let (config, run_dir) = (&request.config, &request.run_dir);
    let claimed = claim_run_dir(run_dir, request.options.steal_after)?;
    if let Some(previous) = &claimed.lock.took_over {
        progress.note(&format!(
            "{} was held by {previous}; continuing from its files",
            run_dir.display()
        ));
    }
    let prepared = (|| {
        let found = inspect_run_dir(run_dir, config, request.resume, request.force)?;
        if let Found::Finished(summary) = found {
            return Ok(Prepared::Done(*summary));
        }
        // A GPU asked for but absent is an error before anything is written.
        let device = backend::device(config.device)?;
        let data = request.data.load(config.dataset, config.preprocess)?;
        config.check_training_set(data.train.len)?;
        set_up_run_dir(run_dir, config, &found)?;
        Ok(Prepared::Ready(data, device))
    })();
    match prepared {
        Ok(Prepared::Done(summary)) => Ok(Outcome::AlreadyDone(summary)),
        Ok(Prepared::Ready(data, device)) => {
            let lock = &claimed.lock;
            run(
                config,
                data,
                device,
                run_dir,
                &request.options,
                lock,
                progress,
            )
            .map_err(|err| {
                match lock.ensure_held() {
                    // Whatever failed (a write racing the take-over), the take-over is the
                    // cause to report.
                    Err(taken) if !err.is::<TakenOver>() => err.context(taken.to_string()),
                    _ => err,
                }
            })
        }
        Err(err) => {
            // Leave no trace of an attempt that never started.
            claimed.abandon();
            Err(err)
        }
    }
}

/// A run folder ready to train into (with the data and the device, both checked), or a run
/// `--resume` found finished.
enum Prepared {
    Ready(LoadedData, Device),
    Done(Summary),
}

/// The exit status of a finished or diverged run: 0, or [`EXIT_DIVERGED`].
pub fn exit_status(summary: &Summary) -> u8 {
    match summary.status {
        RunStatus::Diverged => EXIT_DIVERGED,
        RunStatus::Finished => 0,
    }
}

/// Sleep until the process is killed (see [`TrainOptions::hold_after`]).
/// The line it prints is the hidden `--hold-after` flag's contract with the tests that wait
/// for it, so it goes to stderr directly, not through a [`Progress`] that `--quiet` silences.
fn hold_until_killed(step: u64) -> ! {
    eprintln!("holding at step {step} until killed");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Stop this process where it is (see [`TrainOptions::stop_in_checkpoint`]); it goes on when
/// continued (SIGCONT). The line is the hidden flag's contract with its test.
fn stop_this_process(step: u64) {
    eprintln!("stopping in the checkpoint of step {step}");
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &std::process::id().to_string()])
        .status();
}

/// One line a person reads at the end of a run.
pub fn summary_line(s: &Summary, run_dir: &Path) -> String {
    let pct = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{:.2}%", 100.0 * v));
    let mut line = if s.diverged() {
        format!(
            "{}: DIVERGED at step {} (loss not finite)",
            s.name,
            s.diverged_at.unwrap_or(0)
        )
    } else {
        let stats = match s.final_inference {
            FinalInference::None => String::new(),
            FinalInference::PerExample => " (statistics of each example)".to_string(),
            name => format!(" (inference with {name} statistics)"),
        };
        format!(
            "{}: test accuracy {}{stats}, best {} at step {}",
            s.name,
            pct(s.final_test_acc),
            pct(s.best_test_acc),
            s.best_step.unwrap_or(0)
        )
    };
    let reached: Vec<String> = s
        .steps_to
        .iter()
        .filter_map(|(t, step)| step.map(|st| format!("{t} at {st}")))
        .collect();
    if !reached.is_empty() {
        line += &format!("; reached {}", reached.join(", "));
    }
    line + &format!(
        "; {:.1} s, {:.0} steps/s -> {}",
        s.wall_s,
        s.steps_per_s,
        run_dir.display()
    )
}

/// A data split uploaded once; mini-batches are gathered from it by index, on the device.
///
/// A GPU caps the size of one buffer (wgpu's storage-binding limit; lavapipe refuses MNIST's
/// 188 MB training images in one piece), so the split is uploaded in chunks of at most
/// `backend::max_buffer_bytes` each. On the CPU there is no cap and one chunk.
pub struct DeviceSplit {
    /// `(images [rows, features], one-hot labels [rows, 10])`, `rows_per_chunk` rows each (the
    /// last one fewer). The labels travel with the images, so that a training step gathers its
    /// targets on the device instead of building them on the host.
    chunks: Vec<(Tensor<2>, Tensor<2>)>,
    rows_per_chunk: usize,
    pub labels: Vec<u8>,
    pub len: usize,
    pub features: usize,
}

impl DeviceSplit {
    /// Move a split onto the device (no copy of the images on the CPU backend), in chunks of
    /// at most `max_bytes` of images each (`None`: one chunk).
    pub fn upload(split: Split, device: &Device, max_bytes: Option<usize>) -> Self {
        let features = split.feature_len();
        let row_bytes = features * std::mem::size_of::<f32>();
        let rows_per_chunk = max_bytes
            .map_or(split.len, |max| (max / row_bytes).max(1))
            .clamp(1, split.len.max(1));
        let mut one_hot = vec![0f32; split.len * CLASSES];
        for (row, &label) in split.labels.iter().enumerate() {
            one_hot[row * CLASSES + label as usize] = 1.0;
        }
        let chunks = if rows_per_chunk >= split.len {
            vec![(
                Tensor::from_data(TensorData::new(split.images, [split.len, features]), device),
                Tensor::from_data(TensorData::new(one_hot, [split.len, CLASSES]), device),
            )]
        } else {
            (0..split.len)
                .step_by(rows_per_chunk)
                .map(|start| {
                    let end = (start + rows_per_chunk).min(split.len);
                    let images = split.images[start * features..end * features].to_vec();
                    let targets = one_hot[start * CLASSES..end * CLASSES].to_vec();
                    (
                        Tensor::from_data(TensorData::new(images, [end - start, features]), device),
                        Tensor::from_data(TensorData::new(targets, [end - start, CLASSES]), device),
                    )
                })
                .collect()
        };
        Self {
            chunks,
            rows_per_chunk,
            labels: split.labels,
            len: split.len,
            features,
        }
    }

    /// Images `[n, features]` at `indices`, and their one-hot labels `[n, 10]`: an upload of
    /// the indices, then gathers on the device (one pair per chunk the batch touches, and one
    /// more to put the rows back in the batch's order when it touches several).
    pub fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
        let upload = |idx: Vec<i64>| {
            let n = idx.len();
            Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device)
        };
        if self.chunks.len() == 1 {
            let idx = upload(indices.iter().map(|&i| i as i64).collect());
            let (images, targets) = &self.chunks[0];
            return (
                images.clone().select(0, idx.clone()),
                targets.clone().select(0, idx),
            );
        }
        // The batch's positions bucketed by chunk; gathered chunk by chunk, the rows come out in
        // bucket order, and `back` puts each where the batch has it.
        let mut buckets = vec![Vec::new(); self.chunks.len()];
        for (k, &i) in indices.iter().enumerate() {
            buckets[i / self.rows_per_chunk].push(k);
        }
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for ((images, targets), bucket) in self.chunks.iter().zip(&buckets) {
            if bucket.is_empty() {
                continue;
            }
            let idx = upload(
                bucket
                    .iter()
                    .map(|&k| (indices[k] % self.rows_per_chunk) as i64)
                    .collect(),
            );
            xs.push(images.clone().select(0, idx.clone()));
            ys.push(targets.clone().select(0, idx));
        }
        let mut back = vec![0i64; indices.len()];
        for (position, &k) in buckets.iter().flatten().enumerate() {
            back[k] = position as i64;
        }
        let back = upload(back);
        (
            Tensor::cat(xs, 0).select(0, back.clone()),
            Tensor::cat(ys, 0).select(0, back),
        )
    }

    /// Images `[end - start, features]` of a contiguous range, and their one-hot labels.
    pub fn range(&self, start: usize, end: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        if self.chunks.len() == 1 {
            let (images, targets) = &self.chunks[0];
            return (
                images.clone().slice([start..end, 0..self.features]),
                targets.clone().slice([start..end, 0..CLASSES]),
            );
        }
        self.batch(&(start..end).collect::<Vec<_>>(), device)
    }
}

/// Mini-batch indices for each step: epochs of permutations drawn from the seed.
struct BatchOrder {
    seed: u64,
    n: usize,
    batch: usize,
    epoch: u64,
    perm: Vec<usize>,
}

impl BatchOrder {
    fn new(seed: u64, n: usize, batch: usize) -> Self {
        Self {
            seed,
            n,
            batch,
            epoch: u64::MAX,
            perm: Vec::new(),
        }
    }

    /// Indices of the mini-batch used by step `step` (0-based).
    fn indices(&mut self, step: u64) -> &[usize] {
        let per_epoch = (self.n / self.batch) as u64;
        let epoch = step / per_epoch;
        if epoch != self.epoch {
            self.perm = Rng::stream(self.seed, STREAM_DATA, epoch).permutation(self.n);
            self.epoch = epoch;
        }
        let start = (step % per_epoch) as usize * self.batch;
        &self.perm[start..start + self.batch]
    }
}

/// Everything a run needs while it trains.
struct Runner<'a> {
    config: &'a Config,
    run_dir: &'a Path,
    /// Checked before every write to the folder (`RunLock::ensure_held`): a run another
    /// process took over is never written again.
    lock: &'a RunLock,
    device: Device,
    train_device: Device,
    train: DeviceSplit,
    test: DeviceSplit,
    probe_indices: Vec<usize>,
    /// The run's records: evaluations, probes and, when the config takes measures, measures.
    records: RecordWriters,
}

/// Train (or resume) the run described by `config` into `run_dir`, on `device`, with `data`
/// (both checked by [`train`], which prepared the folder).
///
/// `run_dir` holds `config.json`; a checkpoint in it is resumed from. `lock` is the folder's
/// lock: if another process takes it over, the run stops before its next write.
fn run(
    config: &Config,
    data: LoadedData,
    device: Device,
    run_dir: &Path,
    opts: &TrainOptions,
    lock: &RunLock,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let train_device = device.clone().autodiff();
    let (mut net, mut optim, mut state) = load_checkpoint(
        run_dir,
        config.build_net(&train_device),
        build_optimizer(config),
    )?;
    truncate_records_after(run_dir, state.step)?;

    let probe_indices = Rng::stream(config.seed, STREAM_PROBE, 0)
        .permutation(data.train.len)
        .into_iter()
        .take(config.probe.batch_size.min(data.train.len))
        .collect();
    let mut runner = Runner {
        config,
        run_dir,
        lock,
        train: DeviceSplit::upload(
            data.train,
            &device,
            backend::max_buffer_bytes(config.device),
        ),
        test: DeviceSplit::upload(data.test, &device, backend::max_buffer_bytes(config.device)),
        device,
        train_device,
        probe_indices,
        records: RecordWriters::open(run_dir, config.measures.every > 0)?,
    };

    if state.step == 0 && config.norm.data_init() {
        // The paper's data-dependent initialisation, on the run's first training batch.
        let first = BatchOrder::new(config.seed, runner.train.len, config.batch_size)
            .indices(0)
            .to_vec();
        let (x, _) = runner.train.batch(&first, &runner.device);
        net = net.with_data_init(x.autodiff())?;
    }
    let started = Instant::now() - std::time::Duration::from_secs_f64(state.elapsed_s);
    if state.step == 0 {
        runner.evaluate_and_record(&net, &state, 0.0, started)?;
    }
    progress.begin(&config.name, Some(config.steps), state.step);
    let bar_started = Instant::now();
    let mut order = BatchOrder::new(config.seed, runner.train.len, config.batch_size);
    let mut last_acc = f64::NAN;
    let first_step = state.step;
    while state.step < config.steps {
        if opts
            .stop_after
            .is_some_and(|n| state.step - first_step >= n)
        {
            state.elapsed_s = started.elapsed().as_secs_f64();
            checkpoint(&net, &optim, &state, run_dir, lock, opts)?;
            progress.end();
            return Ok(Outcome::Stopped(state.step));
        }
        if opts
            .hold_after
            .is_some_and(|n| state.step - first_step >= n)
        {
            progress.end();
            hold_until_killed(state.step);
        }
        // The heartbeat notices a take-over within seconds (an atomic read here), so a run
        // taken over stops between writes too; every write checks the file itself first.
        if lock.taken_over() {
            lock.ensure_held()?;
        }
        let t0 = Instant::now();
        let lr = config.optim.lr_at(state.step);
        let indices = order.indices(state.step);
        let (loss, next) = runner.train_step(net, &mut optim, indices, state.step, lr)?;
        state.train_s += t0.elapsed().as_secs_f64();
        let Some(next) = next else {
            progress.end();
            state.elapsed_s = started.elapsed().as_secs_f64();
            let summary = runner.finish_diverged(state.step + 1, &state)?;
            return Ok(Outcome::Diverged(summary));
        };
        net = next;
        state.step += 1;
        state.loss_sum += loss;
        state.loss_count += 1;
        let is_eval = state.step % config.eval_every == 0 || state.step == config.steps;
        if is_eval {
            last_acc = runner.evaluate_and_record(&net, &state, lr, started)?;
            state.loss_sum = 0.0;
            state.loss_count = 0;
        }
        if config.checkpoint_every > 0 && state.step % config.checkpoint_every == 0 {
            state.elapsed_s = started.elapsed().as_secs_f64();
            checkpoint(&net, &optim, &state, run_dir, lock, opts)?;
        }
        if state.step % 25 == 0 || is_eval {
            let rate = (state.step - first_step) as f64 / bar_started.elapsed().as_secs_f64();
            let acc = if last_acc.is_nan() {
                "-".to_string()
            } else {
                format!("{:.2}%", 100.0 * last_acc)
            };
            progress.advance(
                state.step,
                &format!(
                    "step {}/{}  {rate:.0} steps/s  loss {loss:.4}  test acc {acc}",
                    state.step, config.steps
                ),
            );
        }
    }
    progress.end();
    state.elapsed_s = started.elapsed().as_secs_f64();
    let summary = runner.finish(&mut net, &state)?;
    checkpoint(&net, &optim, &state, run_dir, lock, opts)?;
    Ok(Outcome::Finished(summary))
}

/// The seeds of a training step's random draws: its dropout masks and its noise (each `None`
/// when the net has none).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepSeeds {
    pub dropout: Option<u64>,
    pub noise: Option<u64>,
}

impl StepSeeds {
    /// The training-mode forward pass with these draws.
    pub fn mode(self, update_running: bool) -> Mode {
        Mode::Train {
            update_running,
            dropout_seed: self.dropout,
            noise_seed: self.noise,
        }
    }
}

/// One SGD step on the mini-batch `x` (`[N, features]`) with one-hot labels `y`: the forward
/// pass in training mode (BN updating its running statistics, dropout masks and noise from
/// `seeds`), softmax cross-entropy, the backward pass and the optimiser's update at `lr`.
/// Returns the mini-batch loss and the updated net, or `None` for the net when the loss is not
/// finite (the run diverged; no update is made). Training and `bench` both step through here.
pub fn sgd_step(
    net: Net,
    optim: &mut ModuleOptimizer,
    x: Tensor<2>,
    y: Tensor<2>,
    seeds: StepSeeds,
    lr: f64,
) -> Result<(f64, Option<Net>)> {
    let mode = seeds.mode(true);
    let logits = net.forward(x.autodiff(), mode, None)?;
    let loss = cross_entropy(logits, y.autodiff());
    let value = f64::from(loss.clone().into_scalar::<f32>());
    if !value.is_finite() {
        return Ok((value, None));
    }
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    Ok((value, Some(optim.step(lr, net, grads))))
}

pub fn build_optimizer(config: &Config) -> ModuleOptimizer {
    let o = &config.optim;
    let mut sgd = SgdConfig::new();
    if o.momentum > 0.0 {
        sgd = sgd.with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(o.momentum)
                .with_dampening(0.0),
        ));
    }
    if o.weight_decay > 0.0 {
        sgd = sgd.with_weight_decay(Some(WeightDecayConfig::new(o.weight_decay as f32)));
    }
    sgd.init()
}

impl Runner<'_> {
    /// One SGD step. Returns the mini-batch loss and the updated net, or None for the net if
    /// the loss was not finite (the run diverged; the net is left as it was).
    fn train_step(
        &mut self,
        net: Net,
        optim: &mut ModuleOptimizer,
        indices: &[usize],
        step: u64,
        lr: f64,
    ) -> Result<(f64, Option<Net>)> {
        let (x, y) = self.train.batch(indices, &self.device);
        net.begin_step(step);
        let seeds = StepSeeds {
            dropout: (self.config.model.dropout > 0.0)
                .then(|| Rng::stream(self.config.seed, STREAM_DROPOUT, step).next_u64()),
            noise: self.noise_seed(step),
        };
        let every = self.config.measures.every;
        if every > 0 && step.is_multiple_of(every) {
            self.take_measures(&net, optim, (&x, &y), seeds, step, lr)?;
        }
        sgd_step(net, optim, x, y, seeds, lr)
    }

    /// The seed of training step `step`'s noise, when the config has noise.
    fn noise_seed(&self, step: u64) -> Option<u64> {
        self.config
            .norm
            .noise
            .then(|| Rng::stream(self.config.seed, STREAM_NOISE, step).next_u64())
    }

    /// Santurkar et al.'s measures on step `step`'s batch, before its update, appended to
    /// `measures.jsonl`. The passes see the step's own dropout masks and noise and leave the
    /// running statistics, the optimiser and the net as they were.
    fn take_measures(
        &mut self,
        net: &Net,
        optim: &ModuleOptimizer,
        (x, y): (&Tensor<2>, &Tensor<2>),
        seeds: StepSeeds,
        step: u64,
        lr: f64,
    ) -> Result<()> {
        let mode = seeds.mode(false);
        let loss_of = |m: &Net| -> Result<Tensor<1>> {
            let logits = m.forward(x.clone().autodiff(), mode, None)?;
            Ok(cross_entropy(logits, y.clone().autodiff()))
        };
        let layers = net.weight_layers();
        let probe = Probe {
            optimizer: optim,
            lr,
            layers: &layers,
            lr_multiples: &self.config.measures.lr_multiples,
        };
        let record = measure(net, &loss_of, &probe, step)?;
        self.lock.ensure_held()?;
        self.records.measures(&record)
    }

    /// Test loss and accuracy on the full test set with `stats`.
    fn evaluate(&self, net: &Net, stats: InferenceStats) -> Result<(f64, f64)> {
        let eval_net = net.valid();
        let n = self.test.len;
        let bs = self.config.eval_batch_size;
        let mut loss_sum = 0.0;
        let mut correct = 0usize;
        for start in (0..n).step_by(bs) {
            let end = (start + bs).min(n);
            let (x, y) = self.test.range(start, end, &self.device);
            let logits = eval_net.forward(x, Mode::Infer(stats), None)?;
            let loss = cross_entropy(logits.clone(), y);
            loss_sum += f64::from(loss.into_scalar::<f32>()) * (end - start) as f64;
            let pred = logits.argmax(1).into_data().convert::<i64>();
            let pred = pred
                .as_slice::<i64>()
                .expect("argmax gives i64 after convert");
            correct += pred
                .iter()
                .zip(&self.test.labels[start..end])
                .filter(|(p, l)| **p == i64::from(**l))
                .count();
        }
        Ok((loss_sum / n as f64, correct as f64 / n as f64))
    }

    /// Evaluate, probe, and append one evaluation record and one activation record. Returns
    /// the test accuracy.
    fn evaluate_and_record(
        &mut self,
        net: &Net,
        state: &LoopState,
        lr: f64,
        started: Instant,
    ) -> Result<f64> {
        let (test_loss, test_acc) = self.evaluate(net, self.config.norm.training_eval_stats())?;
        let record = EvalRecord {
            step: state.step,
            train_loss: (state.loss_count > 0).then(|| state.loss_sum / state.loss_count as f64),
            test_loss: Some(test_loss),
            test_acc: Some(test_acc),
            lr: Some(lr),
            elapsed_s: Some(started.elapsed().as_secs_f64()),
        };
        self.lock.ensure_held()?;
        self.records.eval(&record)?;
        let activations = self.probe(net, state.step)?;
        self.records.activations(&activations)?;
        Ok(test_acc)
    }

    /// Pre-activation statistics of every hidden layer on the probe batch, in training mode
    /// (batch statistics, as the paper's Figure 1) without updating running statistics.
    fn probe(&self, net: &Net, step: u64) -> Result<ActivationRecord> {
        let eval_net = net.valid();
        let (x, _) = self.train.batch(&self.probe_indices, &self.device);
        let mut trace = Trace::default();
        // The noise of this step's training pass, if the net has noise: the distribution the
        // next layer sees is the point of the probe.
        let mode = Mode::Train {
            update_running: false,
            dropout_seed: None,
            noise_seed: self.noise_seed(step),
        };
        eval_net.forward(x, mode, Some(&mut trace))?;
        let p = &self.config.probe;
        let layer = self.config.probe_layer();
        let mut unit = trace.pre_activations[layer].unit_values(p.unit);
        let [p15, p50, p85] = percentiles_15_50_85(&mut unit);
        let layers = trace
            .pre_activations
            .iter()
            .enumerate()
            .map(|(i, pre)| {
                let mut values = pre.values.clone();
                let (mean, std) = values_mean_std(&values);
                let hist = histogram(&values, p.bins, p.lo, p.hi);
                let [p15, p50, p85] = percentiles_15_50_85(&mut values);
                LayerStats {
                    layer: i,
                    units: Some(pre.shape[1]),
                    p15: Some(p15),
                    p50: Some(p50),
                    p85: Some(p85),
                    mean: Some(mean),
                    std: Some(std),
                    hist,
                }
            })
            .collect();
        Ok(ActivationRecord {
            step,
            tracked: TrackedUnit {
                layer: Some(layer),
                unit: Some(p.unit),
                p15: Some(p15),
                p50: Some(p50),
                p85: Some(p85),
            },
            layers,
        })
    }

    /// The paper's Algorithm 2 population pass: average μ_B and σ²_B of every BN layer over K
    /// training mini-batches (drawn from the seed), and store E[x] and m/(m−1)·E[σ²_B].
    fn population_pass(&self, net: &Net) -> Result<usize> {
        let eval_net = net.valid();
        let k = self.config.norm.population_batches;
        let mut order = BatchOrder::new(
            self.config.seed ^ STREAM_POPULATION,
            self.train.len,
            self.config.batch_size,
        );
        let mut accs = vec![PopulationAccumulator::default(); net.norms().len()];
        // No noise: the population statistics describe the inputs inference will see, and
        // inference runs without noise. (In a noisy net layer i's noise does reach BN i+1, so
        // the moving averages, learned in training, are of noisy inputs; the population pass's
        // are not.)
        let mode = Mode::Train {
            update_running: false,
            dropout_seed: None,
            noise_seed: None,
        };
        for b in 0..k as u64 {
            let (x, _) = self.train.batch(order.indices(b), &self.device);
            let mut trace = Trace::default();
            eval_net.forward(x, mode, Some(&mut trace))?;
            for (acc, stats) in accs.iter_mut().zip(&trace.bn_stats) {
                acc.add(stats);
            }
        }
        for (norm, acc) in net.norms().iter().zip(&accs) {
            let (mean, var) = acc.finish().context("population pass saw no batch")?;
            norm.set_population(
                vector_tensor(&mean, &self.train_device),
                vector_tensor(&var, &self.train_device),
            );
        }
        Ok(k)
    }

    /// Population pass (if asked), summary, and the final line of output.
    fn finish(&mut self, net: &mut Net, state: &LoopState) -> Result<Summary> {
        let run = Run::read(self.run_dir);
        // The final accuracy as every reader defines it (the last evaluation with one).
        let last = run
            .metrics
            .iter()
            .rev()
            .find(|m| m.test_acc.is_some())
            .context("the run recorded no evaluation")?;
        let mut final_metrics = (last.test_acc, last.test_loss);
        let keeps_statistics = self.config.norm.keeps_statistics();
        let mut final_inference = match self.config.norm.inference_source() {
            InferenceSource::Kept => final_inference_of(self.config.norm.training_eval_stats()),
            InferenceSource::PerExample => FinalInference::PerExample,
            InferenceSource::None => FinalInference::None,
        };
        let mut population = None;
        if keeps_statistics && self.config.norm.population_pass {
            let batches = self.population_pass(net)?;
            let (loss, acc) = self.evaluate(net, InferenceStats::Population)?;
            population = Some(PopulationResult {
                test_acc: acc,
                test_loss: loss,
                batches,
            });
            if self.config.norm.inference == InferenceStats::Population {
                final_metrics = (Some(acc), Some(loss));
                final_inference = FinalInference::Population;
            }
        }
        let summary = Summary {
            status: RunStatus::Finished,
            final_test_acc: final_metrics.0,
            final_test_loss: final_metrics.1,
            final_inference,
            population,
            ..self.summary(state, &run)
        };
        self.lock.ensure_held()?;
        write_summary(self.run_dir, &summary)?;
        Ok(summary)
    }

    /// Summary of a run whose loss stopped being finite at step `at`.
    fn finish_diverged(&mut self, at: u64, state: &LoopState) -> Result<Summary> {
        let run = Run::read(self.run_dir);
        let last = run.metrics.last();
        let summary = Summary {
            status: RunStatus::Diverged,
            diverged_at: Some(at),
            final_test_acc: last.and_then(|m| m.test_acc),
            final_test_loss: last.and_then(|m| m.test_loss),
            final_inference: FinalInference::None,
            ..self.summary(state, &run)
        };
        self.lock.ensure_held()?;
        write_summary(self.run_dir, &summary)?;
        Ok(summary)
    }

    /// What every summary holds, from the run's own files as the run module reads them: best
    /// accuracy, steps to each threshold, drift, timings. The caller sets status and finals.
    fn summary(&self, state: &LoopState, run: &Run) -> Summary {
        let metrics: &[EvalRecord] = &run.metrics;
        let best = best_acc(metrics);
        let steps_to = self
            .config
            .thresholds
            .iter()
            .map(|&t| (threshold_key(t), first_step_reaching(metrics, t)))
            .collect();
        Summary {
            name: self.config.name.clone(),
            study: self.config.study.clone(),
            steps: state.step,
            best_test_acc: best.map(|b| b.0),
            best_step: best.map(|b| b.1),
            steps_to,
            drift: run.drift(self.config.steps),
            wall_s: state.elapsed_s,
            steps_per_s: if state.train_s > 0.0 {
                state.step as f64 / state.train_s
            } else {
                0.0
            },
            backend: backend::backend_of(&self.train_device).to_string(),
            device: backend::device_name(self.config.device).unwrap_or_default(),
            threads: backend::threads(),
            run_id: new_run_id(),
            ..Summary::default()
        }
    }
}

/// The statistics inference used with `stats`, as the summary names them.
fn final_inference_of(stats: InferenceStats) -> FinalInference {
    match stats {
        InferenceStats::Moving => FinalInference::Moving,
        InferenceStats::Population => FinalInference::Population,
        InferenceStats::Batch => FinalInference::Batch,
    }
}

/// Save the run's checkpoint (see [`save_checkpoint`]), stopping this process in it when
/// [`TrainOptions::stop_in_checkpoint`] asks for this step.
fn checkpoint(
    net: &Net,
    optim: &ModuleOptimizer,
    state: &LoopState,
    run_dir: &Path,
    lock: &RunLock,
    opts: &TrainOptions,
) -> Result<()> {
    // `valid()` syncs the running statistics: a RunningState's stored value can lag its last
    // update by one step, and a checkpoint must hold the value the next step will read.
    save_checkpoint(run_dir, net.valid(), optim, state, lock, || {
        if opts.stop_in_checkpoint == Some(state.step) {
            stop_this_process(state.step);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::tensor_to_f32 as host;

    /// A split of `n` 3-value images whose values and labels name their row.
    fn numbered_split(n: usize) -> Split {
        Split {
            images: (0..n * 3).map(|v| v as f32).collect(),
            labels: (0..n).map(|i| (i % CLASSES) as u8).collect(),
            len: n,
            channels: 3,
            height: 1,
            width: 1,
        }
    }

    /// The GPU uploads data in chunks; gathered through several chunks (uneven, one of them
    /// untouched), a batch and a range are the rows of the split in the batch's own order.
    #[test]
    fn a_split_in_chunks_gathers_the_same_rows_as_one_piece() {
        let device = Device::flex();
        let whole = DeviceSplit::upload(numbered_split(23), &device, None);
        // 5 rows of 12 bytes per chunk: 5 chunks, the last one of 3 rows.
        let chunked = DeviceSplit::upload(numbered_split(23), &device, Some(60));
        assert_eq!(chunked.chunks.len(), 5);
        let indices = [22, 0, 7, 3, 22, 14, 6, 1];
        let (x, y) = chunked.batch(&indices, &device);
        let (x1, y1) = whole.batch(&indices, &device);
        let x = host(x);
        assert_eq!(x, host(x1));
        assert_eq!(host(y), host(y1));
        // Row k of the batch is image indices[k]: values 3i, 3i+1, 3i+2.
        for (k, &i) in indices.iter().enumerate() {
            assert_eq!(x[3 * k], (3 * i) as f32);
        }
        let (r, t) = chunked.range(4, 17, &device);
        let (r1, t1) = whole.range(4, 17, &device);
        assert_eq!(host(r), host(r1));
        assert_eq!(host(t), host(t1));
    }
}
