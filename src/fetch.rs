//! `bn-exp data fetch`: download MNIST or CIFAR-10 from its canonical source, check it, and
//! move it into the data folder.
//!
//! Downloads land in a hidden staging folder inside the data folder (the same file system, so
//! the final move is a rename), are checked exactly as `bn-exp data verify` checks files, and
//! only then are renamed into place. Any failure removes the staging folder and every folder
//! the fetch created: a failed fetch never leaves a half-file behind for a later training run
//! to trip over.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use flate2::read::MultiGzDecoder;

use crate::data::{self, Catalogue, Dataset, DatasetState, FileSpec, FileStatus};
use crate::progress::Progress;

/// Official MNIST mirrors, tried in this order. They serve `<name>.gz`; their gzip bytes differ
/// from bn-exp's embedded copy, which is why bn-exp checks the decompressed content.
pub const MNIST_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "https://storage.googleapis.com/cvdf-datasets/mnist",
];
/// Where the University of Toronto publishes CIFAR-10.
pub const CIFAR_BASE_URL: &str = "https://www.cs.toronto.edu/~kriz";
/// The binary version of CIFAR-10, the one bn-exp reads.
pub const CIFAR_ARCHIVE: &str = "cifar-10-binary.tar.gz";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Per read, not for the whole download: CIFAR-10 is 163 MiB and slow links must still work.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// MNIST's largest file is 9.5 MiB compressed; a mirror sending far more is not sending MNIST.
const MNIST_MAX_DOWNLOAD: u64 = 128 << 20;
/// The CIFAR-10 archive is 163 MiB.
const CIFAR_MAX_DOWNLOAD: u64 = 512 << 20;
/// A CIFAR-10 batch is 30,730,000 bytes.
const CIFAR_MAX_MEMBER: u64 = 64 << 20;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// What the downloaded files must be (the published checksums, unless a test says
    /// otherwise).
    pub catalogue: Catalogue,
    /// Download from this one base URL instead of the canonical sources.
    pub base_url: Option<String>,
    /// Download again even files that are present and valid.
    pub force: bool,
}

impl Default for FetchOptions {
    /// The canonical sources and the published checksums, files already valid kept.
    fn default() -> Self {
        FetchOptions {
            catalogue: Catalogue::published(),
            base_url: None,
            force: false,
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Files written, at their final paths.
    pub fetched: Vec<PathBuf>,
    /// Files that were already present and valid, left as they were.
    pub kept: Vec<PathBuf>,
}

impl FetchOutcome {
    /// The line `bn-exp data fetch` ends with.
    pub fn describe(&self, data_dir: &Path, dataset: Dataset, options: &FetchOptions) -> String {
        let dataset_dir = dataset.dir(data_dir);
        if self.fetched.is_empty() {
            format!(
                "{dataset} is already present and valid in {} (use --force to download it again).",
                dataset_dir.display()
            )
        } else {
            format!(
                "{dataset}: {} file(s) downloaded, checked against {} and moved into {}.",
                self.fetched.len(),
                options.catalogue.describe(),
                dataset_dir.display()
            )
        }
    }
}

/// Download `dataset` into `data_dir`: every file not present and valid (all with `force`).
/// On failure nothing new is left in `data_dir`.
pub fn fetch(
    data_dir: &Path,
    dataset: Dataset,
    options: &FetchOptions,
    progress: &dyn Progress,
) -> Result<FetchOutcome> {
    let bases = source_bases(dataset, options.base_url.as_deref())?;
    let (needed, kept) = files_to_fetch(data_dir, dataset, options);
    if needed.is_empty() {
        return Ok(FetchOutcome {
            fetched: Vec::new(),
            kept,
        });
    }
    let sources = Sources {
        agent: build_agent(),
        bases,
        progress,
    };
    let staging = Staging::create(data_dir, dataset)?;
    let staged = match dataset {
        Dataset::Mnist => stage_mnist(&sources, &staging, &needed)?,
        Dataset::Cifar10 => stage_cifar(&sources, &staging, &needed)?,
    };
    let fetched = staging.commit(&staged)?;
    Ok(FetchOutcome { fetched, kept })
}

/// The base URLs to try, in order: `--base-url` alone, else the canonical ones.
fn source_bases(dataset: Dataset, base_url: Option<&str>) -> Result<Vec<String>> {
    match base_url {
        Some(base) => {
            let base = base.trim();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                bail!("--base-url must start with http:// or https://, got {base:?}");
            }
            Ok(vec![base.trim_end_matches('/').to_string()])
        }
        None => Ok(match dataset {
            Dataset::Mnist => MNIST_MIRRORS.iter().map(|s| s.to_string()).collect(),
            Dataset::Cifar10 => vec![CIFAR_BASE_URL.to_string()],
        }),
    }
}

/// Split the data set's files into those to download and those already present and valid.
fn files_to_fetch<'a>(
    data_dir: &Path,
    dataset: Dataset,
    options: &'a FetchOptions,
) -> (Vec<&'a FileSpec>, Vec<PathBuf>) {
    let force = options.force;
    let report = data::verify_dataset(data_dir, dataset, &options.catalogue);
    if report.state() == DatasetState::Valid && !force {
        let kept = report.files.into_iter().map(|f| f.path).collect();
        return (Vec::new(), kept);
    }
    let mut needed = Vec::new();
    let mut kept = Vec::new();
    for (spec, file) in options.catalogue.files(dataset).iter().zip(report.files) {
        match file.status {
            FileStatus::Valid(_) if !force => kept.push(file.path),
            _ => needed.push(spec),
        }
    }
    (needed, kept)
}

