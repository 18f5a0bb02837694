//! The data sets bn-exp trains on, MNIST and CIFAR-10: read from disk, checked, and held in
//! memory as `f32`, ready to upload as tensors.
//!
//! Every file is checked before bn-exp uses it: its structure (magic number, dimensions, record
//! count, length) and the sha256 of its *decompressed* content against the checksums published
//! in `data/README.md`. A reproduction of the paper is only worth something on the genuine data,
//! and a half-downloaded or bit-rotted file would otherwise train silently on garbage. Each kind
//! of problem is its own [`DataError`], so that users are told what went wrong and what to do.
//!
//! The parts: [`catalogue`] says what each file must be, [`check`] reads and checks files,
//! [`report`] is what `data verify` and `data info` show; this module holds the data sets,
//! their images in memory and the preprocessing.

mod augment;
mod catalogue;
mod check;
mod report;

pub use augment::{AugmentConfig, Draw, augment, augment_reference, draws};
pub use catalogue::*;
pub use check::*;
pub use report::*;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

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

    /// The shape of one image: (channels, side) of a square `side`×`side` image. The one place
    /// that says it; the readers, the models and the config's checks all ask here.
    pub fn image_shape(self) -> (usize, usize) {
        match self {
            Dataset::Mnist => (1, MNIST_SIDE),
            Dataset::Cifar10 => (CIFAR_CHANNELS, CIFAR_SIDE),
        }
    }

    /// Values per image: channels × side × side.
    pub fn features(self) -> usize {
        let (channels, side) = self.image_shape();
        channels * side * side
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

/// A split as bytes, as stored on disk (0..255): what `info` needs, at a quarter of the memory
/// of a preprocessed [`Split`].
pub type RawSplit = Split<u8>;

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
        for (k, plane_pixels) in self.images.chunks_exact(plane).enumerate() {
            let hist = &mut hists[k % self.channels];
            for &p in plane_pixels {
                hist[usize::from(p)] += 1;
            }
        }
        hists
    }
}

pub(super) fn class_counts(labels: &[u8]) -> [usize; NUM_CLASSES] {
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

pub(super) fn histogram_mean_std(hist: &[u64; 256]) -> (f32, f32) {
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

pub(super) fn assemble_mnist(files: Vec<CheckedFile>) -> Result<Assembled> {
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
pub(super) fn mnist_split(images: CheckedFile, labels: CheckedFile) -> RawSplit {
    let mut pixels = images.content;
    pixels.drain(..IDX_IMAGES_HEADER);
    let mut labels = labels.content;
    labels.drain(..IDX_LABELS_HEADER);
    RawSplit {
        len: labels.len(),
        images: pixels,
        labels,
        channels: 1,
        height: MNIST_SIDE,
        width: MNIST_SIDE,
    }
}

pub(super) fn assemble_cifar(files: Vec<CheckedFile>) -> Result<Assembled> {
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
pub(super) fn cifar_split(batches: &[CheckedFile]) -> RawSplit {
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
        images: pixels,
        labels,
        len,
        channels: CIFAR_CHANNELS,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
    }
}

/// One split of a data set: its images NCHW-flattened row-major, and their labels. `T` is how a
/// value is held: f32 once preprocessed, ready to upload as a tensor, or the bytes on disk
/// ([`RawSplit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<T = f32> {
    pub images: Vec<T>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl<T> Split<T> {
    /// Values per image: channels × height × width.
    pub fn feature_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The values of image `index` (CHW), or `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[T]> {
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
pub(super) fn pixel_tables(preprocess: Preprocess, stats: &ChannelStats) -> Vec<[f32; 256]> {
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

pub(super) fn preprocess_pixel(preprocess: Preprocess, pixel: u8, mean: f32, std: f32) -> f32 {
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

pub(super) fn to_f32_split(raw: RawSplit, tables: &[[f32; 256]]) -> Split {
    let plane = raw.height * raw.width;
    let mut images = Vec::with_capacity(raw.images.len());
    if plane > 0 && !tables.is_empty() {
        for (k, plane_pixels) in raw.images.chunks_exact(plane).enumerate() {
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
