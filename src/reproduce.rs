//! `bn-exp reproduce`: run every study the claims need, judge each claim by the rule fixed in
//! `configs/claims.json`, and write a report (`report.html`, `report.md`, `report.json`).
//!
//! - `--full` runs the shipped studies as they are, into `<results>/<study>/`, so runs that
//!   `compare --study` already trained are reused and interrupted ones resumed.
//! - `--quick` lays the claims file's `quick` settings (fewer steps, 2 seeds) over every run
//!   and trains into `<results>/reproduce-quick/<study>/`, so it never mixes with full runs;
//!   studies the quick settings leave out are not run, and their tests say so.
//!
//! Training is `compare`'s machinery, called as a library function per study; one progress bar
//! covers the suite, its units being the estimated seconds of the runs still to train.

pub mod claims;
pub mod outcome;
pub mod provenance;
pub mod report;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::bench::estimate;
pub use crate::bench::estimate::format_duration;
use crate::compare::{
    CompareRequest, CompareTarget, PlannedRun, RunRecord, Study, check_run_configs, compare,
    default_jobs, describe_spec, load_study, matches_spec, parse_study, resolve_base,
    spec_picks_one_group,
};
use crate::data::DataSource;
use crate::progress::Progress;
use crate::run::{PLOTS_DIR, RunProgress, RunStatus, first_step_reaching, run_progress};
use claims::{ClaimTest, ClaimsFile, Metric, load_claims, study_file};
pub use outcome::{ClaimOutcome, Mode, PlannedStudy, StudyRuns, TestOutcome};
use verdict::{Verdict, combine, judge};

/// One `bn-exp reproduce`, resolved from its flags.
#[derive(Debug, Clone)]
pub struct ReproduceRequest {
    pub mode: Mode,
    /// `configs/claims.json`; the studies are in `studies/` beside it.
    pub claims_file: PathBuf,
    /// Root of the run folders (`results`).
    pub results_dir: PathBuf,
    pub data: DataSource,
    /// Runs trained at once; `None`: one per core.
    pub jobs: Option<usize>,
    /// Where the report goes; `None`: `<results>/reproduce/` (full) or
    /// `<results>/reproduce-quick/` (quick).
    pub out: Option<PathBuf>,
    /// The full report's `report.json`, whose verdicts a quick report is set against.
    pub full_report: FullReport,
    /// Plan and estimate only: train nothing, write nothing.
    pub dry_run: bool,
    /// Only these studies (`--studies`); `None`: every study a claim uses.
    pub studies: Option<Vec<String>>,
}

/// Where the committed full report is, from the repository's root: what a quick reproduction
/// is set against unless told otherwise.
pub const DEFAULT_FULL_REPORT: &str = "docs/reproduce/report.json";

/// The full report whose verdicts a quick report is set against (a full one sets none).
#[derive(Debug, Clone)]
pub enum FullReport {
    /// None: the quick verdicts stand alone.
    None,
    /// A file the user named: it must be a readable report, or the reproduction stops before
    /// anything trains.
    Named(PathBuf),
    /// The committed report (`docs/reproduce/report.json`), used when it is there: a missing
    /// one is noted, a damaged one is warned about ([`ReproduceOutcome::warnings`]).
    Default(PathBuf),
}

/// What a reproduction produced.
#[derive(Debug)]
pub struct ReproduceOutcome {
    /// `None` for a dry run.
    pub report: Option<report::Report>,
    /// The estimate printed before training, in seconds of wall time.
    pub estimated_s: f64,
    pub written: Vec<PathBuf>,
    /// Runs that failed to train, by study.
    pub failures: Vec<String>,
    /// What the person who asked must hear even without a progress bar (a damaged committed
    /// full report that was left out, a damaged file or line of a run that was skipped).
    pub warnings: Vec<String>,
}

