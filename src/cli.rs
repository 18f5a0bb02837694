//! Command-line interface: raw flags (clap derive), turned into the library's typed requests,
//! and the dispatch to the library; `outcomes.rs` prints what comes back.
//!
//! Flags are kept raw here; each module validates what it is given and turns it into
//! settings. Nothing here panics on user input: errors travel up as `anyhow` chains.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bn_exp::bench::{self, BenchRequest};
use bn_exp::compare::{self, CompareRequest, CompareTarget};
use bn_exp::config::DeviceKind;
use bn_exp::config::load_config;
use bn_exp::data::{CATALOGUE_ENV, Catalogue, DATA_DIR_ENV, DataSource, Dataset};
use bn_exp::fetch::{self, FetchOptions};
use bn_exp::plot::{self, ImageFormat, PlotRequest};
use bn_exp::reproduce::{self, DEFAULT_FULL_REPORT, FullReport, Mode, ReproduceRequest};
use bn_exp::train::{self, TrainOptions, TrainRequest};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::outcomes::{self, outcome_line, strict_refusal};
use crate::terminal::{Terminal, terminal};

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
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bn-exp", &mut script);
            write_stdout(&script)
        }
        Command::Man => write_stdout(&man_page(Cli::command())?),
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
        studies: args.studies.clone(),
    };
    let outcome = reproduce::reproduce(&request, &*terminal(args.quiet))?;
    Ok(outcomes::print_reproduce(&outcome))
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
    Ok(outcomes::print_compare(
        &outcome,
        request.quiet,
        args.strict,
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

fn run_data(args: &DataArgs) -> Result<ExitCode> {
    let data = args.data.source()?;
    match &args.command {
        DataCommand::Verify => Ok(outcomes::print_verify(&bn_exp::data::verify_all(&data))),
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

/// bytes on stdout, for the generated completion script and man page.
fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    use std::io::Write;
    std::io::stdout()
        .write_all(bytes)
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The man page `bn-exp(1)` in roff, generated from the same definitions as `--help`: the
/// command's sections, then each visible subcommand's name, synopsis, description and options.
fn man_page(command: clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("bn-exp-{}", sub.get_name());
        let sub_man = clap_mangen::Man::new(sub.clone().display_name(name));
        sub_man.render_name_section(&mut page)?;
        sub_man.render_synopsis_section(&mut page)?;
        sub_man.render_description_section(&mut page)?;
        sub_man.render_options_section(&mut page)?;
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

#[derive(Debug, Parser)]
#[command(
    name = "bn-exp",
    version,
    about = "Reproduce Batch Normalization (Ioffe & Szegedy, 2015) on MNIST and CIFAR-10, and test its claims",
    long_about = "bn-exp trains the networks of Ioffe & Szegedy (2015), 'Batch Normalization: \
Accelerating Deep Network Training by Reducing Internal Covariate Shift', with and without BN, \
records convergence and activation distributions, and compares whole studies.\n\n\
Start with:\n  bn-exp train --config configs/mnist_mlp_sigmoid_bn.json",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one network from a JSON config and record metrics, activations and a summary.
    #[command(
        after_help = "Example:\n  bn-exp train --config configs/mnist_mlp_sigmoid_bn.json\n  \
bn-exp train --config configs/smoke.json --set optim.lr=0.5 --set seed=3 --quiet"
    )]
    Train(TrainArgs),
    /// Run a study (a grid of configs over seeds) or compare finished runs in tables.
    #[command(
        after_help = "Examples:\n  bn-exp compare --study configs/studies/paper_fig1.json\n  \
bn-exp compare results/paper_fig1/kind-none_seed-0 results/paper_fig1/kind-batch_seed-0"
    )]
    Compare(CompareArgs),
    /// Draw figures (Figure 1 of the paper, distributions, study plots) from runs and studies.
    #[command(after_help = "Examples:\n  bn-exp plot results/paper_fig1\n  \
bn-exp plot --study results/paper_fig1 --format svg")]
    Plot(PlotArgs),
    /// Check, describe or download the data sets (MNIST, CIFAR-10).
    #[command(
        after_help = "Examples:\n  bn-exp data verify\n  bn-exp data info mnist\n  \
bn-exp data fetch cifar10 --data-dir ~/bn-data"
    )]
    Data(DataArgs),
    /// Time training steps of the paper's MLP, the CIFAR CNN and the Inception, with and without
    /// BN, against PyTorch if asked, with FLOPs and the share of this machine's peak.
    #[command(
        after_help = "Examples:\n  bn-exp bench --json results/bench.json\n  bn-exp bench --only mlp-bn,mlp-layer,mlp-group,mlp-renorm --reps 200\n  \
bn-exp bench --only cnn,cnn-bn,inception,inception-bn --compare-pytorch --threads 1\n  \
bn-exp bench --only cnn-bn --contended"
    )]
    Bench(BenchArgs),
    /// Run every study the paper's claims need and write a report with a verdict per claim.
    #[command(
        after_help = "Examples:\n  bn-exp reproduce --quick --data-dir ~/bn-data           # about 15 min on 2 cores\n  \
bn-exp reproduce --full --jobs 2                        # every study at full length, 3 seeds\n\n\
The report goes to results/reproduce/ (full) or results/reproduce-quick/ (quick): report.html\n\
(self-contained, figures inline), report.md and report.json. Finished runs are reused and\n\
interrupted ones resumed, so the same command continues where it stopped."
    )]
    Reproduce(ReproduceArgs),
    /// Train one entry of a study's plan (compare --study S --plan): what each task of a job
    /// array runs.
    #[command(
        after_help = "Examples:\n  bn-exp compare --study configs/studies/paper_fig1.json --plan\n  \
bn-exp run --plan results/paper_fig1/plan.jsonl --index 3\n  \
SLURM_ARRAY_TASK_ID=3 bn-exp run --plan results/paper_fig1/plan.jsonl\n\n\
A finished run is left as it is, an interrupted one resumes, and a run another task holds is\n\
refused. Exit codes: 0 done, 3 diverged (retrying will not help), 2 error."
    )]
    Run(RunArgs),
    /// Write TensorBoard event files for runs made before bn-exp wrote them (every run writes
    /// its own now, from its records).
    #[command(
        after_help = "Examples:\n  bn-exp export --tensorboard results/paper_fig1\n  \
bn-exp export --tensorboard results      # every study in it\n  tensorboard --logdir results"
    )]
    Export(ExportArgs),
    /// Print a shell completion script for bn-exp to stdout.
    #[command(
        after_help = "Examples:\n  bn-exp completions bash > ~/.local/share/bash-completion/completions/bn-exp\n  \
bn-exp completions zsh > ~/.zfunc/_bn-exp\n  bn-exp completions fish > ~/.config/fish/completions/bn-exp.fish"
    )]
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print bn-exp's man page (roff; every subcommand is a section) to stdout.
    #[command(after_help = "Examples:\n  bn-exp man | man -l -\n  \
