//! What the binary prints about each command's outcome, and the exit status it gives: the
//! library's typed outcomes in, lines on stdout and stderr out. It knows no flag (`cli.rs`
//! turns flags into requests and hands the outcomes here).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bn_exp::compare::CompareOutcome;
use bn_exp::data::VerifyOutcome;
use bn_exp::reproduce::{self, ReproduceOutcome};
use bn_exp::train::{self, Outcome};

/// Exit status of `compare` when the comparison was made but some runs failed to train.
pub const EXIT_RUNS_FAILED: u8 = 1;
/// Exit status of `data verify` when a data set is damaged or incomplete, or none is there:
/// an error, like every other.
pub const EXIT_DATA_DAMAGED: u8 = 2;
/// Exit status of `compare --strict` when a damaged file or line was skipped, and of `plot
/// --strict` after any warning.
pub const EXIT_SKIPPED_DAMAGE: u8 = 2;

/// What a run's outcome prints, and the exit status it gives (train's for a run that ended, 0
/// for one stopped early): `who` names the run in "already finished", `stopped` words the line
/// of a run stopped at a step.
pub fn outcome_line(
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
pub fn wrote_line(written: &[PathBuf]) -> String {
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    format!("wrote {}", names.join(", "))
}

/// The end of a command whose runs may have failed: each failure on stderr, then how many and
/// `then` (what follows from it), and [`EXIT_RUNS_FAILED`]; success when none failed.
pub fn runs_failed(failures: &[String], then: &str) -> ExitCode {
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    for failure in failures {
        eprintln!("{failure}");
    }
    eprintln!("{} run(s) failed{then}", failures.len());
    ExitCode::from(EXIT_RUNS_FAILED)
}

/// `--strict`'s error after `count` warnings, `what` they were.
pub fn strict_refusal(count: usize, what: &str) -> ExitCode {
    eprintln!("error: --strict: {count} {what} (see the warnings above)");
    ExitCode::from(EXIT_SKIPPED_DAMAGE)
}

/// What `compare` prints: a warning for each damaged file or line it skipped (an error with
/// `strict`), the table, the files it wrote (unless `quiet`), and the runs that failed.
pub fn print_compare(outcome: &CompareOutcome, quiet: bool, strict: bool) -> ExitCode {
    let skipped = outcome.skipped();
    for warning in &skipped {
        eprintln!("warning: {warning}");
    }
    if strict && !skipped.is_empty() {
        return strict_refusal(skipped.len(), "damaged file(s) or line(s) were skipped");
    }
    if outcome.comparison.is_some() {
        print!("{}", outcome.text);
    } else {
        eprintln!("no finished runs to compare");
    }
    if !quiet && !outcome.written.is_empty() {
        eprintln!("{}", wrote_line(&outcome.written));
    }
    runs_failed(&outcome.failures, "; rerun the same command to retry them")
}

/// What `reproduce` prints: its warnings, then the verdict of each claim and the files it
/// wrote (or the estimate of a dry run), and the runs that failed.
pub fn print_reproduce(outcome: &ReproduceOutcome) -> ExitCode {
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    let Some(report) = &outcome.report else {
        println!(
            "dry run: estimated {} of wall time; nothing was trained",
            reproduce::format_duration(outcome.estimated_s)
        );
        return ExitCode::SUCCESS;
    };
    for claim in &report.claims {
        println!(
            "{:>2}. {:<14} {}",
            claim.number,
            claim.verdict.label(),
            claim.statement
        );
    }
    println!("{}", wrote_line(&outcome.written));
    runs_failed(
        &outcome.failures,
        " and are missing from the verdicts; rerun the same command to retry them",
    )
}

/// What `data verify` prints: each file's check, then the verdict, on stderr as an error
/// ([`EXIT_DATA_DAMAGED`]) when a data set is damaged, incomplete or missing.
pub fn print_verify(outcome: &VerifyOutcome) -> ExitCode {
    print!("{}", outcome.render());
    println!();
    if outcome.ok {
        println!("{}", outcome.verdict);
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {}", outcome.verdict);
        ExitCode::from(EXIT_DATA_DAMAGED)
    }
}
