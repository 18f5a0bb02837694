//! Damaged and missing data: each kind of problem gives its own error, naming the file and what
//! to do, through the library and through `bn-exp data verify` / `info`, without panicking.

mod common;

use std::fs;
use std::path::Path;

use bn_exp::data::{self, DataError, Dataset, DatasetState, FileStatus, Preprocess};
use tempfile::TempDir;

/// Load and return the `DataError` it fails with (panics if it loads, or fails otherwise).
fn load_error(dir: &Path, dataset: Dataset) -> DataError {
    match data::load(dir, dataset, Preprocess::Scale) {
        Ok(_) => panic!("{dataset} in {} loaded, but it is damaged", dir.display()),
        Err(err) => err
            .downcast_ref::<DataError>()
            .unwrap_or_else(|| panic!("not a DataError: {err:#}"))
            .clone(),
    }
}

fn mnist_copy() -> TempDir {
    let tmp = TempDir::new().unwrap();
    common::copy_mnist(tmp.path());
    tmp
}

fn write_gz(dir: &Path, name: &str, content: &[u8]) {
    fs::write(
        dir.join("mnist").join(format!("{name}.gz")),
        common::gzip(content),
    )
    .unwrap();
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";

#[test]
fn embedded_mnist_loads_and_a_copy_verifies() {
    let tmp = mnist_copy();
    let report = data::verify_dataset(tmp.path(), Dataset::Mnist);
    assert_eq!(report.state(), DatasetState::Valid);
    assert_eq!(
        data::verify_dataset(tmp.path(), Dataset::Cifar10).state(),
        DatasetState::Absent
    );
}

#[test]
fn missing_mnist_file_names_the_file_and_the_fetch_command() {
    let tmp = mnist_copy();
    fs::remove_file(tmp.path().join(format!("mnist/{TRAIN_LABELS}.gz"))).unwrap();
    let err = load_error(tmp.path(), Dataset::Mnist);
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(TRAIN_LABELS), "{message}");
    assert!(message.contains("bn-exp data fetch mnist"), "{message}");
    assert!(
        message.contains("--data-dir") && message.contains("BN_EXP_DATA_DIR"),
        "{message}"
    );
}

#[test]
fn missing_cifar_names_the_cifar10_fetch_command() {
    let tmp = TempDir::new().unwrap();
    let err = load_error(tmp.path(), Dataset::Cifar10);
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("data_batch_1.bin"), "{message}");
    assert!(message.contains("bn-exp data fetch cifar10"), "{message}");
}

