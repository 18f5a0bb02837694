//! Helpers shared by the tests that work with files and the binary: the repository, the bn-exp
//! binary and what it printed, the embedded MNIST, a small CIFAR-10-format set the tests write
//! themselves, copies of both to damage in temporary folders, and where the real data sets live
//! for the ignored real-data group.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use bn_exp::data::{self, Catalogue};

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

/// The repository's root (shipped configs, studies, scripts and fixtures live under it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The MNIST copy embedded in the repository (`data/`).
pub fn embedded_data() -> PathBuf {
    repo().join("data")
}

/// The folder holding the real MNIST and CIFAR-10, from `BN_EXP_DATA_DIR`. Panics (so the test
/// fails, never passes silently) with instructions when it is unset or lacks either data set.
pub fn real_data() -> PathBuf {
    let how = "Set BN_EXP_DATA_DIR to a folder holding mnist/ and cifar-10-batches-bin/; get \
               them with `bn-exp data fetch mnist --data-dir DIR` and `bn-exp data fetch cifar10 \
               --data-dir DIR` (see README, \"Tests\")";
    let Some(dir) = std::env::var_os("BN_EXP_DATA_DIR").map(PathBuf::from) else {
        panic!("this real-data test needs BN_EXP_DATA_DIR, which is not set. {how}");
    };
    for sub in ["mnist", "cifar-10-batches-bin"] {
        assert!(
            dir.join(sub).is_dir(),
            "BN_EXP_DATA_DIR={} has no {sub}/ folder. {how}",
            dir.display()
        );
    }
    dir
}

/// Records in each batch file of the small CIFAR-format set: 3 per class.
pub const SMALL_CIFAR_RECORDS: usize = 30;

/// A small CIFAR-10-format set written by [`write_small_cifar`]: the real file names and
/// layout, `SMALL_CIFAR_RECORDS` records per batch file, and a catalogue with its checksums.
pub struct SmallCifar {
    /// The data folder (holds `cifar-10-batches-bin/`).
    pub data_dir: PathBuf,
    /// `<data_dir>/cifar-10-batches-bin`.
    pub dir: PathBuf,
    /// The catalogue file with this set's record count and sha256s (outside `data_dir`).
    pub catalogue_path: PathBuf,
    pub catalogue: Catalogue,
}

/// Label of record `i` of any small batch file: the classes in turn.
pub fn small_cifar_label(i: usize) -> u8 {
    (i % 10) as u8
}

/// Pixel `p` (0..3072, CHW) of record `i` of batch file `file`: the class's own colour plus
/// a deterministic ±32 texture, so that the classes are learnable from few images and every
/// record differs from every other.
pub fn small_cifar_pixel(file: usize, i: usize, p: usize) -> u8 {
    let label = usize::from(small_cifar_label(i));
    let channel = p / 1024;
    let colour = [(label * 53) % 200, (label * 97) % 200, (label * 151) % 200][channel] + 28;
    let mut h = (file * 1_000_003 + i * 7919 + p) as u64;
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    (colour + (h % 64) as usize - 32) as u8
}

/// One batch file of the small set: `SMALL_CIFAR_RECORDS` records of label then CHW pixels.
pub fn small_cifar_batch(file: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(SMALL_CIFAR_RECORDS * 3073);
    for i in 0..SMALL_CIFAR_RECORDS {
        out.push(small_cifar_label(i));
        out.extend((0..3072).map(|p| small_cifar_pixel(file, i, p)));
    }
    out
}

/// Write the small CIFAR-format set into `<root>/data/cifar-10-batches-bin/` and its catalogue
/// into `<root>/catalogue.json`.
pub fn write_small_cifar(root: &Path) -> SmallCifar {
    let data_dir = root.join("data");
    let dir = data_dir.join("cifar-10-batches-bin");
    fs::create_dir_all(&dir).unwrap();
    let mut sha = serde_json::Map::new();
    for (file, name) in CIFAR_FILES[..6].iter().enumerate() {
        let bytes = small_cifar_batch(file);
        fs::write(dir.join(name), &bytes).unwrap();
        sha.insert(name.to_string(), data::sha256_hex(&bytes).into());
    }
    fs::write(
        dir.join("batches.meta.txt"),
        data::CIFAR_CLASSES.join("\n") + "\n",
    )
    .unwrap();
    let catalogue_path = root.join("catalogue.json");
    let json = serde_json::json!({
        "cifar10": {"records_per_batch": SMALL_CIFAR_RECORDS, "sha256": sha}
    });
    fs::write(
        &catalogue_path,
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    let catalogue = Catalogue::from_file(&catalogue_path).unwrap();
    SmallCifar {
        data_dir,
        dir,
        catalogue_path,
        catalogue,
    }
}

/// The bn-exp binary cargo built for these tests, to add arguments to. The environment is the
/// test process's; a test that needs another gives it to this command, never to its own process
/// (the tests of every module share it).
pub fn bn_exp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bn-exp"))
}

