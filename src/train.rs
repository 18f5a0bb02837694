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
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor};

use crate::backend;
use crate::config::Config;
use crate::data::{self, DataSource, LoadedData};
use crate::kernels::cross_entropy;
use crate::measures::{Probe, measure};
use crate::metrics::{histogram, percentiles_15_50_85, values_mean_std};
use crate::model::{Mode, Net, Pass, Trace};
use crate::norm::{InferenceSource, InferenceStats, PopulationAccumulator};
use crate::progress::Progress;
use crate::rng::Rng;
use crate::run::{
    ActivationRecord, EvalRecord, FinalInference, Found, LayerStats, LoopState, Percentiles,
    PopulationResult, RecordWriters, Run, RunLock, RunStatus, Summary, TakenOver, TrackedUnit,
    best_acc, claim_run_dir, first_step_reaching, inspect_run_dir, load_checkpoint, new_run_id,
    save_checkpoint, set_up_run_dir, threshold_key, truncate_records_after, write_events,
    write_summary,
};
use crate::tensor::vector_tensor;

/// Exit code of a run that diverged (so sweeps can tell it from an error, which exits 2).
mod batches;
mod step;

use batches::BatchOrder;
pub use batches::DeviceSplit;
pub use step::{StepSeeds, build_optimizer, sgd_step};

pub const EXIT_DIVERGED: u8 = 3;

/// What each of a run's random streams draws ([`Rng::stream`]'s purpose): one enum, so no two
/// purposes can share a number. The numbers are part of every run's results: never reuse one.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Stream {
    Data = 1,
    Probe = 2,
    Dropout = 3,
    Population = 4,
    Noise = 5,
    Augment = 6,
}

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
    truncate_records_after(run_dir, config, state.step)?;

    let probe_indices = Rng::stream(config.seed, Stream::Probe as u64, 0)
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
        let first = BatchOrder::new(
            config.seed,
            Stream::Data as u64,
            runner.train.len,
            config.batch_size,
        )
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
    let mut order = BatchOrder::new(
        config.seed,
        Stream::Data as u64,
        runner.train.len,
        config.batch_size,
    );
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
        let x = self.augmented(x, step);
        net.begin_step(step);
        let seeds = StepSeeds {
            dropout: (self.config.model.dropout > 0.0)
                .then(|| Rng::stream(self.config.seed, Stream::Dropout as u64, step).next_u64()),
            noise: self.noise_seed(step),
        };
        let every = self.config.measures.every;
        if every > 0 && step.is_multiple_of(every) {
            self.take_measures(&net, optim, (&x, &y), seeds, step, lr)?;
        }
        sgd_step(net, optim, x, y, seeds, lr)
    }

    /// Training step `step`'s batch with the config's crops and flips (as it is when off),
    /// drawn from the seed and the step alone, so a resumed run repeats them.
    fn augmented(&self, x: Tensor<2>, step: u64) -> Tensor<2> {
        let augment = &self.config.augment;
        if augment.is_off() {
            return x;
        }
        let image = self.config.image();
        let mut rng = Rng::stream(self.config.seed, Stream::Augment as u64, step);
        let draws = data::draws(augment, x.dims()[0], &mut rng);
        data::augment(x, image.channels, image.side, augment.pad, &draws)
    }

    /// The seed of training step `step`'s noise, when the config has noise.
    fn noise_seed(&self, step: u64) -> Option<u64> {
        self.config
            .norm
            .noise
            .then(|| Rng::stream(self.config.seed, Stream::Noise as u64, step).next_u64())
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
            let logits = m.forward(x.clone().autodiff(), Pass::untraced(mode))?;
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
            let logits = eval_net.forward(x, Pass::untraced(Mode::Infer(stats)))?;
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
        eval_net.forward(x, Pass::traced(mode, &mut trace))?;
        let p = &self.config.probe;
        let layer = self.config.probe_layer();
        let mut unit = trace.pre_activations[layer].unit_values(p.unit);
        let tracked = Percentiles::of(percentiles_15_50_85(&mut unit));
        let layers = trace
            .pre_activations
            .iter()
            .enumerate()
            .map(|(i, pre)| {
                let mut values = pre.values.clone();
                let (mean, std) = values_mean_std(&values);
                let hist = histogram(&values, p.bins, p.lo, p.hi);
                LayerStats {
                    layer: i,
                    units: Some(pre.shape[1]),
                    percentiles: Percentiles::of(percentiles_15_50_85(&mut values)),
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
                percentiles: tracked,
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
            self.config.seed ^ Stream::Population as u64,
            Stream::Data as u64,
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
            eval_net.forward(x, Pass::traced(mode, &mut trace))?;
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
        write_events(self.run_dir)?;
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
        write_events(self.run_dir)?;
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