#[test]
fn truncated_gzip_is_reported_as_truncated() {
    let tmp = mnist_copy();
    let gz = common::mnist_gz(TRAIN_IMAGES);
    fs::write(
        tmp.path().join(format!("mnist/{TRAIN_IMAGES}.gz")),
        &gz[..gz.len() / 2],
    )
    .unwrap();
    let err = load_error(tmp.path(), Dataset::Mnist);
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains(TRAIN_IMAGES), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn truncated_payload_is_reported_as_truncated_with_sizes() {
    let tmp = mnist_copy();
    let content = common::mnist_content(TRAIN_LABELS);
    write_gz(tmp.path(), TRAIN_LABELS, &content[..content.len() - 100]);
    let err = load_error(tmp.path(), Dataset::Mnist);
    match &err {
        DataError::Truncated {
            expected, actual, ..
        } => {
            assert_eq!(*expected, 60_008);
            assert_eq!(*actual, 59_908);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(err.to_string().contains(TRAIN_LABELS), "{err}");
}

#[test]
fn one_changed_pixel_byte_is_a_checksum_mismatch() {
    let tmp = mnist_copy();
    let mut content = common::mnist_content(TRAIN_IMAGES);
    content[16 + 28 * 14 + 14] ^= 0x01;
    write_gz(tmp.path(), TRAIN_IMAGES, &content);
    let err = load_error(tmp.path(), Dataset::Mnist);
    let DataError::ChecksumMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("expected ChecksumMismatch, got {err:?}");
    };
    assert_eq!(
        expected,
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    );
    assert_eq!(*actual, data::sha256_hex(&content));
    let message = err.to_string();
    for needle in [
        TRAIN_IMAGES,
        "damaged or not the genuine file",
        expected.as_str(),
        actual.as_str(),
        "bn-exp data fetch mnist",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
}

#[test]
fn wrong_magic_is_reported_as_wrong_magic() {
    let tmp = mnist_copy();
    // A labels file where the images belong; stored uncompressed, which bn-exp also accepts.
    fs::remove_file(tmp.path().join(format!("mnist/{TRAIN_IMAGES}.gz"))).unwrap();
    fs::write(
        tmp.path().join("mnist").join(TRAIN_IMAGES),
        common::mnist_content(TRAIN_LABELS),
    )
    .unwrap();
    let err = load_error(tmp.path(), Dataset::Mnist);
    assert_eq!(
        err,
        DataError::WrongMagic {
            dataset: Dataset::Mnist,
            path: tmp.path().join("mnist").join(TRAIN_IMAGES),
            expected: 0x0803,
            found: 0x0801,
        }
    );
    assert!(err.to_string().contains("0x00000801"), "{err}");
}

#[test]
fn the_four_kinds_are_distinct() {
    let kinds = [
        DataError::Missing {
            dataset: Dataset::Mnist,
            path: "x".into(),
        }
        .kind(),
        DataError::Truncated {
            dataset: Dataset::Mnist,
            path: "x".into(),
            expected: 2,
            actual: 1,
        }
        .kind(),
        DataError::WrongMagic {
            dataset: Dataset::Mnist,
            path: "x".into(),
            expected: 1,
            found: 2,
        }
        .kind(),
        DataError::ChecksumMismatch {
            dataset: Dataset::Mnist,
            path: "x".into(),
            expected: "a".into(),
            actual: "b".into(),
        }
        .kind(),
    ];
    for (i, a) in kinds.iter().enumerate() {
        for b in &kinds[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn uncompressed_files_and_gzip_under_a_plain_name_are_accepted() {
    let tmp = mnist_copy();
    let mnist = tmp.path().join("mnist");
    // Plain IDX under the plain name.
    fs::remove_file(mnist.join(format!("{TRAIN_IMAGES}.gz"))).unwrap();
    fs::write(
        mnist.join(TRAIN_IMAGES),
        common::mnist_content(TRAIN_IMAGES),
    )
    .unwrap();
    // gzip under the plain name: detected by its magic bytes, not by its name.
    fs::rename(
        mnist.join(format!("{TRAIN_LABELS}.gz")),
        mnist.join(TRAIN_LABELS),
    )
    .unwrap();
    let raw = data::load_raw(tmp.path(), Dataset::Mnist).unwrap();
    assert_eq!(raw.train.len, 60_000);
    assert!(!raw.files[0].gzipped && raw.files[1].gzipped);
}

#[test]
fn corrupt_gzip_stream_is_damage_not_a_panic() {
    let tmp = mnist_copy();
    let mut gz = common::mnist_gz(TRAIN_LABELS);
    let middle = gz.len() / 2;
    for byte in &mut gz[middle..middle + 64] {
        *byte ^= 0xa5;
    }
    fs::write(tmp.path().join(format!("mnist/{TRAIN_LABELS}.gz")), &gz).unwrap();
    let err = load_error(tmp.path(), Dataset::Mnist);
    assert!(
        !matches!(err, DataError::Missing { .. }),
        "a damaged file is not missing: {err:?}"
    );
    assert!(err.to_string().contains(TRAIN_LABELS), "{err}");
}

#[test]
fn cifar_changed_byte_truncation_and_bad_label_are_reported() {
    let tmp = TempDir::new().unwrap();
    let dir = common::link_cifar(tmp.path(), &["data_batch_3.bin"]);
    let mut batch =
        fs::read(common::shared_data().join("cifar-10-batches-bin/data_batch_3.bin")).unwrap();
    let target = dir.join("data_batch_3.bin");

    batch[3073 * 7 + 500] ^= 0x80;
    fs::write(&target, &batch).unwrap();
    let err = load_error(tmp.path(), Dataset::Cifar10);
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
    assert!(
        err.to_string().contains("bn-exp data fetch cifar10"),
        "{err}"
    );

    fs::write(&target, &batch[..batch.len() - 3073]).unwrap();
    let err = load_error(tmp.path(), Dataset::Cifar10);
    assert_eq!(
        err,
        DataError::Truncated {
            dataset: Dataset::Cifar10,
            path: target.clone(),
            expected: 30_730_000,
            actual: 30_730_000 - 3073,
        }
    );

    let report = data::verify_dataset(tmp.path(), Dataset::Cifar10);
    assert_eq!(report.state(), DatasetState::Damaged);
    let damaged: Vec<&str> = report
        .files
        .iter()
        .filter(|f| matches!(f.status, FileStatus::Damaged(_)))
        .map(|f| f.name)
        .collect();
    assert_eq!(damaged, ["data_batch_3.bin"]);
}

#[test]
fn cifar_wrong_class_list_is_malformed() {
    let tmp = TempDir::new().unwrap();
    let dir = common::link_cifar(tmp.path(), &["batches.meta.txt"]);
    fs::write(dir.join("batches.meta.txt"), "airplane\ncar\n").unwrap();
    let err = load_error(tmp.path(), Dataset::Cifar10);
    assert!(matches!(err, DataError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("batches.meta.txt"), "{err}");
}

#[test]
fn verify_on_a_damaged_set_exits_nonzero_and_names_the_problem() {
    let tmp = mnist_copy();
    let mut content = common::mnist_content(TRAIN_IMAGES);
    content[20_000] ^= 0x10;
    write_gz(tmp.path(), TRAIN_IMAGES, &content);
    let output =
        common::run_bn_exp(&["data", "verify", "--data-dir", tmp.path().to_str().unwrap()]);
    let text = common::all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains(&format!("{TRAIN_IMAGES}.gz")), "{text}");
    assert!(text.contains("bn-exp data fetch mnist"), "{text}");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{text}"
    );
}

#[test]
fn verify_with_no_data_exits_nonzero_and_says_how_to_get_it() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("nothing-here");
    let output = bn_exp_with_env_dir(&["data", "verify"], &missing);
    let text = common::all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("bn-exp data fetch mnist"), "{text}");
    assert!(text.contains("bn-exp data fetch cifar10"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// Run bn-exp with the data folder given through `BN_EXP_DATA_DIR` instead of `--data-dir`.
fn bn_exp_with_env_dir(args: &[&str], dir: &Path) -> std::process::Output {
    common::bn_exp()
        .args(args)
        .env("BN_EXP_DATA_DIR", dir)
        .output()
        .unwrap()
}

#[test]
fn info_on_missing_data_fails_cleanly_with_the_fetch_command() {
    let tmp = TempDir::new().unwrap();
    let output = common::run_bn_exp(&[
        "data",
        "info",
        "cifar10",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    let text = common::all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("bn-exp data fetch cifar10"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn info_describes_embedded_mnist() {
    let tmp = mnist_copy();
    let output = bn_exp_with_env_dir(&["data", "info", "mnist"], tmp.path());
    let text = common::all_output(&output);
    assert!(output.status.success(), "{text}");
    for needle in [
        "5923",
        "6742",
        "60000",
        "10000",
        "CC BY-SA 3.0",
        "mean 0.1307 std 0.3081",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

#[test]
fn verify_on_the_shared_data_exits_zero_and_lists_both_sets_valid() {
    let shared = common::shared_data();
    let output = common::run_bn_exp(&["data", "verify", "--data-dir", shared.to_str().unwrap()]);
    let text = common::all_output(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for dataset in ["MNIST", "CIFAR-10"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{dataset} (")) && l.ends_with(": valid")),
            "{dataset} not listed as valid in {stdout}"
        );
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("ok "))
            .count(),
        11
    );
}