/// Where a data set's files come from: the base URLs, tried in order, and the one HTTP agent
/// and progress display every download goes through.
struct Sources<'a> {
    agent: ureq::Agent,
    bases: Vec<String>,
    progress: &'a dyn Progress,
}

impl Sources<'_> {
    /// Try `attempt` with the URL of `file` under each base in turn (see [`first_success`]),
    /// saying which URL each try downloads.
    fn try_each<T>(&self, file: &str, mut attempt: impl FnMut(&str) -> Result<T>) -> Result<T> {
        first_success(&self.bases, self.progress, |base| {
            let url = join_url(base, file);
            self.progress.note(&format!("downloading {url}"));
            attempt(&url)
        })
    }

    /// [`download`] through this fetch's agent and progress display.
    fn download(&self, url: &str, dest: &Path, max_bytes: u64) -> Result<u64> {
        download(&self.agent, url, dest, max_bytes, self.progress)
    }
}

fn build_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .timeout_write(WRITE_TIMEOUT)
        .user_agent(concat!("bn-exp/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A file downloaded and checked, waiting to be renamed into place.
#[derive(Debug)]
struct StagedFile {
    staged: PathBuf,
    target: PathBuf,
    /// The same file under its other accepted name (`x` for `x.gz`, or the reverse), which
    /// would otherwise sit beside the fresh copy, possibly damaged.
    stale_twin: Option<PathBuf>,
}

/// The hidden folder downloads go to before they are checked, and the folders this fetch had
/// to create; dropping it without [`Staging::commit`] removes all of them.
struct Staging {
    dir: PathBuf,
    dataset_dir: PathBuf,
    created: Vec<PathBuf>,
    committed: bool,
}

impl Staging {
    fn create(data_dir: &Path, dataset: Dataset) -> Result<Staging> {
        let dataset_dir = dataset.dir(data_dir);
        let mut staging = Staging {
            dir: data_dir.join(format!(
                ".bn-exp-fetch-{}-{}.part",
                dataset.cli_name(),
                std::process::id()
            )),
            dataset_dir,
            created: Vec::new(),
            committed: false,
        };
        staging.created = create_dir_all_recorded(&staging.dataset_dir)?;
        if staging.dir.exists() {
            fs::remove_dir_all(&staging.dir).with_context(|| {
                format!(
                    "cannot clear the old staging folder {}",
                    staging.dir.display()
                )
            })?;
        }
        fs::create_dir(&staging.dir).with_context(|| {
            format!("cannot create the staging folder {}", staging.dir.display())
        })?;
        Ok(staging)
    }

    /// Rename every staged file into place; returns the final paths.
    fn commit(mut self, staged: &[StagedFile]) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        for file in staged {
            fs::rename(&file.staged, &file.target).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    file.staged.display(),
                    file.target.display()
                )
            })?;
            // The folders now hold a valid file: they must stay even if a later rename fails.
            self.created.clear();
            if let Some(twin) = &file.stale_twin {
                fs::remove_file(twin).with_context(|| {
                    format!("cannot remove {}, replaced by the download", twin.display())
                })?;
            }
            done.push(file.target.clone());
        }
        self.committed = true;
        Ok(done)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Best effort: there is no one to report a failure to while unwinding an error.
        let _ = fs::remove_dir_all(&self.dir);
        if !self.committed {
            for dir in self.created.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// `fs::create_dir_all`, returning the folders it created, outermost first.
fn create_dir_all_recorded(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for folder in &missing {
        fs::create_dir(folder)
            .with_context(|| format!("cannot create the folder {}", folder.display()))?;
    }
    Ok(missing)
}

/// Try `attempt` on each base URL until one succeeds. With several bases, the error of the last
/// is returned (so its kind can still be inspected) with the others' reasons as context.
fn first_success<T>(
    bases: &[String],
    progress: &dyn Progress,
    mut attempt: impl FnMut(&str) -> Result<T>,
) -> Result<T> {
    let mut failures = Vec::new();
    for base in bases {
        match attempt(base) {
            Ok(value) => return Ok(value),
            Err(err) => {
                if bases.len() > 1 {
                    progress.note(&format!("  failed: {err:#}"));
                }
                failures.push(err);
            }
        }
    }
    let last = failures
        .pop()
        .ok_or_else(|| anyhow!("bn-exp bug: no source to download from"))?;
    if failures.is_empty() {
        Err(last)
    } else {
        let earlier: Vec<String> = failures.iter().map(|e| format!("{e:#}")).collect();
        Err(last.context(format!(
            "every source failed; before the last: {}",
            earlier.join(" | ")
        )))
    }
}

fn join_url(base: &str, file: &str) -> String {
    format!("{}/{file}", base.trim_end_matches('/'))
}

/// Download each needed MNIST file as `<name>.gz` into the staging folder and check it.
fn stage_mnist(
    sources: &Sources,
    staging: &Staging,
    needed: &[&FileSpec],
) -> Result<Vec<StagedFile>> {
    let mut staged = Vec::new();
    for spec in needed {
        let remote = format!("{}.gz", spec.name);
        let staged_path = staging.dir.join(&remote);
        let gz_target = staging.dataset_dir.join(&remote);
        let gzipped = sources.try_each(&remote, |url| {
            let result = sources
                .download(url, &staged_path, MNIST_MAX_DOWNLOAD)
                .and_then(|_| check_download(Dataset::Mnist, spec, &staged_path, &gz_target, url));
            if result.is_err() {
                let _ = fs::remove_file(&staged_path);
            }
            result
        })?;
        // A server that decodes gzip on the fly (Content-Encoding) hands over the plain file:
        // keep it under its plain name so the name says what the file is.
        let plain_target = staging.dataset_dir.join(spec.name);
        let (target, twin) = if gzipped {
            (gz_target, plain_target)
        } else {
            (plain_target, gz_target)
        };
        staged.push(StagedFile {
            staged: staged_path,
            target,
            stale_twin: twin.exists().then_some(twin),
        });
    }
    Ok(staged)
}

/// Check a downloaded file as `verify` would; messages name the file's final path. Returns
/// whether it is gzip-compressed.
fn check_download(
    dataset: Dataset,
    spec: &FileSpec,
    staged: &Path,
    target: &Path,
    url: &str,
) -> Result<bool> {
    let bytes = fs::read(staged)
        .with_context(|| format!("cannot read back the download {}", staged.display()))?;
    let checked = data::check_file_bytes(dataset, target, spec, bytes)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("the file downloaded from {url} failed its check"))?;
    Ok(checked.info.gzipped)
}

