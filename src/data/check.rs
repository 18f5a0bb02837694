//! Reading and checking data files: structure first (magic number, dimensions, record count,
//! length), then the sha256 of the decompressed content, then the label range. Each kind of
//! problem is its own [`DataError`], which says what to do about it.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::Result;
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::*;

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
        self.file().1
    }

    /// The data set the file belongs to.
    pub fn dataset(&self) -> Dataset {
        self.file().0
    }

    /// The data set and the file: every kind of error names both.
    fn file(&self) -> (Dataset, &Path) {
        match self {
            DataError::Missing { dataset, path, .. }
            | DataError::Truncated { dataset, path, .. }
            | DataError::WrongMagic { dataset, path, .. }
            | DataError::ChecksumMismatch { dataset, path, .. }
            | DataError::Malformed { dataset, path, .. }
            | DataError::Unreadable { dataset, path, .. } => (*dataset, path),
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

pub(super) fn describe_idx_magic(magic: u32) -> &'static str {
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
pub(super) fn candidate_paths(
    dataset: Dataset,
    dataset_dir: &Path,
    spec: &FileSpec,
) -> Vec<PathBuf> {
    let plain = dataset_dir.join(spec.name);
    if dataset.accepts_gzip() {
        vec![dataset_dir.join(format!("{}.gz", spec.name)), plain]
    } else {
        vec![plain]
    }
}

/// Find a data file under any accepted name.
pub(super) fn locate(
    dataset: Dataset,
    dataset_dir: &Path,
    spec: &FileSpec,
) -> Result<PathBuf, DataError> {
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
pub(super) fn gunzip(
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
pub(super) fn check_content(
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
pub(super) struct IdxLayout {
    magic: u32,
    header_len: usize,
    record_len: usize,
    records: usize,
}

/// The file being checked, to build errors that name it.
pub(super) struct CheckContext<'a> {
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
pub(super) fn parse_class_names(content: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(content)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn be_u32(bytes: &[u8], offset: usize) -> u32 {
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
pub(super) fn read_all_checked(
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
