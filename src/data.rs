//! The data sets bn-exp trains on, MNIST and CIFAR-10: read from disk, checked, and held in
//! memory as `f32`, ready to upload as tensors.
//!
//! Every file is checked before bn-exp uses it: its structure (magic number, dimensions, record
//! count, length) and the sha256 of its *decompressed* content against the checksums published
//! in `data/README.md`. A reproduction of the paper is only worth something on the genuine data,
//! and a half-downloaded or bit-rotted file would otherwise train silently on garbage. Each kind
//! of problem is its own [`DataError`], so that users are told what went wrong and what to do.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{Context, Result, anyhow, bail};
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable naming the data folder when `--data-dir` is not given.
pub const DATA_DIR_ENV: &str = "BN_EXP_DATA_DIR";

/// Magic number of an IDX file of unsigned-byte images with 3 dimensions (count, rows, cols).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels with 1 dimension (count).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Both data sets have ten classes.
pub const NUM_CLASSES: usize = 10;
/// Records in each CIFAR-10 batch file.
pub const CIFAR_RECORDS_PER_BATCH: usize = 10_000;
/// CIFAR-10 class names in label order, as `batches.meta.txt` lists them.
pub const CIFAR_CLASSES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const MNIST_SIDE: usize = 28;
const MNIST_TRAIN_RECORDS: usize = 60_000;
const MNIST_TEST_RECORDS: usize = 10_000;
const IDX_IMAGES_HEADER: usize = 16;
const IDX_LABELS_HEADER: usize = 8;
const CIFAR_SIDE: usize = 32;
const CIFAR_CHANNELS: usize = 3;
const CIFAR_IMAGE_BYTES: usize = CIFAR_CHANNELS * CIFAR_SIDE * CIFAR_SIDE;
const CIFAR_RECORD_BYTES: usize = 1 + CIFAR_IMAGE_BYTES;
/// `batches.meta.txt` is 60 bytes; anything far larger is not the class list.
const CIFAR_META_MAX_BYTES: usize = 4096;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Which data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Mnist,
    Cifar10,
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Dataset {
    /// Every data set bn-exp knows, in the order `verify` reports them.
    pub const ALL: [Dataset; 2] = [Dataset::Mnist, Dataset::Cifar10];

    /// The name people use: "MNIST", "CIFAR-10".
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "MNIST",
            Dataset::Cifar10 => "CIFAR-10",
        }
    }

    /// The name on the command line: `mnist`, `cifar10`.
    pub fn cli_name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::Cifar10 => "cifar10",
        }
    }

    /// Folder of this data set inside the data folder (the name its publisher uses for CIFAR).
    pub fn dir_name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::Cifar10 => "cifar-10-batches-bin",
        }
    }

    /// Folder of this data set inside `data_dir`.
    pub fn dir(self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.dir_name())
    }

    /// Credit and terms, shown by `bn-exp data info`.
    pub fn source(self) -> &'static str {
        match self {
            Dataset::Mnist => {
                "Y. LeCun, C. Cortes, C. J. C. Burges, \"The MNIST database of handwritten \
                 digits\"; licence CC BY-SA 3.0"
            }
            Dataset::Cifar10 => {
                "A. Krizhevsky, \"Learning Multiple Layers of Features from Tiny Images\", \
                 tech. report, University of Toronto, 2009; cite it when you use CIFAR-10 \
                 (https://www.cs.toronto.edu/~kriz/cifar.html)"
            }
        }
    }

    /// Class names in label order.
    pub fn classes(self) -> Vec<String> {
        match self {
            Dataset::Mnist => (0..NUM_CLASSES).map(|d| d.to_string()).collect(),
            Dataset::Cifar10 => CIFAR_CLASSES.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// MNIST is kept gzip-compressed (as embedded in bn-exp and as served by its mirrors), or
    /// uncompressed as some tools leave it; CIFAR-10's batch files are always plain.
    fn accepts_gzip(self) -> bool {
        matches!(self, Dataset::Mnist)
    }

    /// The command that downloads this data set into `data_dir`.
    pub fn fetch_command(self, data_dir: Option<&Path>) -> String {
        let plain = format!("bn-exp data fetch {}", self.cli_name());
        match data_dir {
            Some(dir) if !is_default_data_dir(dir) => {
                format!("{plain} --data-dir {}", quote_path(dir))
            }
            _ => plain,
        }
    }
}

/// Whether a plain `bn-exp data fetch` (no `--data-dir`) would write into `dir`.
fn is_default_data_dir(dir: &Path) -> bool {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(env_dir) => Path::new(&env_dir) == dir,
        None => dir == Path::new("data"),
    }
}

