//! What `bn-exp data verify` and `bn-exp data info` report: every file of every data set,
//! checked, and what a data set holds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::*;

/// What `verify` found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    Valid(FileInfo),
    Missing,
    Damaged(DataError),
}

/// One line of the `verify` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file's name as the data set defines it (uncompressed).
    pub name: &'static str,
    /// Where it was found, or where it was looked for first.
    pub path: PathBuf,
    pub status: FileStatus,
}

/// The verdict on one data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetState {
    /// Every file present and valid.
    Valid,
    /// No file of it present: not an error, the data set is just not installed.
    Absent,
    /// Some files missing, the others valid.
    Incomplete,
    /// At least one file present but damaged.
    Damaged,
}

/// Every file of one data set, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetReport {
    pub dataset: Dataset,
    /// The data set's folder.
    pub dir: PathBuf,
    pub files: Vec<FileReport>,
}

impl DatasetReport {
    /// The first file that is missing or damaged, as the error loading it would give.
    pub fn first_problem(&self) -> Option<DataError> {
        self.files.iter().find_map(|f| match &f.status {
            FileStatus::Valid(_) => None,
            FileStatus::Damaged(err) => Some(err.clone()),
            FileStatus::Missing => Some(DataError::Missing {
                dataset: self.dataset,
                path: f.path.clone(),
            }),
        })
    }

    pub fn state(&self) -> DatasetState {
        let count =
            |pred: fn(&FileStatus) -> bool| self.files.iter().filter(|f| pred(&f.status)).count();
        let damaged = count(|s| matches!(s, FileStatus::Damaged(_)));
        let missing = count(|s| matches!(s, FileStatus::Missing));
        if damaged > 0 {
            DatasetState::Damaged
        } else if missing == self.files.len() {
            DatasetState::Absent
        } else if missing > 0 {
            DatasetState::Incomplete
        } else {
            DatasetState::Valid
        }
    }
}

/// Check every file of `dataset` in `data_dir` against `catalogue`; never fails, problems are
/// in the report.
pub fn verify_dataset(data_dir: &Path, dataset: Dataset, catalogue: &Catalogue) -> DatasetReport {
    let dir = dataset.dir(data_dir);
    let files = catalogue
        .files(dataset)
        .iter()
        .zip(read_all_checked(data_dir, dataset, catalogue))
        .map(|(spec, result)| file_report(spec, result))
        .collect();
    DatasetReport {
        dataset,
        dir,
        files,
    }
}

pub(super) fn file_report(spec: &FileSpec, result: Result<CheckedFile, DataError>) -> FileReport {
    let (path, status) = match result {
        Ok(file) => (file.info.path.clone(), FileStatus::Valid(file.info)),
        Err(DataError::Missing { path, .. }) => (path, FileStatus::Missing),
        Err(err) => (err.path().to_path_buf(), FileStatus::Damaged(err)),
    };
    FileReport {
        name: spec.name,
        path,
        status,
    }
}

/// What `bn-exp data verify` found: every data set in a folder, checked.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub dir: PathBuf,
    /// Where the checksums came from, as a person reads it.
    pub checked_against: String,
    pub reports: Vec<DatasetReport>,
    /// True when at least one data set is present and every present one is valid.
    pub ok: bool,
    /// The last line: the verdict, with the commands that repair what is wrong.
    pub verdict: String,
}

impl VerifyOutcome {
    /// The table `bn-exp data verify` prints, one block per data set, without the verdict.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Data folder: {}\nChecked against {}\n",
            self.dir.display(),
            self.checked_against
        );
        for report in &self.reports {
            out.push('\n');
            out.push_str(&render_dataset_report(report));
        }
        out
    }
}

/// Check every data set bn-exp knows in `data.dir`.
pub fn verify_all(data: &DataSource) -> VerifyOutcome {
    let reports: Vec<DatasetReport> = Dataset::ALL
        .iter()
        .map(|&dataset| verify_dataset(&data.dir, dataset, &data.catalogue))
        .collect();
    let (ok, verdict) = verify_verdict(&data.dir, &reports);
    VerifyOutcome {
        dir: data.dir.clone(),
        checked_against: data.catalogue.describe(),
        reports,
        ok,
        verdict,
    }
}

/// The last line of `verify` and whether it is a success.
pub(super) fn verify_verdict(dir: &Path, reports: &[DatasetReport]) -> (bool, String) {
    let bad: Vec<&DatasetReport> = reports
        .iter()
        .filter(|r| matches!(r.state(), DatasetState::Damaged | DatasetState::Incomplete))
        .collect();
    let valid = reports
        .iter()
        .filter(|r| r.state() == DatasetState::Valid)
        .count();
    if !bad.is_empty() {
        let fixes: Vec<String> = bad
            .iter()
            .map(|r| r.dataset.fetch_command(Some(dir)))
            .collect();
        let names: Vec<&str> = bad.iter().map(|r| r.dataset.name()).collect();
        (
            false,
            format!(
                "{} damaged or incomplete; repair with: {}",
                names.join(" and "),
                fixes.join(" ; ")
            ),
        )
    } else if valid == 0 {
        let fetches: Vec<String> = Dataset::ALL
            .iter()
            .map(|d| d.fetch_command(Some(dir)))
            .collect();
        (
            false,
            format!(
                "no data set found in {}; get one with: {}, or point --data-dir or \
                 {DATA_DIR_ENV} at a folder that holds mnist/ or cifar-10-batches-bin/",
                dir.display(),
                fetches.join(" or ")
            ),
        )
    } else {
        (true, "Every data set present is valid.".to_string())
    }
}

