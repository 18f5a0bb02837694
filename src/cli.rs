//! Command-line interface: raw flags (clap derive, in `cli/args.rs`) and the dispatch to the
//! library.
//!
//! Flags are kept raw here; each module validates what it is given and turns it into
//! settings. Nothing here panics on user input: errors travel up as `anyhow` chains.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use bn_exp::bench::{self, BenchRequest};
use bn_exp::compare::{self, CompareRequest, CompareTarget};
use bn_exp::config::load_config;
use bn_exp::data::Dataset;
use bn_exp::fetch::{self, FetchOptions};
use bn_exp::plot::{self, ImageFormat, PlotRequest};
use bn_exp::reproduce::{self, DEFAULT_FULL_REPORT, FullReport, Mode, ReproduceRequest};
use bn_exp::train::{self, Outcome, TrainOptions, TrainRequest};
use clap::{CommandFactory, Parser};

use crate::manual;
use crate::terminal::{Terminal, terminal};

mod args;

pub use args::*;

/// Exit status of `compare` when the comparison was made but some runs failed to train.
const EXIT_RUNS_FAILED: u8 = 1;
/// Exit status of `data verify` when a data set is damaged or incomplete, or none is there:
/// an error, like every other.
const EXIT_DATA_DAMAGED: u8 = 2;
/// Exit status of `compare --strict` when a damaged file or line was skipped, and of `plot
/// --strict` after any warning.
const EXIT_SKIPPED_DAMAGE: u8 = 2;