/// A path as the user should type it back: quoted when it holds spaces.
fn quote_path(path: &Path) -> String {
    let shown = path.display().to_string();
    if shown.contains(char::is_whitespace) {
        format!("'{shown}'")
    } else {
        shown
    }
}

/// How pixels become `f32` values for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    /// pixel / 255, in [0, 1].
    #[default]
    Scale,
    /// 1.0 where pixel / 255 >= 0.5, else 0.0: the paper's MNIST experiment speaks of binary
    /// images.
    Binarize,
    /// Per channel, (pixel / 255 - mean_c) / std_c with the training split's statistics.
    Standardize,
}

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

/// Where the data sets are and what their files must be: what every command that reads data
/// is given.
#[derive(Debug, Clone)]
pub struct DataSource {
    /// Folder holding `mnist/` and/or `cifar-10-batches-bin/`.
    pub dir: PathBuf,
    pub catalogue: Catalogue,
}

impl DataSource {
    /// The published data sets in `dir`.
    pub fn published(dir: impl Into<PathBuf>) -> DataSource {
        DataSource {
            dir: dir.into(),
            catalogue: Catalogue::published(),
        }
    }

    /// Load `dataset`, checking every file, and preprocess it ([`load`]).
    pub fn load(&self, dataset: Dataset, preprocess: Preprocess) -> Result<LoadedData> {
        load(&self.dir, dataset, preprocess, &self.catalogue)
    }