/// Download the CIFAR-10 archive, extract the needed members into the staging folder and check
/// each of them.
fn stage_cifar(
    sources: &Sources,
    staging: &Staging,
    needed: &[&FileSpec],
) -> Result<Vec<StagedFile>> {
    let archive = staging.dir.join(CIFAR_ARCHIVE);
    let members_dir = staging.dir.join(Dataset::Cifar10.dir_name());
    let staged: Vec<StagedFile> = needed
        .iter()
        .map(|spec| StagedFile {
            staged: members_dir.join(spec.name),
            target: staging.dataset_dir.join(spec.name),
            stale_twin: None,
        })
        .collect();
    sources.try_each(CIFAR_ARCHIVE, |url| {
        let result = sources
            .download(url, &archive, CIFAR_MAX_DOWNLOAD)
            .and_then(|_| {
                sources
                    .progress
                    .note(&format!("extracting and checking {CIFAR_ARCHIVE}"));
                extract_cifar_members(&archive, &members_dir, needed, url)
            })
            .and_then(|_| check_cifar_members(needed, &staged, url));
        // The archive is not needed once its members are out: free the 163 MiB at once.
        let _ = fs::remove_file(&archive);
        if result.is_err() {
            let _ = fs::remove_dir_all(&members_dir);
        }
        result
    })?;
    Ok(staged)
}

