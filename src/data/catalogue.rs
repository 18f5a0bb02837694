//! What every data file must be: its name, layout, record count and sha256, for the published
//! data sets or for a set a catalogue file describes (the test suite's small CIFAR-format set).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::*;

/// The layout a data file must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// IDX unsigned-byte images, 28x28, this many of them.
    IdxImages { records: usize },
    /// IDX unsigned-byte labels 0..9, this many of them.
    IdxLabels { records: usize },
    /// CIFAR-10 binary batch: this many records (10,000 in the published set) of 1 label byte
    /// then 3072 pixel bytes (CHW).
    CifarBatch { records: usize },
    /// CIFAR-10 `batches.meta.txt`: the class names, one a line.
    CifarMeta,
}

impl FileFormat {
    /// Exact length of the (decompressed) content, where the format fixes it.
    pub fn content_len(self) -> Option<usize> {
        match self {
            FileFormat::IdxImages { records } => {
                Some(IDX_IMAGES_HEADER + records * MNIST_SIDE * MNIST_SIDE)
            }
            FileFormat::IdxLabels { records } => Some(IDX_LABELS_HEADER + records),
            FileFormat::CifarBatch { records } => Some(records * CIFAR_RECORD_BYTES),
            FileFormat::CifarMeta => None,
        }
    }
}

/// One file of a data set: its name, the sha256 of its decompressed content and its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// File name, uncompressed (MNIST may also be stored as `<name>.gz`).
    pub name: &'static str,
    /// sha256 of the decompressed content, lower-case hex; `None` for the class-name list,
    /// which is checked by content instead (repackagings differ in trailing newlines).
    pub sha256: Option<String>,
    pub format: FileFormat,
}

/// What every file of every data set must be: names, layouts, record counts and checksums.
///
/// [`Catalogue::published`] is MNIST and CIFAR-10 as their publishers distribute them, and is
/// what bn-exp uses unless told otherwise. A catalogue read from a file
/// ([`Catalogue::from_file`], the hidden `--data-catalogue` flag or `BN_EXP_DATA_CATALOGUE`)
/// describes a set in the same formats under the same file names but with its own record
/// counts and checksums: the small CIFAR-format set the test suite writes for itself, so that
/// the reader, `data verify`, `data fetch` and training are tested through exactly the code
/// paths the real files take. Its JSON:
///
/// ```text
/// {"cifar10": {"records_per_batch": 30, "sha256": {"data_batch_1.bin": "<hex>", ...}},
///  "mnist": {"train_records": 600, "test_records": 100, "sha256": {"train-images-idx3-ubyte": "<hex>", ...}}}
/// ```
///
/// A data set the file leaves out keeps its published description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    mnist: Vec<FileSpec>,
    cifar10: Vec<FileSpec>,
    /// Where a non-published catalogue came from, for messages; `None` for the published one.
    source: Option<PathBuf>,
}

/// Environment variable naming a catalogue file (see [`Catalogue`]).
pub const CATALOGUE_ENV: &str = "BN_EXP_DATA_CATALOGUE";

impl Catalogue {
    /// MNIST and CIFAR-10 as published (checksums in data/README.md).
    pub fn published() -> Catalogue {
        Catalogue {
            mnist: mnist_files(MNIST_TRAIN_RECORDS, MNIST_TEST_RECORDS, &MNIST_SHA256),
            cifar10: cifar_files(CIFAR_RECORDS_PER_BATCH, &CIFAR_SHA256),
            source: None,
        }
    }

    /// The catalogue in `path`, or the published one when `path` is `None`.
    pub fn published_or(path: Option<&Path>) -> Result<Catalogue> {
        path.map_or_else(|| Ok(Catalogue::published()), Catalogue::from_file)
    }