/// The folder a mode trains into and the folder its report goes to.
fn folders(request: &ReproduceRequest) -> (PathBuf, PathBuf) {
    match request.mode {
        Mode::Full => (
            request.results_dir.clone(),
            request
                .out
                .clone()
                .unwrap_or_else(|| request.results_dir.join("reproduce")),
        ),
        Mode::Quick => {
            let root = request.results_dir.join("reproduce-quick");
            (root.clone(), request.out.clone().unwrap_or(root))
        }
    }
}

/// Run the suite and write the report.
pub fn reproduce(request: &ReproduceRequest, progress: &dyn Progress) -> Result<ReproduceOutcome> {
    let started = Instant::now();
    let studies_dir = request
        .claims_file
        .parent()
        .map(|p| p.join("studies"))
        .unwrap_or_else(|| PathBuf::from("studies"));
    let claims = load_claims(&request.claims_file, &studies_dir)?;
    let mut warnings = Vec::new();
    // Read before anything trains: a file the user named and bn-exp cannot use stops the
    // reproduction now, not after the runs.
    let full_verdicts = full_verdicts(request, progress, &mut warnings)?;
    let (runs_root, out_dir) = folders(request);
    let only = request.studies.as_deref();
    let (plan, derived) = plan_studies(&claims, &studies_dir, &runs_root, request.mode, only)?;
    let jobs = request.jobs.unwrap_or_else(default_jobs).max(1);
    let costs = estimate::calibrate()?;
    let remaining: Vec<Remaining> = plan
        .iter()
        .map(|p| Remaining::of(&p.study, &p.dir, &costs, jobs))
        .collect();
    let total: f64 = remaining.iter().map(|r| r.seconds).sum();
    progress.result(&format!(
        "reproduce ({}): {} studies, {} runs to train; estimated {} on {jobs} job(s) (bench: \
         {}, one thread)",
        mode_name(request.mode),
        plan.len(),
        remaining.iter().map(|r| r.runs).sum::<usize>(),
        format_duration(total),
        costs.describe(),
    ));
    for (p, r) in plan.iter().zip(&remaining) {
        progress.note(&format!(
            "{}: {} of {} runs to train, about {}",
            p.study.name,
            r.runs,
            p.study.runs.len(),
            format_duration(r.seconds)
        ));
    }
    if request.dry_run {
        return Ok(ReproduceOutcome {
            report: None,
            estimated_s: total,
            written: Vec::new(),
            failures: Vec::new(),
            warnings,
        });
    }
    for study in &derived {
        study.write()?;
    }
    let suite = SuiteProgress::new(progress, total);
    let mut failures = Vec::new();
    let mut loaded = Vec::new();
    for (planned, r) in plan.iter().zip(&remaining) {
        suite.start_study(&planned.study.name, r.seconds);
        let outcome = compare(
            &CompareRequest {
                target: CompareTarget::Study(planned.file.clone()),
                jobs: Some(jobs),
                baseline: None,
                thresholds: None,
                results_dir: runs_root.clone(),
                out: None,
                // Only the command line reads it: compare reports through `suite`.
                quiet: false,
                data: request.data.clone(),
            },
            &suite,
        )
        .with_context(|| format!("study {} failed", planned.study.name))?;
        // Runs that failed to train or could not be read back, which the verdicts miss.
        failures.extend(
            outcome
                .failures
                .iter()
                .map(|f| format!("{}: {f}", planned.study.name)),
        );
        // What the reader skipped in these runs: the verdicts are judged without it.
        warnings.extend(outcome.skipped());
        loaded.push(StudyRuns {
            name: planned.study.name.clone(),
            records: outcome.records,
            comparison: outcome.comparison,
        });
        suite.finish_study();
        let plots = crate::plot::PlotRequest::study(planned.dir.clone());
        if let Err(err) = crate::plot::make_plots(&plots) {
            progress.note(&format!("{}: no figures ({err:#})", planned.study.name));
        }
    }
    progress.end();
    let report = judge_claims(
        &claims,
        &plan,
        &loaded,
        request,
        started.elapsed().as_secs_f64(),
        full_verdicts,
    );
    let written = report::write(&report, &out_dir)?;
    Ok(ReproduceOutcome {
        report: Some(report),
        estimated_s: total,
        written,
        failures,
        warnings,
    })
}