/// `bn-exp train --config CONFIG --data-dir <the embedded MNIST> --out OUT`, to add flags to.
pub fn train_on_embedded(config: &Path, out: &Path) -> Command {
    let mut command = bn_exp();
    command
        .arg("train")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(embedded_data())
        .arg("--out")
        .arg(out);
    command
}

/// `bn-exp train` of `configs/smoke.json` on the embedded MNIST into `out`, to add flags to.
pub fn smoke_train(out: &Path) -> Command {
    train_on_embedded(&repo().join("configs/smoke.json"), out)
}

/// `--set KEY=VALUE` for each assignment, as arguments.
pub fn set_flags<'a>(assignments: &[&'a str]) -> Vec<&'a str> {
    assignments.iter().flat_map(|a| ["--set", a]).collect()
}

/// `bn-exp compare --study STUDY --results-dir RESULTS`, to add flags to.
pub fn compare_study(study: &Path, results: &Path) -> Command {
    let mut command = bn_exp();
    command
        .arg("compare")
        .arg("--study")
        .arg(study)
        .arg("--results-dir")
        .arg(results);
    command
}

/// `bn-exp compare --plan` of `study` into `results`, which must succeed.
pub fn plan_study(study: &Path, results: &Path) -> Output {
    let output = compare_study(study, results)
        .arg("--plan")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    output
}

/// Run bn-exp with `args`, without `BN_EXP_DATA_DIR` or a data catalogue leaking in from the
/// caller.
pub fn run_bn_exp(args: &[&str]) -> Output {
    bn_exp()
        .args(args)
        .env_remove("BN_EXP_DATA_DIR")
        .env_remove(data::CATALOGUE_ENV)
        .output()
        .expect("bn-exp binary runs")
}

/// Bytes a run printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a run printed on stderr.
pub fn stderr(output: &Output) -> String {
    text(&output.stderr)
}

/// A run's exit status, stdout and stderr, for a failed assertion's message.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// stdout and stderr of a run, together, for messages that may go to either.
pub fn all_output(output: &Output) -> String {
    text(&output.stdout) + &text(&output.stderr)
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

/// The `ok` rows of `bn-exp data verify`'s table.
pub fn verified_ok_lines(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("ok "))
        .count()
}

/// Whether `bn-exp data verify` listed `dataset` ("MNIST", "CIFAR-10") as valid.
pub fn lists_valid(stdout: &str, dataset: &str) -> bool {
    stdout
        .lines()
        .any(|l| l.starts_with(&format!("{dataset} (")) && l.ends_with(": valid"))
}

/// A run's `metrics.jsonl` without its wall-clock field: what two runs of one config must
/// share byte for byte, wherever and however they were trained.
pub fn metrics_without_timing(run_dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()))
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("elapsed_s");
            v
        })
        .collect()
}

/// Two results folders of one study (`a` and `b`, each `<results>/<study>`) hold the same
/// records for each of `runs` and the same group table, but for wall-clock times: what a study
/// must give wherever and however its runs trained.
pub fn assert_same_study(a: &Path, b: &Path, runs: &[&str]) {
    for name in runs {
        assert_eq!(
            metrics_without_timing(&a.join(name)),
            metrics_without_timing(&b.join(name)),
            "{name}"
        );
    }
    assert_eq!(group_table_without_timing(a), group_table_without_timing(b));
}

/// A study's `comparison.md` up to its per-run table, without each row's last two cells
/// (wall s, steps/s): the groups' numbers, which do not depend on where the runs trained.
pub fn group_table_without_timing(study_dir: &Path) -> Vec<String> {
    fs::read_to_string(study_dir.join("comparison.md"))
        .unwrap_or_else(|e| panic!("{}: {e}", study_dir.display()))
        .lines()
        .take_while(|l| !l.starts_with("## Runs"))
        .map(|l| l.rsplitn(4, '|').nth(3).unwrap_or(l).to_string())
        .collect()
}
