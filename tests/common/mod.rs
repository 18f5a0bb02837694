//! Helpers shared by the data-layer tests: where the real data lives, and copies of it to
//! damage in temporary folders.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// The four MNIST files as bn-exp names them (uncompressed names).
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The CIFAR-10 files bn-exp reads.
pub const CIFAR_FILES: [&str; 7] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
    "batches.meta.txt",
];

/// The MNIST copy embedded in the repository (`data/`).
pub fn embedded_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The shared offline copies of MNIST and CIFAR-10 beside the repository root.
pub fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// The bn-exp binary cargo built for these tests.
pub fn bn_exp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bn-exp"))
}

/// Run bn-exp with `args`, without `BN_EXP_DATA_DIR` leaking in from the caller.
pub fn run_bn_exp(args: &[&str]) -> Output {
    bn_exp()
        .args(args)
        .env_remove("BN_EXP_DATA_DIR")
        .output()
        .expect("bn-exp binary runs")
}

/// stdout and stderr of a run, together, for messages that may go to either.
pub fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Bytes of an embedded MNIST file, `.gz` as stored.
pub fn mnist_gz(name: &str) -> Vec<u8> {
    fs::read(embedded_data().join("mnist").join(format!("{name}.gz"))).expect("embedded MNIST")
}

/// Decompressed content of an embedded MNIST file.
pub fn mnist_content(name: &str) -> Vec<u8> {
    gunzip(&mnist_gz(name))
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Fast compression: these copies only need to be valid gzip.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

/// Copy the embedded MNIST into `<data_dir>/mnist/`.
pub fn copy_mnist(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("mnist");
    fs::create_dir_all(&dir).unwrap();
    for name in MNIST_FILES {
        let file = format!("{name}.gz");
        fs::copy(embedded_data().join("mnist").join(&file), dir.join(&file)).unwrap();
    }
    dir
}

/// Make `<data_dir>/cifar-10-batches-bin/` hold links to the shared CIFAR-10 files (copying
/// 180 MB per test would be slow), except the files in `except`.
pub fn link_cifar(data_dir: &Path, except: &[&str]) -> PathBuf {
    let dir = data_dir.join("cifar-10-batches-bin");
    fs::create_dir_all(&dir).unwrap();
    let source = shared_data().join("cifar-10-batches-bin");
    for name in CIFAR_FILES.iter().filter(|n| !except.contains(n)) {
        link_or_copy(&source.join(name), &dir.join(name));
    }
    dir
}

fn link_or_copy(from: &Path, to: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(fs::canonicalize(from).unwrap(), to).unwrap();
    #[cfg(not(unix))]
    fs::copy(from, to).map(|_| ()).unwrap();
}

/// Names in a folder, sorted (empty if the folder does not exist).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file under `dir`, recursively, as paths relative to it, sorted.
pub fn list_tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    collect_tree(dir, dir, &mut out);
    out.sort();
    out
}

fn collect_tree(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        out.push(path.strip_prefix(root).unwrap().display().to_string());
        if path.is_dir() {
            collect_tree(root, &path, out);
        }
    }
}