    /// Read and check `dataset`, keeping pixels as bytes ([`load_raw`]).
    pub fn load_raw(&self, dataset: Dataset) -> Result<RawData> {
        load_raw(&self.dir, dataset, &self.catalogue)
    }
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
struct CatalogueFile {
    mnist: Option<MnistEntry>,
    cifar10: Option<CifarEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MnistEntry {
    train_records: usize,
    test_records: usize,
    sha256: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CifarEntry {
    records_per_batch: usize,
    sha256: std::collections::BTreeMap<String, String>,
}

/// Record counts are bounded so that a catalogue cannot ask for absurd allocations.
fn ensure_records(records: usize, key: &str) -> Result<()> {
    anyhow::ensure!(
        (1..=MNIST_TRAIN_RECORDS).contains(&records),
        "{key} must be between 1 and {MNIST_TRAIN_RECORDS}, got {records}"
    );
    Ok(())
}

/// The checksums of `given`, in the order of the published `(name, sha256)` list: every
/// published name must be there, as 64 lower-case hex digits, and no other.
fn checksums_in_order(
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

fn mnist_files(
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

fn cifar_files(records: usize, sha: &[(&'static str, impl AsRef<str>)]) -> Vec<FileSpec> {
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
const CIFAR_META_FILE: &str = "batches.meta.txt";

// Checksums of the decompressed content, as published in data/README.md (which gives the
// sources: the publishers' own md5 lists and independent copies). Order: train images, train
// labels, test images, test labels.
const MNIST_SHA256: [(&str, &str); 4] = [
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
const CIFAR_SHA256: [(&str, &str); 6] = [
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

/// What is wrong with a data file. Each kind says what to do about it; `load` and `verify`
/// return it wrapped in `anyhow`, so callers can `downcast_ref::<DataError>()` to tell kinds
/// apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// The file is not there (under any name bn-exp accepts).
    Missing { dataset: Dataset, path: PathBuf },
    /// The (decompressed) content is shorter than its format or header says.
    Truncated {
        dataset: Dataset,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The IDX magic number is not the one this file must have.
    WrongMagic {
        dataset: Dataset,
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// Structure fine, but the content is not byte-for-byte the published file.
    ChecksumMismatch {
        dataset: Dataset,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// Any other damage: wrong dimensions or counts, trailing bytes, broken gzip stream,
    /// labels out of range, wrong class list.
    Malformed {
        dataset: Dataset,
        path: PathBuf,
        reason: String,
    },
    /// The file is there but could not be read (permissions, a folder in its place, I/O).
    Unreadable {
        dataset: Dataset,
        path: PathBuf,
        reason: String,
    },
}

impl DataError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Missing { path, .. }
            | DataError::Truncated { path, .. }
            | DataError::WrongMagic { path, .. }
            | DataError::ChecksumMismatch { path, .. }
            | DataError::Malformed { path, .. }
            | DataError::Unreadable { path, .. } => path,
        }
    }

    /// The data set the file belongs to.
    pub fn dataset(&self) -> Dataset {
        match self {
            DataError::Missing { dataset, .. }
            | DataError::Truncated { dataset, .. }
            | DataError::WrongMagic { dataset, .. }
            | DataError::ChecksumMismatch { dataset, .. }
            | DataError::Malformed { dataset, .. }
            | DataError::Unreadable { dataset, .. } => *dataset,
        }
    }

    /// A short name of the kind, for tables.
    pub fn kind(&self) -> &'static str {
        match self {
            DataError::Missing { .. } => "missing",
            DataError::Truncated { .. } => "truncated",
            DataError::WrongMagic { .. } => "wrong magic number",
            DataError::ChecksumMismatch { .. } => "checksum mismatch",
            DataError::Malformed { .. } => "malformed",
            DataError::Unreadable { .. } => "unreadable",
        }
    }

    /// The data folder the file is in: two levels up (`<data>/<dataset>/<file>`).
    fn data_dir(&self) -> Option<&Path> {
        let dir = self.path().parent().and_then(Path::parent)?;
        Some(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    }

    fn refetch_hint(&self) -> String {
        format!(
            "Re-fetch it with: {}",
            self.dataset().fetch_command(self.data_dir())
        )
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Missing { dataset, path } => {
                let data_dir = self.data_dir().unwrap_or(Path::new("."));
                write!(
                    f,
                    "missing file {}: {dataset} is not (completely) in {}. Get it with: {}; \
                     or point --data-dir or {DATA_DIR_ENV} at a folder that holds {}/",
                    path.display(),
                    data_dir.display(),
                    dataset.fetch_command(Some(data_dir)),
                    dataset.dir_name(),
                )
            }
            DataError::Truncated {
                path,
                expected,
                actual,
                ..
            } => write!(
                f,
                "{} is truncated: its content is {actual} bytes where {expected} are needed. {}",
                path.display(),
                self.refetch_hint()
            ),
            DataError::WrongMagic {
                path,
                expected,
                found,
                ..
            } => write!(
                f,
                "{} has the wrong magic number 0x{found:08x} (expected 0x{expected:08x}, {}): it \
                 is not the file its name says. {}",
                path.display(),
                describe_idx_magic(*expected),
                self.refetch_hint()
            ),
            DataError::ChecksumMismatch {
                path,
                expected,
                actual,
                ..
            } => write!(
                f,
                "checksum mismatch for {}: the file is damaged or not the genuine file \
                 (sha256 of its content: expected {expected}, actual {actual}). {}",
                path.display(),
                self.refetch_hint()
            ),
            DataError::Malformed { path, reason, .. } => write!(
                f,
                "{} is damaged: {reason}. {}",
                path.display(),
                self.refetch_hint()
            ),
            DataError::Unreadable { path, reason, .. } => {
                write!(f, "cannot read {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for DataError {}

fn describe_idx_magic(magic: u32) -> &'static str {
    match magic {
        IDX_IMAGES_MAGIC => "IDX images",
        IDX_LABELS_MAGIC => "IDX labels",
        _ => "IDX",
    }
}

/// Facts about one data file that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Where it was found.
    pub path: PathBuf,
    /// Bytes on disk (compressed, for a `.gz`).
    pub size_on_disk: u64,
    /// Bytes after decompression.
    pub content_len: u64,
    /// Whether it was stored gzip-compressed.
    pub gzipped: bool,
    /// Images, labels or class names in it.
    pub records: usize,
}

/// A data file that passed every check, with its decompressed content.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    pub info: FileInfo,
    pub content: Vec<u8>,
}

/// The paths a data file may have, preferred first.
fn candidate_paths(dataset: Dataset, dataset_dir: &Path, spec: &FileSpec) -> Vec<PathBuf> {
    let plain = dataset_dir.join(spec.name);
    if dataset.accepts_gzip() {
        vec![dataset_dir.join(format!("{}.gz", spec.name)), plain]
    } else {
        vec![plain]
    }
}

/// Find a data file under any accepted name.
fn locate(dataset: Dataset, dataset_dir: &Path, spec: &FileSpec) -> Result<PathBuf, DataError> {
    let candidates = candidate_paths(dataset, dataset_dir, spec);
    for candidate in &candidates {
        match fs::metadata(candidate) {
            Ok(_) => return Ok(candidate.clone()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(DataError::Unreadable {
                    dataset,
                    path: candidate.clone(),
                    reason: err.to_string(),
                });
            }
        }
    }
    Err(DataError::Missing {
        dataset,
        path: candidates[0].clone(),
    })
}

/// Find, read and check one data file of `dataset` in its folder `dataset_dir`.
pub fn read_checked(
    dataset: Dataset,
    dataset_dir: &Path,
    spec: &FileSpec,
) -> Result<CheckedFile, DataError> {
    let path = locate(dataset, dataset_dir, spec)?;
    let bytes = fs::read(&path).map_err(|err| DataError::Unreadable {
        dataset,
        path: path.clone(),
        reason: err.to_string(),
    })?;
    check_file_bytes(dataset, &path, spec, bytes)
}

/// Check the bytes of one data file, gzip-compressed or not, against `spec`. `path` is only
/// used in messages: `bn-exp data fetch` checks downloads before they reach their final name.
pub fn check_file_bytes(
    dataset: Dataset,
    path: &Path,
    spec: &FileSpec,
    bytes: Vec<u8>,
) -> Result<CheckedFile, DataError> {
    let size_on_disk = bytes.len() as u64;
    let gzipped = bytes.starts_with(&GZIP_MAGIC);
    let content = if gzipped {
        gunzip(dataset, path, spec, &bytes)?
    } else {
        bytes
    };
    let records = check_content(dataset, path, spec, &content)?;
    Ok(CheckedFile {
        info: FileInfo {
            path: path.to_path_buf(),
            size_on_disk,
            content_len: content.len() as u64,
            gzipped,
            records,
        },
        content,
    })
}

/// Decompress a gzip file whole. The output is capped just past the size the format allows,
/// so that a wrong or hostile file cannot fill memory.
fn gunzip(
    dataset: Dataset,
    path: &Path,
    spec: &FileSpec,
    bytes: &[u8],
) -> Result<Vec<u8>, DataError> {
    let limit = spec.format.content_len().unwrap_or(CIFAR_META_MAX_BYTES);
    let mut content = Vec::with_capacity(limit + 1);
    let mut decoder = MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    match decoder.read_to_end(&mut content) {
        Ok(_) => Ok(content),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(DataError::Truncated {
            dataset,
            path: path.to_path_buf(),
            expected: limit as u64,
            actual: content.len() as u64,
        }),
        Err(err) => Err(DataError::Malformed {
            dataset,
            path: path.to_path_buf(),
            reason: format!("its gzip stream is corrupt ({err})"),
        }),
    }
}

/// Check decompressed content: structure first (so that a short or wrong file is named as
/// such rather than as a checksum mismatch), then the checksum, then the label range. Returns
/// the number of records.
fn check_content(
    dataset: Dataset,
    path: &Path,
    spec: &FileSpec,
    content: &[u8],
) -> Result<usize, DataError> {
    let ctx = CheckContext { dataset, path };
    let records = match spec.format {
        FileFormat::IdxImages { records } => ctx.check_idx_header(
            content,
            IdxLayout {
                magic: IDX_IMAGES_MAGIC,
                header_len: IDX_IMAGES_HEADER,
                record_len: MNIST_SIDE * MNIST_SIDE,
                records,
            },
        )?,
        FileFormat::IdxLabels { records } => ctx.check_idx_header(
            content,
            IdxLayout {
                magic: IDX_LABELS_MAGIC,
                header_len: IDX_LABELS_HEADER,
                record_len: 1,
                records,
            },
        )?,
        FileFormat::CifarBatch { records } => ctx.check_cifar_batch_len(content, records)?,
        FileFormat::CifarMeta => ctx.check_cifar_meta(content)?,
    };
    if let Some(expected) = &spec.sha256 {
        ctx.check_sha256(content, expected)?;
    }
    match spec.format {
        FileFormat::IdxLabels { .. } => {
            ctx.check_labels(content[IDX_LABELS_HEADER..].iter().copied())?
        }
        FileFormat::CifarBatch { .. } => ctx.check_labels(
            content
                .chunks_exact(CIFAR_RECORD_BYTES)
                .map(|record| record[0]),
        )?,
        FileFormat::IdxImages { .. } | FileFormat::CifarMeta => {}
    }
    Ok(records)
}

/// The fixed parts of an IDX file that bn-exp expects.
struct IdxLayout {
    magic: u32,
    header_len: usize,
    record_len: usize,
    records: usize,
}

/// The file being checked, to build errors that name it.
struct CheckContext<'a> {
    dataset: Dataset,
    path: &'a Path,
}

impl CheckContext<'_> {
    fn truncated(&self, expected: usize, actual: usize) -> DataError {
        DataError::Truncated {
            dataset: self.dataset,
            path: self.path.to_path_buf(),
            expected: expected as u64,
            actual: actual as u64,
        }
    }

    fn malformed(&self, reason: String) -> DataError {
        DataError::Malformed {
            dataset: self.dataset,
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// Magic, dimensions, record count and payload length of an IDX file.
    fn check_idx_header(&self, content: &[u8], layout: IdxLayout) -> Result<usize, DataError> {
        let full_len = layout.header_len + layout.records * layout.record_len;
        if content.len() < 4 {
            return Err(self.truncated(full_len, content.len()));
        }
        let magic = be_u32(content, 0);
        if magic != layout.magic {
            return Err(DataError::WrongMagic {
                dataset: self.dataset,
                path: self.path.to_path_buf(),
                expected: layout.magic,
                found: magic,
            });
        }
        if content.len() < layout.header_len {
            return Err(self.truncated(full_len, content.len()));
        }
        if layout.magic == IDX_IMAGES_MAGIC {
            let (rows, cols) = (be_u32(content, 8), be_u32(content, 12));
            if (rows as usize, cols as usize) != (MNIST_SIDE, MNIST_SIDE) {
                return Err(self.malformed(format!(
                    "its images are {rows}x{cols} pixels, MNIST's are {MNIST_SIDE}x{MNIST_SIDE}"
                )));
            }
        }
        let count = be_u32(content, 4) as usize;
        if count != layout.records {
            return Err(self.malformed(format!(
                "its header announces {count} records where this file has {}",
                layout.records
            )));
        }
        match content.len().cmp(&full_len) {
            std::cmp::Ordering::Less => Err(self.truncated(full_len, content.len())),
            std::cmp::Ordering::Greater => Err(self.malformed(format!(
                "{} bytes follow the {count} records its header announces",
                content.len() - full_len
            ))),
            std::cmp::Ordering::Equal => Ok(count),
        }
    }

    /// A CIFAR-10 batch has no header: its length is its only structure.
    fn check_cifar_batch_len(&self, content: &[u8], records: usize) -> Result<usize, DataError> {
        let full_len = records * CIFAR_RECORD_BYTES;
        match content.len().cmp(&full_len) {
            std::cmp::Ordering::Less => Err(self.truncated(full_len, content.len())),
            std::cmp::Ordering::Greater => Err(self.malformed(format!(
                "it is {} bytes, {full_len} expected ({records} records of \
                 {CIFAR_RECORD_BYTES} bytes)",
                content.len()
            ))),
            std::cmp::Ordering::Equal => Ok(records),
        }
    }

    /// The class list must be CIFAR-10's ten names in label order.
    fn check_cifar_meta(&self, content: &[u8]) -> Result<usize, DataError> {
        let names = parse_class_names(content);
        let expected: Vec<&str> = CIFAR_CLASSES.to_vec();
        if names
            .iter()
            .map(String::as_str)
            .eq(expected.iter().copied())
        {
            Ok(names.len())
        } else {
            Err(self.malformed(format!(
                "it lists the classes {names:?}, expected {}",
                expected.join(", ")
            )))
        }
    }

    fn check_sha256(&self, content: &[u8], expected: &str) -> Result<(), DataError> {
        let actual = sha256_hex(content);
        if actual == expected {
            Ok(())
        } else {
            Err(DataError::ChecksumMismatch {
                dataset: self.dataset,
                path: self.path.to_path_buf(),
                expected: expected.to_string(),
                actual,
            })
        }
    }

    fn check_labels(&self, labels: impl Iterator<Item = u8>) -> Result<(), DataError> {
        match labels
            .enumerate()
            .find(|(_, l)| usize::from(*l) >= NUM_CLASSES)
        {
            Some((record, label)) => Err(self.malformed(format!(
                "record {record} has label {label}, outside 0..{}",
                NUM_CLASSES - 1
            ))),
            None => Ok(()),
        }
    }
}

/// The non-empty lines of `batches.meta.txt`, trimmed; invalid UTF-8 is replaced, not fatal,
/// so that the comparison with the expected names reports it.
fn parse_class_names(content: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(content)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

fn be_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

/// Lower-case hex sha256.
pub fn sha256_hex(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Read and check every file of a data set, one thread per file: hashing and decompressing
/// dominate loading, and the files are independent. Results come in `catalogue.files()` order.
fn read_all_checked(
    data_dir: &Path,
    dataset: Dataset,
    catalogue: &Catalogue,
) -> Vec<Result<CheckedFile, DataError>> {
    let dataset_dir = dataset.dir(data_dir);
    thread::scope(|scope| {
        let handles: Vec<_> = catalogue
            .files(dataset)
            .iter()
            .map(|spec| {
                let dataset_dir = &dataset_dir;
                scope.spawn(move || read_checked(dataset, dataset_dir, spec))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// One split as bytes, as stored on disk: NCHW, 0..255. What `info` needs, at a quarter of the
/// memory of a [`Split`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSplit {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl RawSplit {
    /// Images per class, by label.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        class_counts(&self.labels)
    }

    /// Per-channel mean and standard deviation of pixel / 255 over the whole split.
    pub fn channel_stats(&self) -> ChannelStats {
        ChannelStats::from_histograms(&self.channel_histograms())
    }

    /// How often each byte value occurs, per channel. Statistics from a histogram are exact
    /// and cost one pass over bytes instead of over floats.
    fn channel_histograms(&self) -> Vec<[u64; 256]> {
        let mut hists = vec![[0u64; 256]; self.channels];
        let plane = self.height * self.width;
        if plane == 0 || self.channels == 0 {
            return hists;
        }
        for (k, plane_pixels) in self.pixels.chunks_exact(plane).enumerate() {
            let hist = &mut hists[k % self.channels];
            for &p in plane_pixels {
                hist[usize::from(p)] += 1;
            }
        }
        hists
    }
}

fn class_counts(labels: &[u8]) -> [usize; NUM_CLASSES] {
    let mut counts = [0; NUM_CLASSES];
    for &label in labels {
        if let Some(count) = counts.get_mut(usize::from(label)) {
            *count += 1;
        }
    }
    counts
}

/// Per-channel statistics of pixel / 255.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    /// Population standard deviation (divides by n), as the published figures use.
    pub std: Vec<f32>,
}

impl ChannelStats {
    fn from_histograms(hists: &[[u64; 256]]) -> Self {
        let (mean, std) = hists.iter().map(histogram_mean_std).unzip();
        ChannelStats { mean, std }
    }
}

fn histogram_mean_std(hist: &[u64; 256]) -> (f32, f32) {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return (0.0, 0.0);
    }
    let value = |p: usize| p as f64 / 255.0;
    let mean = hist
        .iter()
        .enumerate()
        .map(|(p, &c)| value(p) * c as f64)
        .sum::<f64>()
        / n as f64;
    let var = hist
        .iter()
        .enumerate()
        .map(|(p, &c)| (value(p) - mean).powi(2) * c as f64)
        .sum::<f64>()
        / n as f64;
    (mean as f32, var.sqrt() as f32)
}

/// A data set as bytes, every file checked.
#[derive(Debug, Clone)]
pub struct RawData {
    pub dataset: Dataset,
    pub train: RawSplit,
    pub test: RawSplit,
    pub classes: Vec<String>,
    /// Every file read, in `catalogue.files()` order.
    pub files: Vec<FileInfo>,
}

/// Read and check every file of a data set in `data_dir` against `catalogue`, keeping pixels
/// as bytes.
pub fn load_raw(data_dir: &Path, dataset: Dataset, catalogue: &Catalogue) -> Result<RawData> {
    let files = read_all_checked(data_dir, dataset, catalogue)
        .into_iter()
        .collect::<Result<Vec<_>, DataError>>()?;
    let infos = files.iter().map(|f| f.info.clone()).collect();
    let (train, test, classes) = match dataset {
        Dataset::Mnist => assemble_mnist(files)?,
        Dataset::Cifar10 => assemble_cifar(files)?,
    };
    Ok(RawData {
        dataset,
        train,
        test,
        classes,
        files: infos,
    })
}

type Assembled = (RawSplit, RawSplit, Vec<String>);

fn assemble_mnist(files: Vec<CheckedFile>) -> Result<Assembled> {
    let [train_images, train_labels, test_images, test_labels]: [CheckedFile; 4] = files
        .try_into()
        .map_err(|_| anyhow!("bn-exp bug: MNIST is not four files"))?;
    Ok((
        mnist_split(train_images, train_labels),
        mnist_split(test_images, test_labels),
        Dataset::Mnist.classes(),
    ))
}

/// Strip the IDX headers; the checks guarantee the two files agree on the count.
fn mnist_split(images: CheckedFile, labels: CheckedFile) -> RawSplit {
    let mut pixels = images.content;
    pixels.drain(..IDX_IMAGES_HEADER);
    let mut labels = labels.content;
    labels.drain(..IDX_LABELS_HEADER);
    RawSplit {
        len: labels.len(),
        pixels,
        labels,
        channels: 1,
        height: MNIST_SIDE,
        width: MNIST_SIDE,
    }
}

fn assemble_cifar(files: Vec<CheckedFile>) -> Result<Assembled> {
    let [b1, b2, b3, b4, b5, test, meta]: [CheckedFile; 7] = files
        .try_into()
        .map_err(|_| anyhow!("bn-exp bug: CIFAR-10 is not seven files"))?;
    Ok((
        cifar_split(&[b1, b2, b3, b4, b5]),
        cifar_split(&[test]),
        parse_class_names(&meta.content),
    ))
}

/// Split CIFAR records (label byte, then CHW pixels) into labels and pixels.
fn cifar_split(batches: &[CheckedFile]) -> RawSplit {
    let len = batches
        .iter()
        .map(|b| b.content.len() / CIFAR_RECORD_BYTES)
        .sum();
    let mut pixels = Vec::with_capacity(len * CIFAR_IMAGE_BYTES);
    let mut labels = Vec::with_capacity(len);
    for record in batches
        .iter()
        .flat_map(|b| b.content.chunks_exact(CIFAR_RECORD_BYTES))
    {
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    RawSplit {
        pixels,
        labels,
        len,
        channels: CIFAR_CHANNELS,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
    }
}

/// One split held as f32, NCHW-flattened row-major, ready to upload as a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Split {
    /// Values per image: channels × height × width.
    pub fn feature_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The values of image `index` (CHW), or `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[f32]> {
        let n = self.feature_len();
        self.images.get(index * n..(index + 1) * n)
    }
}

/// A data set in memory, preprocessed, with the training statistics it was preprocessed with.
#[derive(Debug, Clone)]
pub struct LoadedData {
    pub train: Split,
    pub test: Split,
    pub classes: Vec<String>,
    pub dataset: Dataset,
    pub preprocess: Preprocess,
    /// Per-channel mean of pixel / 255 over the training split (whatever `preprocess` is).
    pub channel_mean: Vec<f32>,
    /// Per-channel population std of pixel / 255 over the training split.
    pub channel_std: Vec<f32>,
}

/// Load a data set from `data_dir` (which holds `mnist/` and/or `cifar-10-batches-bin/`),
/// checking every file against `catalogue`, and preprocess it. Errors are [`DataError`]s
/// inside `anyhow`.
pub fn load(
    data_dir: &Path,
    dataset: Dataset,
    preprocess: Preprocess,
    catalogue: &Catalogue,
) -> Result<LoadedData> {
    let raw = load_raw(data_dir, dataset, catalogue)?;
    let stats = raw.train.channel_stats();
    let tables = pixel_tables(preprocess, &stats);
    Ok(LoadedData {
        train: to_f32_split(raw.train, &tables),
        test: to_f32_split(raw.test, &tables),
        classes: raw.classes,
        dataset,
        preprocess,
        channel_mean: stats.mean,
        channel_std: stats.std,
    })
}

/// One 256-entry table per channel mapping a pixel byte to its preprocessed value: the whole
/// conversion is then a lookup per pixel.
fn pixel_tables(preprocess: Preprocess, stats: &ChannelStats) -> Vec<[f32; 256]> {
    (0..stats.mean.len())
        .map(|c| {
            let mut table = [0f32; 256];
            for (p, slot) in table.iter_mut().enumerate() {
                *slot = preprocess_pixel(preprocess, p as u8, stats.mean[c], stats.std[c]);
            }
            table
        })
        .collect()
}

fn preprocess_pixel(preprocess: Preprocess, pixel: u8, mean: f32, std: f32) -> f32 {
    let scaled = f32::from(pixel) / 255.0;
    match preprocess {
        Preprocess::Scale => scaled,
        Preprocess::Binarize => {
            if scaled >= 0.5 {
                1.0
            } else {
                0.0
            }
        }
        Preprocess::Standardize => {
            // A constant channel cannot be scaled to unit variance; centring it is all we can do.
            let std = if std > 0.0 { f64::from(std) } else { 1.0 };
            ((f64::from(pixel) / 255.0 - f64::from(mean)) / std) as f32
        }
    }
}

fn to_f32_split(raw: RawSplit, tables: &[[f32; 256]]) -> Split {
    let plane = raw.height * raw.width;
    let mut images = Vec::with_capacity(raw.pixels.len());
    if plane > 0 && !tables.is_empty() {
        for (k, plane_pixels) in raw.pixels.chunks_exact(plane).enumerate() {
            let table = &tables[k % tables.len()];
            images.extend(plane_pixels.iter().map(|&p| table[usize::from(p)]));
        }
    }
    Split {
        images,
        labels: raw.labels,
        len: raw.len,
        channels: raw.channels,
        height: raw.height,
        width: raw.width,
    }
}

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

fn file_report(spec: &FileSpec, result: Result<CheckedFile, DataError>) -> FileReport {
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
fn verify_verdict(dir: &Path, reports: &[DatasetReport]) -> (bool, String) {
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

fn render_dataset_report(report: &DatasetReport) -> String {
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
fn shown_file_name(file: &FileReport) -> String {
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

fn render_info(raw: &RawData, dataset_dir: &Path, catalogue: &Catalogue) -> String {
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

fn format_channel_stats(stats: &ChannelStats) -> String {
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