pub(super) fn render_dataset_report(report: &DatasetReport) -> String {
    let dataset = report.dataset;
    let state = match report.state() {
        DatasetState::Valid => "valid".to_string(),
        DatasetState::Absent => format!(
            "not present (get it with: {})",
            dataset.fetch_command(report.dir.parent())
        ),
        DatasetState::Incomplete => "INCOMPLETE".to_string(),
        DatasetState::Damaged => "DAMAGED".to_string(),
    };
    let mut out = format!("{} ({}): {state}\n", dataset.name(), report.dir.display());
    let names: Vec<String> = report.files.iter().map(shown_file_name).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0);
    for (file, name) in report.files.iter().zip(&names) {
        let line = match &file.status {
            FileStatus::Valid(info) => format!(
                "  ok       {name:<width$}  {:>10}  {} records",
                human_size(info.size_on_disk),
                info.records
            ),
            FileStatus::Missing => format!("  missing  {name:<width$}"),
            FileStatus::Damaged(err) => format!(
                "  DAMAGED  {name:<width$}  {}\n           {err}",
                err.kind()
            ),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The name to show: the one found on disk, or for a missing MNIST file both accepted forms.
pub(super) fn shown_file_name(file: &FileReport) -> String {
    match &file.status {
        FileStatus::Missing if file.path.extension().is_some_and(|e| e == "gz") => {
            format!("{}[.gz]", file.name)
        }
        FileStatus::Missing => file.name.to_string(),
        _ => file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.name.to_string()),
    }
}

/// Bytes in binary units with one decimal, for tables.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What `bn-exp data info` prints about `dataset` in `data.dir`: files, classes and pixel
/// statistics, every file checked first.
pub fn describe(data: &DataSource, dataset: Dataset) -> Result<String> {
    let raw = data
        .load_raw(dataset)
        .with_context(|| format!("cannot describe {dataset} in {}", data.dir.display()))?;
    Ok(render_info(&raw, &dataset.dir(&data.dir), &data.catalogue))
}

pub(super) fn render_info(raw: &RawData, dataset_dir: &Path, catalogue: &Catalogue) -> String {
    use std::fmt::Write as _;
    let dataset = raw.dataset;
    let mut out = String::new();
    let train = &raw.train;
    // Writing to a String cannot fail; `let _` keeps the code free of unwraps.
    let _ = writeln!(out, "{dataset}  ({})", dataset_dir.display());
    let _ = writeln!(out, "source: {}", dataset.source());
    let _ = writeln!(
        out,
        "\nfiles (all checked against {}):",
        catalogue.describe()
    );
    for file in &raw.files {
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let form = if file.gzipped {
            format!("gzip, {} bytes decompressed", file.content_len)
        } else {
            "uncompressed".to_string()
        };
        let _ = writeln!(
            out,
            "  {name:<28} {:>11} bytes ({form})  {} records",
            file.size_on_disk, file.records
        );
    }
    let _ = writeln!(
        out,
        "\nimages: {} train, {} test, each {}x{}x{} (channels x height x width)",
        train.len, raw.test.len, train.channels, train.height, train.width
    );
    let _ = writeln!(
        out,
        "\n  {:>3}  {:<12} {:>7} {:>7}",
        "#", "class", "train", "test"
    );
    let (train_counts, test_counts) = (train.class_counts(), raw.test.class_counts());
    for (k, name) in raw.classes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {k:>3}  {name:<12} {:>7} {:>7}",
            train_counts[k], test_counts[k]
        );
    }
    let _ = writeln!(out, "\npixel statistics after /255 (population std):");
    for (split_name, split) in [("train", train), ("test", &raw.test)] {
        let stats = split.channel_stats();
        let _ = writeln!(out, "  {split_name:<5} {}", format_channel_stats(&stats));
    }
    out
}

pub(super) fn format_channel_stats(stats: &ChannelStats) -> String {
    let names: &[&str] = if stats.mean.len() == 3 {
        &["R", "G", "B"]
    } else {
        &["all"]
    };
    stats
        .mean
        .iter()
        .zip(&stats.std)
        .zip(names.iter().chain(std::iter::repeat(&"?")))
        .map(|((mean, std), name)| format!("{name}: mean {mean:.4} std {std:.4}"))
        .collect::<Vec<_>>()
        .join("   ")
}