bn-exp man > ~/.local/share/man/man1/bn-exp.1")]
    Man,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write each run's TensorBoard event file (events.out.tfevents.bn-exp) from its records.
    #[arg(long, required = true)]
    pub tensorboard: bool,
    /// Run folders, study folders or a results folder of studies.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file (results/<study>/plan.jsonl).
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// The entry to train [default: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX].
    #[arg(long, value_name = "I")]
    pub index: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Take over the run's lock if its holder's heartbeat (every 5 s) has been silent this
    /// many seconds, at least 30: for a holder on a node that crashed. A live holder on this
    /// host is never taken over.
    #[arg(long, value_name = "SECS")]
    pub steal_after: Option<u64>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Fewer steps and 2 seeds, at most about 15 minutes on 2 cores [the default].
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Every study at full length with 3 seeds (hours on 2 cores; the estimate is printed first).
    #[arg(long)]
    pub full: bool,
    /// The claims and their verdict rule.
    #[arg(long, default_value = "configs/claims.json", value_name = "FILE")]
    pub claims: PathBuf,
    /// Root of run folders.
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub results_dir: PathBuf,
    /// Runs trained at once [default: number of cores].
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Folder for the report [default: results/reproduce, or results/reproduce-quick].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The full report whose verdicts a quick report is set against; one named here must be
    /// readable [default: docs/reproduce/report.json, when it is there].
    #[arg(long, value_name = "FILE", conflicts_with = "full")]
    pub full_report: Option<PathBuf>,
    /// Print the plan and the estimated time, and stop: nothing is trained or written.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only these studies (comma separated, e.g. `inception_accelerate`) and judge only
    /// the tests that use them; the report lists the tests left out.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub studies: Option<Vec<String>>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// Where the data sets live: `--data-dir`, else `$BN_EXP_DATA_DIR`, else `./data`.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Folder holding `mnist/` and `cifar-10-batches-bin/` [env: BN_EXP_DATA_DIR] [default: data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// Resolve the data folder from the flag, the environment, or the default `data`.
    pub fn resolve(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("data"))
    }

    /// The data folder and what its files must be.
    pub fn source(&self) -> Result<DataSource> {
        Ok(DataSource {
            dir: self.resolve(),
            catalogue: self.catalogue()?,
        })
    }

    /// What the data files must be: the published checksums, unless `BN_EXP_DATA_CATALOGUE`
    /// names a catalogue file (the test suite's small CIFAR-format set; see
    /// `bn_exp::data::Catalogue`). An environment variable rather than a flag, so that the
    /// runs `compare` starts inherit it.
    pub fn catalogue(&self) -> Result<Catalogue> {
        let path = std::env::var_os(CATALOGUE_ENV).map(PathBuf::from);
        Catalogue::published_or(path.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// JSON config file (see configs/ and docs/config.md).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config field, e.g. `--set optim.lr=0.5` or `--set model.hidden=[50,50]`.
    /// The value is read as JSON, falling back to a plain string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run folder; defaults to `<results-dir>/<study>/<name>` from the config.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Root of run folders when `--out` is not given.
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub results_dir: PathBuf,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Delete an existing run in the target folder and start afresh.
    #[arg(long)]
    pub force: bool,
    /// No progress bar; only errors and the final line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Stop after this many steps this invocation (the run stays resumable). For tests and demos.
    #[arg(long, hide = true, value_name = "N")]
    pub stop_after: Option<u64>,
    /// After this many steps this invocation, print "holding at step N" and sleep until killed,
    /// saving nothing. For the crash-recovery tests.
    #[arg(long, hide = true, value_name = "N", conflicts_with = "stop_after")]
    pub hold_after: Option<u64>,
    /// In the checkpoint of step N, once written and before it is put in place, print
    /// "stopping in the checkpoint of step N" and SIGSTOP this process. For the lock tests.
    #[arg(long, hide = true, value_name = "N")]
    pub stop_in_checkpoint: Option<u64>,
    /// Where to compute: cpu, or gpu (Burn's wgpu backend, in a build with `--features gpu`).
    /// Sets the config's `device` key [default: the config's, else cpu].
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// With --resume: take over the run's lock if its holder's heartbeat (every 5 s) has been
    /// silent this many seconds, at least 30 (a holder on a node that crashed).
    #[arg(long, value_name = "SECS", requires = "resume")]
    pub steal_after: Option<u64>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Study file (configs/studies/*.json): runs what is not finished, then compares.
    #[arg(long, value_name = "FILE", conflicts_with = "dirs")]
    pub study: Option<PathBuf>,
    /// With --study: write results/<study>/plan.jsonl (one run per line, for a scheduler to
    /// run with `bn-exp run --plan FILE --index I`) instead of training.
    // Refused beside the flags a plan would ignore (run folders to compare, and what only a
    // comparison uses): `requires` alone let `--plan DIR` through, and compared DIR instead.
    #[arg(
        long,
        requires = "study",
        conflicts_with_all = ["dirs", "jobs", "baseline", "thresholds", "out", "strict"]
    )]
    pub plan: bool,
    /// With --plan: also write a scheduler file beside the plan: slurm.sh (an sbatch job
    /// array) or k8s-job.yaml (a Kubernetes indexed Job).
    #[arg(long, value_enum, requires = "plan", value_name = "SCHEDULER")]
    pub emit: Option<EmitArg>,
    /// Slurm partition of the array (with --emit slurm).
    #[arg(long, requires = "emit")]
    pub partition: Option<String>,
    /// Slurm account to charge (with --emit slurm).
    #[arg(long, requires = "emit")]
    pub account: Option<String>,
    /// Tasks at once: the array's %P, or the Job's parallelism [default: no limit].
    #[arg(long, requires = "emit", value_name = "P")]
    pub max_parallel: Option<usize>,
    /// An extra #SBATCH line, as `--sbatch-line=--mem=4G` (repeatable).
    #[arg(long, requires = "emit", value_name = "LINE")]
    pub sbatch_line: Vec<String>,
    /// The container image of the Kubernetes Job (with --emit k8s).
    #[arg(long, requires = "emit", default_value = "bn-exp:latest")]
    pub image: String,
    /// Existing run folders (or study folders) to compare instead of running a study.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Runs trained at once [default: number of cores]. With more than one, each run gets one
    /// thread; a single run uses every core. Two studies at once should share the cores the same
    /// way: set RAYON_NUM_THREADS=1 for both.
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Group used as the speed-up baseline (a group label as printed in the table).
    #[arg(long, value_name = "LABEL")]
    pub baseline: Option<String>,
    /// Accuracy thresholds for the steps-to-threshold columns, as fractions or percents.
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    pub thresholds: Option<Vec<f64>>,
    /// Root of run folders.
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub results_dir: PathBuf,
    /// Folder for comparison.md/.csv/.json [default: the study folder; with DIR arguments, the
    /// one study folder given, else the table is only printed].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Exit with status 2 if a damaged file or line of a run was skipped (each is always
    /// named in a warning on stderr).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

/// `--emit`, mapped onto the library's [`compare::Emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmitArg {
    Slurm,
    K8s,
}

/// `--device`, mapped onto the library's [`DeviceKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// Burn's flex backend with bn-exp's fused kernels.
    Cpu,
    /// Burn's wgpu backend (a build with `--features gpu`).
    Gpu,
}

impl From<DeviceArg> for DeviceKind {
    fn from(arg: DeviceArg) -> Self {
        match arg {
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Gpu => DeviceKind::Gpu,
        }
    }
}

/// `--format`, mapped onto the library's [`ImageFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageFormatArg {
    Png,
    Svg,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run or study folders to draw.
    #[arg(value_name = "RUN_OR_STUDY_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Draw the whole set for one study into `<study>/plots/` with an index.
    #[arg(long, value_name = "STUDY_DIR", conflicts_with = "inputs")]
    pub study: Option<PathBuf>,
    /// Output folder [default: `plots/` inside the single input, else `./plots`].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Image format.
    #[arg(long, value_enum, default_value = "png")]
    pub format: ImageFormatArg,
    /// Exit with status 2 after the plots if anything was warned about on stderr (a damaged
    /// file or line skipped, a plot left out).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    Mnist,
    Cifar10,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Check every data set present: magic numbers, sizes and sha256 of the content.
    Verify,
    /// Describe a data set: files, counts, classes, pixel statistics.
    Info {
        #[arg(value_enum)]
        dataset: DatasetName,
    },
    /// Download a data set from its canonical source, verify it, and move it into place.
    Fetch {
        #[arg(value_enum)]
        dataset: DatasetName,
        /// Download from this base URL instead of the canonical mirrors (for mirrors and tests).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Replace files that are already present and valid.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed repetitions per workload (after warm-up); the median is reported.
    #[arg(long, default_value_t = 50)]
    pub reps: usize,
    /// Workloads to run (comma separated) [default: all]: mlp, mlp-bn, cnn, cnn-bn, inception,
    /// inception-bn (the shipped Inception without and with BN), the paper's
    /// MLP with each other normalisation layer (mlp-renorm, mlp-layer, mlp-group, mlp-weight,
    /// mlp-weight-mean-only, mlp-bn-stats4, mlp-renorm-stats4: printed against mlp-bn),
    /// inception-study (the `inception_accelerate` study's BN-x5 net: width 0.125, batch 64),
    /// fig1, measures (what Santurkar et al.'s measures cost a run of the paper's MLP).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Write the numbers as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also run scripts/pytorch_reference.py (needs PyTorch) and print ratios.
    #[arg(long)]
    pub compare_pytorch: bool,
    /// Threads for each step workload, bn-exp's and PyTorch's alike [default: $RAYON_NUM_THREADS,
    /// else one per core]. The Figure 1 runs always use one thread each.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Where the step workloads run: cpu, or gpu (Burn's wgpu backend, in a build with
    /// `--features gpu`; fig1 and measures are CPU-only). Every figure names its device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Also time each step workload beside a busy process pinned to the last core, on one
    /// thread and on the default threads, and print the slowdown (target ≤ 1.3x). Example:
    /// `bn-exp bench --only mlp-bn,cnn-bn --contended`.
    #[arg(long)]
    pub contended: bool,
    /// Internal: time one workload in this process and print its JSON line.
    #[arg(long, hide = true, value_name = "WORKLOAD")]
    pub worker: Option<String>,
    /// Internal: the busy process of `--contended`; spins until killed.
    #[arg(long, hide = true)]
    pub busy: bool,
    #[command(flatten)]
    pub data: DataDirArg,
}

impl From<&DatasetName> for Dataset {
    fn from(name: &DatasetName) -> Self {
        match name {
            DatasetName::Mnist => Dataset::Mnist,
            DatasetName::Cifar10 => Dataset::Cifar10,
        }
    }
}