/// Extract the members `cifar-10-batches-bin/<name>` named in `needed` (and nothing else: no
/// path from the archive is ever used as a destination) into `dest`.
fn extract_cifar_members(
    archive: &Path,
    dest: &Path,
    needed: &[&FileSpec],
    url: &str,
) -> Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let file = File::open(archive)
        .with_context(|| format!("cannot read back the download {}", archive.display()))?;
    let mut tar = tar::Archive::new(MultiGzDecoder::new(BufReader::new(file)));
    let broken = |err: io::Error| archive_error(url, err);
    let mut found: Vec<&str> = Vec::new();
    for entry in tar.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let path = entry.path().map_err(broken)?.into_owned();
        let Some(spec) =
            cifar_member(&path).and_then(|name| needed.iter().find(|s| s.name == name))
        else {
            continue;
        };
        if entry.size() > CIFAR_MAX_MEMBER {
            bail!(
                "the archive from {url} is not CIFAR-10: its member {} is {} bytes",
                path.display(),
                entry.size()
            );
        }
        let out_path = dest.join(spec.name);
        let mut out = File::create(&out_path)
            .with_context(|| format!("cannot write {}", out_path.display()))?;
        io::copy(&mut entry, &mut out).map_err(broken)?;
        found.push(spec.name);
    }
    // Read to the end so that gzip's own length and CRC check runs as well.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(broken)?;
    if let Some(lacking) = needed.iter().find(|s| !found.contains(&s.name)) {
        bail!(
            "the archive from {url} lacks {}/{}: it is not the CIFAR-10 binary version",
            Dataset::Cifar10.dir_name(),
            lacking.name
        );
    }
    Ok(())
}

/// The file name of an archive path `cifar-10-batches-bin/<name>` (a leading `./` allowed).
fn cifar_member(path: &Path) -> Option<&str> {
    let parts: Vec<Component> = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    match parts.as_slice() {
        [Component::Normal(dir), Component::Normal(name)]
            if *dir == Dataset::Cifar10.dir_name() =>
        {
            name.to_str()
        }
        _ => None,
    }
}

fn archive_error(url: &str, err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        anyhow!("the archive from {url} is truncated ({err})")
    } else {
        anyhow!("the archive from {url} is corrupt ({err})")
    }
}

/// Check each extracted member (`staged`, in `needed`'s order) as `verify` would.
fn check_cifar_members(needed: &[&FileSpec], staged: &[StagedFile], url: &str) -> Result<()> {
    for (spec, file) in needed.iter().zip(staged) {
        check_download(Dataset::Cifar10, spec, &file.staged, &file.target, url)?;
    }
    Ok(())
}

/// GET `url` into `dest`, with a progress bar. Fails on any HTTP error status, on a body cut
/// short of its announced length, and on a body larger than `max_bytes`.
fn download(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    max_bytes: u64,
    progress: &dyn Progress,
) -> Result<u64> {
    let response = match agent.get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(code, response)) => {
            bail!(
                "{url} answered HTTP {code} {}{}",
                response.status_text(),
                if code == 404 {
                    " (no such file at this source; check --base-url)"
                } else {
                    ""
                }
            )
        }
        Err(ureq::Error::Transport(err)) => bail!("could not download {url}: {err}"),
    };
    // With Content-Encoding the announced length is of the encoded body, not of what we read.
    let encoded = response.header("Content-Encoding").is_some();
    let announced = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = announced
        && len > max_bytes
    {
        bail!("{url} announces {len} bytes, more than the {max_bytes} this data set can be");
    }
    let name = url.rsplit('/').next().unwrap_or(url);
    progress.begin(name, announced, 0);
    let mut file =
        File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut body = Counted {
        inner: response.into_reader().take(max_bytes + 1),
        bytes: 0,
        reported: 0,
        progress,
    };
    let copied = io::copy(&mut body, &mut file);
    progress.end();
    let written = copied.map_err(|err| body_error(url, announced, err))?;
    if written > max_bytes {
        bail!("{url} sent more than {max_bytes} bytes: it is not the expected file");
    }
    if !encoded
        && let Some(len) = announced
        && written != len
    {
        bail!("the download of {url} is truncated: {written} of {len} bytes arrived");
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(written)
}

fn body_error(url: &str, announced: Option<u64>, err: io::Error) -> anyhow::Error {
    match (err.kind(), announced) {
        (io::ErrorKind::UnexpectedEof, Some(len)) => anyhow!(
            "the download of {url} is truncated: the connection closed before all {len} bytes \
             arrived ({err})"
        ),
        (io::ErrorKind::UnexpectedEof, None) => {
            anyhow!("the download of {url} is truncated: the connection closed early ({err})")
        }
        _ => anyhow!("the download of {url} failed: {err}"),
    }
}

/// A download's body, reporting how much has arrived every 256 KiB.
struct Counted<'a, R> {
    inner: R,
    bytes: u64,
    reported: u64,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes - self.reported >= 256 << 10 {
            self.reported = self.bytes;
            self.progress
                .advance(self.bytes, &data::human_size(self.bytes));
        }
        Ok(n)
    }
}