/// Parse the process arguments, run the chosen command, print what it produced, and return
/// the exit status: 0 ok, 2 error (from `main`, and `data verify` on damaged or missing data),
/// 3 a diverged run, 1 a study whose runs partly failed.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(args) => run_train(&args),
        Command::Compare(args) => run_compare(args),
        Command::Plot(args) => run_plot(args),
        Command::Data(args) => run_data(&args),
        Command::Bench(args) => run_bench(&args),
        Command::Reproduce(args) => run_reproduce(&args),
        Command::Run(args) => run_plan_entry(&args),
        Command::Export(args) => {
            let written = bn_exp::run::export_events(&args.dirs)?;
            println!(
                "wrote {} TensorBoard event file(s); view them with `tensorboard --logdir {}`",
                written.len(),
                args.dirs[0].display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            manual::print_completions(&mut Cli::command(), shell)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            manual::print_man_page(Cli::command())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_plan_entry(args: &RunArgs) -> Result<ExitCode> {
    let index = compare::task_index(args.index)?;
    let (entry, outcome) = compare::run_entry(
        &args.plan,
        index,
        args.data.source()?,
        args.steal_after.map(std::time::Duration::from_secs),
        &*terminal(args.quiet),
    )?;
    let who = format!("plan entry {index} ({})", entry.name);
    let (line, code) = outcome_line(outcome, &entry.run_dir, &who, |step| {
        format!("{who} stopped at step {step}")
    });
    println!("{line}");
    Ok(ExitCode::from(code))
}

/// What a run's outcome prints, and the exit status it gives (train's for a run that ended, 0
/// for one stopped early): `who` names the run in "already finished", `stopped` words the line
/// of a run stopped at a step.
fn outcome_line(
    outcome: Outcome,
    run_dir: &Path,
    who: &str,
    stopped: impl FnOnce(u64) -> String,
) -> (String, u8) {
    match outcome {
        Outcome::Finished(summary) | Outcome::Diverged(summary) => (
            train::summary_line(&summary, run_dir),
            train::exit_status(&summary),
        ),
        Outcome::AlreadyDone(summary) => (
            format!("{who} already finished ({}); nothing to do", summary.status),
            train::exit_status(&summary),
        ),
        Outcome::Stopped(step) => (stopped(step), 0),
    }
}

/// `wrote a, b, c`: the files a command wrote.
fn wrote_line(written: &[PathBuf]) -> String {
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    format!("wrote {}", names.join(", "))
}

/// The end of a command whose runs may have failed: each failure on stderr, then how many and
/// `then` (what follows from it), and [`EXIT_RUNS_FAILED`]; success when none failed.
fn runs_failed(failures: &[String], then: &str) -> ExitCode {
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    for failure in failures {
        eprintln!("{failure}");
    }
    eprintln!("{} run(s) failed{then}", failures.len());
    ExitCode::from(EXIT_RUNS_FAILED)
}

fn run_reproduce(args: &ReproduceArgs) -> Result<ExitCode> {
    let request = ReproduceRequest {
        mode: if args.full { Mode::Full } else { Mode::Quick },
        claims_file: args.claims.clone(),
        results_dir: args.results_dir.clone(),
        data: args.data.source()?,
        jobs: args.jobs,
        out: args.out.clone(),
        full_report: match &args.full_report {
            Some(path) => FullReport::Named(path.clone()),
            None => FullReport::Default(PathBuf::from(DEFAULT_FULL_REPORT)),
        },
        dry_run: args.dry_run,
    };
    let outcome = reproduce::reproduce(&request, &*terminal(args.quiet))?;
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    let Some(report) = &outcome.report else {
        println!(
            "dry run: estimated {} of wall time; nothing was trained",
            reproduce::format_duration(outcome.estimated_s)
        );
        return Ok(ExitCode::SUCCESS);
    };
    for (i, claim) in report.claims.iter().enumerate() {
        println!(
            "{:>2}. {:<14} {}",
            i + 1,
            claim.verdict.label(),
            claim.statement
        );
    }
    println!("{}", wrote_line(&outcome.written));
    Ok(runs_failed(
        &outcome.failures,
        " and are missing from the verdicts; rerun the same command to retry them",
    ))
}

fn run_train(args: &TrainArgs) -> Result<ExitCode> {
    let mut config = load_config(&args.config, &args.overrides)?;
    if let Some(device) = args.device {
        config.device = device.into();
    }
    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| train::default_run_dir(&args.results_dir, &config));
    let request = TrainRequest {
        run_dir: run_dir.clone(),
        resume: args.resume,
        force: args.force,
        data: args.data.source()?,
        options: TrainOptions {
            stop_after: args.stop_after,
            hold_after: args.hold_after,
            stop_in_checkpoint: args.stop_in_checkpoint,
            steal_after: args.steal_after.map(std::time::Duration::from_secs),
        },
        config,
    };
    let outcome = train::train(&request, &*terminal(args.quiet))?;
    let (line, code) = outcome_line(outcome, &run_dir, &run_dir.display().to_string(), |step| {
        format!(
            "stopped at step {step} of {}; continue with --resume ({})",
            request.config.steps,
            run_dir.display()
        )
    });
    println!("{line}");
    Ok(ExitCode::from(code))
}

fn run_compare(args: CompareArgs) -> Result<ExitCode> {
    if let (true, Some(study)) = (args.plan, &args.study) {
        let emit = match args.emit {
            Some(kind) => {
                let options = compare::EmitOptions {
                    partition: args.partition.clone(),
                    account: args.account.clone(),
                    max_parallel: args.max_parallel,
                    sbatch_lines: args.sbatch_line.clone(),
                    data_dir: args.data.source()?.dir,
                    image: args.image.clone(),
                };
                let kind = match kind {
                    EmitArg::Slurm => compare::Emit::Slurm,
                    EmitArg::K8s => compare::Emit::K8s,
                };
                // Refused flags leave nothing written, not even the plan.
                options.check(kind, &args.results_dir)?;
                Some((kind, options))
            }
            None => None,
        };
        let outcome = compare::write_plan(study, &args.results_dir)?;
        println!(
            "wrote {}: {} runs ({} already finished); run entry I with `bn-exp run --plan {} \
             --index I`, I from 0 to {}",
            outcome.path.display(),
            outcome.runs,
            outcome.done,
            outcome.path.display(),
            outcome.runs.saturating_sub(1)
        );
        if let Some((kind, options)) = emit {
            let path = compare::emit(&outcome.path, kind, &options)?;
            println!("wrote {}", path.display());
            if kind == compare::Emit::Slurm {
                println!(
                    "submit it with `sbatch {}`; when the array is done, `bn-exp compare --study \
                     {}` collects the runs",
                    path.display(),
                    study.display()
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = match args.study {
        Some(file) => CompareTarget::Study(file),
        None => CompareTarget::Dirs(args.dirs),
    };
    let request = CompareRequest {
        target,
        jobs: args.jobs,
        baseline: args.baseline,
        thresholds: args.thresholds,
        results_dir: args.results_dir,
        out: args.out,
        quiet: args.quiet,
        data: args.data.source()?,
    };
    let outcome = compare::compare(&request, &*terminal(request.quiet))?;
    let skipped = outcome.skipped();
    for warning in &skipped {
        eprintln!("warning: {warning}");
    }
    if args.strict && !skipped.is_empty() {
        return Ok(strict_refusal(
            skipped.len(),
            "damaged file(s) or line(s) were skipped",
        ));
    }
    if outcome.comparison.is_some() {
        print!("{}", outcome.text);
    } else {
        eprintln!("no finished runs to compare");
    }
    if !request.quiet && !outcome.written.is_empty() {
        eprintln!("{}", wrote_line(&outcome.written));
    }
    Ok(runs_failed(
        &outcome.failures,
        "; rerun the same command to retry them",
    ))
}

fn run_plot(args: PlotArgs) -> Result<ExitCode> {
    let format = match args.format {
        ImageFormatArg::Png => ImageFormat::Png,
        ImageFormatArg::Svg => ImageFormat::Svg,
    };
    let mut request = match args.study {
        Some(study) => PlotRequest::study(study),
        None if args.inputs.is_empty() => bail!(
            "nothing to plot: give one or more run or study folders, e.g. `bn-exp plot \
             results/paper_fig1`, or `--study DIR`"
        ),
        None => {
            let out = PlotRequest::default_out(&args.inputs);
            PlotRequest::new(args.inputs, out)
        }
    };
    if let Some(out) = args.out {
        request.out = out;
    }
    request.format = format;
    let report = plot::make_plots(&request)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", report.describe(&request.out));
    if args.strict && !report.warnings.is_empty() {
        return Ok(strict_refusal(report.warnings.len(), "warning(s)"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--strict`'s error after `count` warnings, `what` they were.
fn strict_refusal(count: usize, what: &str) -> ExitCode {
    eprintln!("error: --strict: {count} {what} (see the warnings above)");
    ExitCode::from(EXIT_SKIPPED_DAMAGE)
}

fn run_data(args: &DataArgs) -> Result<ExitCode> {
    let data = args.data.source()?;
    match &args.command {
        DataCommand::Verify => {
            let outcome = bn_exp::data::verify_all(&data);
            print!("{}", outcome.render());
            println!();
            if outcome.ok {
                println!("{}", outcome.verdict);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: {}", outcome.verdict);
                Ok(ExitCode::from(EXIT_DATA_DAMAGED))
            }
        }
        DataCommand::Info { dataset } => {
            print!("{}", bn_exp::data::describe(&data, dataset.into())?);
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Fetch {
            dataset,
            base_url,
            force,
        } => {
            let dataset = Dataset::from(dataset);
            let options = FetchOptions {
                catalogue: data.catalogue.clone(),
                base_url: base_url.clone(),
                force: *force,
            };
            let outcome = fetch::fetch(&data.dir, dataset, &options, &Terminal::new())?;
            println!("{}", outcome.describe(&data.dir, dataset, &options));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_bench(args: &BenchArgs) -> Result<ExitCode> {
    if args.busy {
        bench::busy_loop();
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(worker) = &args.worker {
        let result = bench::time_steps(worker, args.reps, args.device.into())?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    let request = BenchRequest {
        reps: args.reps,
        only: args.only.clone(),
        json: args.json.clone(),
        compare_pytorch: args.compare_pytorch,
        threads: args.threads.map(|t| t as usize),
        data_dir: args.data.resolve(),
        device: args.device.into(),
        contended: args.contended,
    };
    bench::bench(&request, &Terminal::new())?;
    Ok(ExitCode::SUCCESS)
}