/// The verdicts of the full report a quick reproduction is set against, if any: a file the
/// user named must be a report (an error otherwise); the committed one is used when it is,
/// with a warning when it is damaged and a note when it is missing.
fn full_verdicts(
    request: &ReproduceRequest,
    progress: &dyn Progress,
    warnings: &mut Vec<String>,
) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    match (&request.full_report, request.mode) {
        (FullReport::None, _) => Ok(None),
        (FullReport::Named(path), Mode::Full) => bail!(
            "the full report {} is for a quick reproduction, which sets its verdicts against it; \
             a full one writes its own",
            path.display()
        ),
        (FullReport::Default(_), Mode::Full) => Ok(None),
        (FullReport::Named(path), Mode::Quick) => Ok(Some(report::read_verdicts(path)?)),
        (FullReport::Default(path), Mode::Quick) if !path.exists() => {
            progress.note(&format!(
                "no full report at {}: the quick verdicts are not set against a full run's",
                path.display()
            ));
            Ok(None)
        }
        (FullReport::Default(path), Mode::Quick) => match report::read_verdicts(path) {
            Ok(verdicts) => Ok(Some(verdicts)),
            Err(err) => {
                warnings.push(format!(
                    "{err:#}; the quick verdicts are not set against a full run's"
                ));
                Ok(None)
            }
        },
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Quick => "quick",
        Mode::Full => "full",
    }
}

/// How many of a study's runs are still to train, and the wall time they need.
struct Remaining {
    runs: usize,
    /// [`estimate::run_seconds`] summed over those runs, shared among `jobs` cores.
    seconds: f64,
}

impl Remaining {
    fn of(study: &Study, dir: &Path, costs: &estimate::Costs, jobs: usize) -> Self {
        let to_train: Vec<&PlannedRun> = study
            .runs
            .iter()
            .filter(|r| run_progress(&dir.join(&r.name)) != RunProgress::Done)
            .collect();
        let seconds: f64 = to_train
            .iter()
            .map(|r| estimate::run_seconds(&r.config, costs))
            .sum();
        Self {
            runs: to_train.len(),
            seconds: seconds / jobs as f64,
        }
    }
}

/// The studies a mode runs, and, in quick mode, the derived study files it trains from, which
/// are written only when the reproduction trains: a dry run writes nothing.
fn plan_studies(
    claims: &ClaimsFile,
    studies_dir: &Path,
    runs_root: &Path,
    mode: Mode,
    only: Option<&[String]>,
) -> Result<(Vec<PlannedStudy>, Vec<DerivedStudy>)> {
    let mut plan = Vec::new();
    let mut derived = Vec::new();
    let studies = claims.studies();
    if let Some(only) = only {
        for name in only {
            anyhow::ensure!(
                studies.contains(name),
                "--studies: no claim uses a study named {name:?}; the claims use {}",
                studies.join(", ")
            );
        }
    }
    for name in studies {
        if only.is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let source = study_file(studies_dir, &name);
        let (file, study) = match mode {
            Mode::Full => (source.clone(), load_study(&source)?),
            Mode::Quick => match claims.quick.set.get(&name) {
                Some(set) => {
                    let study = quick_study(&source, &name, set, &claims.quick.seeds)?;
                    let text = serde_json::to_string_pretty(&study)?;
                    let file = runs_root.join("studies").join(format!("{name}.json"));
                    let parsed = parse_study(&text, &file)
                        .and_then(|study| check_run_configs(&study).map(|_| study))
                        .with_context(|| {
                            format!(
                                "in study file {} with the claims file's quick settings",
                                source.display()
                            )
                        })?;
                    derived.push(DerivedStudy {
                        path: file.clone(),
                        text,
                    });
                    (file, parsed)
                }
                None => continue,
            },
        };
        check_groups(claims, &name, &study)?;
        let dir = runs_root.join(&study.name);
        plan.push(PlannedStudy {
            study,
            file,
            dir,
            source,
        });
    }
    Ok((plan, derived))
}