    /// Read a catalogue file (format in the type's documentation).
    pub fn from_file(path: &Path) -> Result<Catalogue> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the data catalogue {}", path.display()))?;
        let file: CatalogueFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid data catalogue", path.display()))?;
        let mut catalogue = Catalogue::published();
        let context = |dataset: &str| format!("data catalogue {}: {dataset}", path.display());
        if let Some(mnist) = file.mnist {
            let sha = checksums_in_order(&MNIST_SHA256, &mnist.sha256).context(context("mnist"))?;
            ensure_records(mnist.train_records, "mnist.train_records")?;
            ensure_records(mnist.test_records, "mnist.test_records")?;
            catalogue.mnist = mnist_files(mnist.train_records, mnist.test_records, &sha);
        }
        if let Some(cifar) = file.cifar10 {
            let sha =
                checksums_in_order(&CIFAR_SHA256, &cifar.sha256).context(context("cifar10"))?;
            ensure_records(cifar.records_per_batch, "cifar10.records_per_batch")?;
            catalogue.cifar10 = cifar_files(cifar.records_per_batch, &sha);
        }
        catalogue.source = Some(path.to_path_buf());
        Ok(catalogue)
    }

    /// The files that make up `dataset`, each with what it must be, in a fixed order.
    pub fn files(&self, dataset: Dataset) -> &[FileSpec] {
        match dataset {
            Dataset::Mnist => &self.mnist,
            Dataset::Cifar10 => &self.cifar10,
        }
    }

    /// Images in the training split of `dataset`.
    pub fn train_records(&self, dataset: Dataset) -> usize {
        self.files(dataset)
            .iter()
            .filter(|spec| {
                spec.name.starts_with("train-images") || spec.name.starts_with("data_batch")
            })
            .map(|spec| match spec.format {
                FileFormat::IdxImages { records } | FileFormat::CifarBatch { records } => records,
                _ => 0,
            })
            .sum()
    }

    /// The catalogue file this came from; `None` for the published catalogue.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Where the checksums come from, as `verify` and `info` say it.
    pub fn describe(&self) -> String {
        match &self.source {
            None => "the published sha256 of each file".to_string(),
            Some(path) => format!(
                "the data catalogue {} (not the published checksums)",
                path.display()
            ),
        }
    }
}

/// The JSON form of a catalogue file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogueFile {
    mnist: Option<MnistEntry>,
    cifar10: Option<CifarEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MnistEntry {
    train_records: usize,
    test_records: usize,
    sha256: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CifarEntry {
    records_per_batch: usize,
    sha256: std::collections::BTreeMap<String, String>,
}

/// Record counts are bounded so that a catalogue cannot ask for absurd allocations.
pub(super) fn ensure_records(records: usize, key: &str) -> Result<()> {
    anyhow::ensure!(
        (1..=MNIST_TRAIN_RECORDS).contains(&records),
        "{key} must be between 1 and {MNIST_TRAIN_RECORDS}, got {records}"
    );
    Ok(())
}

/// The checksums of `given`, in the order of the published `(name, sha256)` list: every
/// published name must be there, as 64 lower-case hex digits, and no other.
pub(super) fn checksums_in_order(
    published: &[(&'static str, &'static str)],
    given: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(&'static str, String)>> {
    if let Some(extra) = given
        .keys()
        .find(|k| !published.iter().any(|(name, _)| name == k))
    {
        let names: Vec<&str> = published.iter().map(|(name, _)| *name).collect();
        bail!(
            "sha256 names the unknown file {extra:?}; the files are {}",
            names.join(", ")
        );
    }
    published
        .iter()
        .map(|(name, _)| {
            let sha = given
                .get(*name)
                .with_context(|| format!("sha256 has no entry for {name}"))?;
            anyhow::ensure!(
                sha.len() == 64
                    && sha
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "sha256 of {name} must be 64 lower-case hex digits, got {sha:?}"
            );
            Ok((*name, sha.clone()))
        })
        .collect()
}

pub(super) fn mnist_files(
    train: usize,
    test: usize,
    sha: &[(&'static str, impl AsRef<str>)],
) -> Vec<FileSpec> {
    let records = [train, train, test, test];
    sha.iter()
        .zip(records)
        .map(|((name, sha), records)| FileSpec {
            name,
            sha256: Some(sha.as_ref().to_string()),
            format: if name.contains("images") {
                FileFormat::IdxImages { records }
            } else {
                FileFormat::IdxLabels { records }
            },
        })
        .collect()
}

pub(super) fn cifar_files(
    records: usize,
    sha: &[(&'static str, impl AsRef<str>)],
) -> Vec<FileSpec> {
    sha.iter()
        .map(|(name, sha)| FileSpec {
            name,
            sha256: Some(sha.as_ref().to_string()),
            format: FileFormat::CifarBatch { records },
        })
        .chain(std::iter::once(FileSpec {
            name: CIFAR_META_FILE,
            sha256: None,
            format: FileFormat::CifarMeta,
        }))
        .collect()
}

/// The class-name list of CIFAR-10, checked by content.
pub(super) const CIFAR_META_FILE: &str = "batches.meta.txt";

// Checksums of the decompressed content, as published in data/README.md (which gives the
// sources: the publishers' own md5 lists and independent copies). Order: train images, train
// labels, test images, test labels.
pub(super) const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

// sha256 of the CIFAR-10 binary batches, as published in data/README.md; five training
// batches, then the test batch.
pub(super) const CIFAR_SHA256: [(&str, &str); 6] = [
    (
        "data_batch_1.bin",
        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    ),
    (
        "data_batch_2.bin",
        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    ),
    (
        "data_batch_3.bin",
        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    ),
    (
        "data_batch_4.bin",
        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    ),
    (
        "data_batch_5.bin",
        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    ),
    (
        "test_batch.bin",
        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    ),
];