/// A study file quick mode derives from a shipped one, to be written before it trains.
struct DerivedStudy {
    path: PathBuf,
    text: String,
}

impl DerivedStudy {
    /// Write the file where [`plan_studies`] placed it.
    fn write(&self) -> Result<()> {
        let path = &self.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, &self.text).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Every test's groups A and B must each pick one group of its study's runs, checked before
/// anything trains: a spec that picks none has a typo (a setting's name, or a value such as a
/// learning rate written differently), one that picks several needs more settings.
fn check_groups(claims: &ClaimsFile, name: &str, study: &Study) -> Result<()> {
    for claim in &claims.claims {
        for test in claim.tests.iter().filter(|t| t.study == name) {
            for (side, spec) in [("a", &test.a), ("b", &test.b)] {
                spec_picks_one_group(
                    &spec_of(spec),
                    &study.runs,
                    &format!(
                        "claim {} ({}) of study {name}: group {side}",
                        claim.id, test.setting
                    ),
                )?;
            }
        }
    }
    Ok(())
}

/// A claims file's group as the `(key.path, value)` spec studies use.
fn spec_of(group: &Map<String, Value>) -> Vec<(String, Value)> {
    group.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The quick variant of a study file: its base config inlined (the derived file lives
/// elsewhere), the quick settings laid over every run, and the quick seeds.
fn quick_study(
    source: &Path,
    name: &str,
    set: &Map<String, Value>,
    seeds: &[u64],
) -> Result<Value> {
    let text = std::fs::read_to_string(source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    // Strictly, as `compare` reads a study: a key given twice is an error, not its last value.
    let mut study = crate::config::parse_json_strict(&text)
        .with_context(|| format!("{} is not a valid study file", source.display()))?;
    // Inlined, found as `compare` finds it: the derived file lives in another folder.
    let (base, _) = resolve_base(study.get("base"), source)?;
    study["base"] = base;
    let mut fraction = None;
    let study_set = study
        .as_object_mut()
        .context("a study is an object")?
        .entry("set")
        .or_insert_with(|| Value::Object(Map::new()));
    for (key, value) in set {
        if key == "steps_fraction" {
            fraction = value.as_f64();
            continue;
        }
        study_set[key] = value.clone();
    }
    if let Some(fraction) = fraction {
        scale_zip_steps(&mut study, fraction).with_context(|| {
            format!("quick.set.{name}.steps_fraction needs a study whose zip sets steps")
        })?;
    }
    match study.get_mut("grid").and_then(Value::as_object_mut) {
        Some(grid) => {
            grid.insert("seed".into(), Value::from(seeds.to_vec()));
        }
        None => bail!("study {name} has no grid to set quick.seeds in"),
    }
    Ok(study)
}

/// Scale the `steps` and `eval_every` each run of a zip gives (`large_batch`).
fn scale_zip_steps(study: &mut Value, fraction: f64) -> Result<()> {
    let zip = study
        .get_mut("zip")
        .and_then(Value::as_object_mut)
        .context("the study has no zip object")?;
    anyhow::ensure!(
        zip.contains_key("steps"),
        "the study's zip does not set steps"
    );
    for key in ["steps", "eval_every"] {
        if let Some(values) = zip.get_mut(key).and_then(Value::as_array_mut) {
            for v in values {
                if let Some(n) = v.as_f64() {
                    *v = Value::from(((n * fraction).round() as u64).max(1));
                }
            }
        }
    }
    Ok(())
}

fn judge_claims(
    claims: &ClaimsFile,
    plan: &[PlannedStudy],
    loaded: &[StudyRuns],
    request: &ReproduceRequest,
    wall_s: f64,
    full_verdicts: Option<std::collections::BTreeMap<String, String>>,
) -> report::Report {
    let mut outcomes = Vec::new();
    for (index, claim) in claims.claims.iter().enumerate() {
        // With --studies, a claim none of whose tests use a chosen study is left out of the
        // report rather than listed as Inconclusive.
        if let Some(only) = request.studies.as_deref()
            && !claim.tests.iter().any(|t| only.contains(&t.study))
        {
            continue;
        }
        let mut tests = Vec::new();
        for test in &claim.tests {
            let runs = loaded.iter().find(|s| s.name == test.study);
            let planned = plan.iter().find(|p| p.study.name == test.study);
            tests.push(judge_test(
                test,
                runs,
                planned,
                claims.bootstrap,
                request.mode,
                request.studies.as_deref(),
            ));
        }
        // A test whose study was not run (quick mode) does not count either way.
        let run: Vec<Verdict> = tests
            .iter()
            .filter(|t| t.judged.is_some())
            .map(TestOutcome::verdict)
            .collect();
        let verdict = combine(&run);
        outcomes.push(ClaimOutcome {
            number: index + 1,
            id: claim.id.clone(),
            statement: claim.statement.clone(),
            source: claim.source.clone(),
            registered: provenance::registering_commit(&request.claims_file, &claim.id),
            verdict,
            tests,
            full_verdict: full_verdicts
                .as_ref()
                .and_then(|v| v.get(&claim.id).cloned()),
        });
    }
    report::Report::new(
        request.mode,
        &claims.quick.note,
        outcomes,
        plan,
        loaded,
        wall_s,
        request.studies.as_deref(),
    )
}

fn judge_test(
    test: &ClaimTest,
    runs: Option<&StudyRuns>,
    planned: Option<&PlannedStudy>,
    bootstrap: verdict::Bootstrap,
    mode: Mode,
    only: Option<&[String]>,
) -> TestOutcome {
    let (spec_a, spec_b) = (spec_of(&test.a), spec_of(&test.b));
    let mut outcome = TestOutcome {
        setting: test.setting.clone(),
        study: test.study.clone(),
        metric: test.metric,
        metric_name: test.metric.describe(test.threshold),
        threshold: test.threshold,
        better: test.better,
        min_effect: test.min_effect,
        label_a: describe_spec(&spec_a),
        label_b: describe_spec(&spec_b),
        values_a: Vec::new(),
        values_b: Vec::new(),
        judged: None,
        note: None,
        figure: None,
    };
    let (Some(runs), Some(planned)) = (runs, planned) else {
        let left_out = only.is_some_and(|only| !only.contains(&test.study));
        outcome.note = Some(match (left_out, mode) {
            (true, _) => format!("{} is not among --studies", test.study),
            (false, Mode::Quick) => format!("{} is not run in quick mode", test.study),
            (false, Mode::Full) => format!("{} was not run", test.study),
        });
        return outcome;
    };
    let records = runs.records.as_slice();
    outcome.figure = figure_for(test, &planned.dir);
    if records.is_empty() {
        outcome.note = Some(format!("{} has no finished runs", test.study));
        return outcome;
    }
    for (label, spec) in [
        (&mut outcome.label_a, &spec_a),
        (&mut outcome.label_b, &spec_b),
    ] {
        if let Some(group) = runs.group_label(spec) {
            *label = group.to_string();
        }
    }
    let values = |spec: &[(String, Value)]| -> Vec<Option<f64>> {
        records
            .iter()
            .filter(|r| matches_spec(r.config(), spec))
            .filter_map(|r| metric_value(r, test))
            .collect()
    };
    outcome.values_a = values(&spec_a);
    outcome.values_b = values(&spec_b);
    outcome.judged = Some(judge(
        &outcome.values_a,
        &outcome.values_b,
        test.better,
        test.min_effect,
        test.min_seeds,
        bootstrap,
    ));
    outcome
}

/// The value of a test's metric for one run: `Some(None)` when the run failed (diverged, or
/// never reached the threshold), `None` when the run has no such number at all (no probes).
fn metric_value(run: &RunRecord, test: &ClaimTest) -> Option<Option<f64>> {
    let diverged = run.summary.status == RunStatus::Diverged;
    match test.metric {
        Metric::FinalAcc if diverged => Some(None),
        Metric::FinalAcc => Some(crate::run::final_acc(run.evals())),
        Metric::StepsTo if diverged => Some(None),
        Metric::StepsTo => {
            Some(first_step_reaching(run.evals(), test.threshold.unwrap_or(1.0)).map(|s| s as f64))
        }
        // Probe-based metrics of a diverged run, or ones that are not finite, are missing
        // rather than failures: they describe a distribution, not an outcome.
        Metric::Drift | Metric::Ics if diverged => None,
        Metric::Drift => {
            let d = run.drift()?.all;
            let mean = (d[0] + d[1] + d[2]) / 3.0;
            mean.is_finite().then_some(Some(mean))
        }
        Metric::Ics => {
            let m = run.measures.as_ref()?;
            let later: Vec<f64> = m.ics_relative.iter().skip(1).flatten().copied().collect();
            let mean = later.iter().sum::<f64>() / later.len() as f64;
            (!later.is_empty() && mean.is_finite()).then_some(Some(mean))
        }
    }
}

/// The figure of a study that shows a test's metric, if `plot --study` drew it.
fn figure_for(test: &ClaimTest, study_dir: &Path) -> Option<PathBuf> {
    let plots = study_dir.join(PLOTS_DIR);
    let name = match test.metric {
        Metric::Drift => "fig1bc_percentiles.png",
        Metric::Ics => "measures.png",
        _ if test.study.starts_with("small_batch_norms") => "study_final_acc_vs_stats_batch.png",
        _ if test.study == "batch_size" => "study_final_acc_vs_batch_size.png",
        _ if test.study == "lr_multipliers" => "study_final_acc_vs_lr.png",
        _ => "fig1a_accuracy.png",
    };
    let path = plots.join(name);
    path.is_file().then_some(path)
}

/// One bar over the whole suite: its units are estimated seconds; each study's own bar (from
/// `compare`) moves the suite's bar through that study's share.
struct SuiteProgress<'a> {
    out: &'a dyn Progress,
    state: Mutex<SuiteState>,
}

#[derive(Default)]
struct SuiteState {
    total: f64,
    /// Estimated seconds of the studies already done.
    done: f64,
    /// The current study: its name, its estimated seconds, and its own bar's total.
    study: String,
    share: f64,
    study_total: Option<u64>,
}

impl<'a> SuiteProgress<'a> {
    fn new(out: &'a dyn Progress, total: f64) -> Self {
        out.begin("reproduce", Some(total.max(1.0) as u64), 0);
        Self {
            out,
            state: Mutex::new(SuiteState {
                total,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SuiteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_study(&self, name: &str, seconds: f64) {
        let mut s = self.lock();
        s.study = name.to_string();
        s.share = seconds;
        s.study_total = None;
        self.out
            .advance(s.done as u64, &format!("{name}: starting"));
    }

    fn finish_study(&self) {
        let mut s = self.lock();
        s.done += s.share;
        s.share = 0.0;
        self.out
            .advance(s.done as u64, &format!("{}: done", s.study));
    }
}

impl Progress for SuiteProgress<'_> {
    fn note(&self, line: &str) {
        let study = self.lock().study.clone();
        self.out.note(&format!("{study}: {line}"));
    }
    fn result(&self, line: &str) {
        self.out.result(line);
    }
    fn begin(&self, _label: &str, total: Option<u64>, _position: u64) {
        let mut s = self.lock();
        s.study_total = total;
        // The suite's bar stays up; a study's bar only moves it.
        let total = s.total;
        self.out
            .begin("reproduce", Some(total.max(1.0) as u64), s.done as u64);
    }
    fn advance(&self, position: u64, status: &str) {
        let s = self.lock();
        let fraction = s
            .study_total
            .filter(|&t| t > 0)
            .map_or(0.0, |t| position as f64 / t as f64);
        self.out.advance(
            (s.done + fraction.min(1.0) * s.share) as u64,
            &format!("{}: {status}", s.study),
        );
    }
    fn end(&self) {}
}
