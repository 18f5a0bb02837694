//! Damaged and missing data: each kind of problem gives its own error, naming the file and what
//! to do, through the library and through `bn-exp data verify` / `info`, without panicking.
//!
//! MNIST cases damage copies of the embedded MNIST (checked against the published checksums);
//! CIFAR-10 cases damage the small CIFAR-format set the tests write (checked against its own
//! catalogue, through the same code). The checks on the real CIFAR-10 are in `data_real.rs`.

use std::fs;
use std::path::Path;

use bn_exp::data::{self, Catalogue, DataError, Dataset, DatasetState, FileStatus, Preprocess};
use tempfile::TempDir;

use crate::common;

/// Load with the published catalogue and return the `DataError` it fails with (panics if it
/// loads, or fails otherwise).
fn load_error(dir: &Path, dataset: Dataset) -> DataError {
    load_error_with(dir, dataset, &Catalogue::published())
}

fn load_error_with(dir: &Path, dataset: Dataset, catalogue: &Catalogue) -> DataError {
    match data::load(dir, dataset, Preprocess::Scale, catalogue) {
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
    let report = data::verify_dataset(tmp.path(), Dataset::Mnist, &Catalogue::published());
    assert_eq!(report.state(), DatasetState::Valid);
    assert_eq!(
        data::verify_dataset(tmp.path(), Dataset::Cifar10, &Catalogue::published()).state(),
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
    let raw = data::load_raw(tmp.path(), Dataset::Mnist, &Catalogue::published()).unwrap();
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
fn small_cifar_set_loads_with_its_labels_and_pixels() {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(tmp.path());
    let raw = data::load_raw(&set.data_dir, Dataset::Cifar10, &set.catalogue).unwrap();
    let n = common::SMALL_CIFAR_RECORDS;
    assert_eq!((raw.train.len, raw.test.len), (5 * n, n));
    assert_eq!(
        (raw.train.channels, raw.train.height, raw.train.width),
        (3, 32, 32)
    );
    assert_eq!(raw.classes, data::CIFAR_CLASSES);
    // Record 7 of data_batch_2.bin is training image n + 7; pixel 1500 is in the green plane.
    let image = n + 7;
    assert_eq!(raw.train.labels[image], common::small_cifar_label(7));
    assert_eq!(
        raw.train.images[image * 3072 + 1500],
        common::small_cifar_pixel(1, 7, 1500)
    );
    assert_eq!(
        raw.test.images[3 * 3072],
        common::small_cifar_pixel(5, 3, 0)
    );
    assert_eq!(raw.train.class_counts(), [15; 10]);
    // The published catalogue rejects the same files: the checks really are the catalogue's.
    let err = load_error(&set.data_dir, Dataset::Cifar10);
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
}

/// The small CIFAR-format set in a fresh folder, with the path and bytes of its file `name`.
fn small_cifar_and_file(name: &str) -> (TempDir, common::SmallCifar, std::path::PathBuf, Vec<u8>) {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(tmp.path());
    let target = set.dir.join(name);
    let batch = fs::read(&target).unwrap();
    (tmp, set, target, batch)
}

#[test]
fn cifar_changed_byte_truncation_and_bad_label_are_reported() {
    let (_tmp, set, target, mut batch) = small_cifar_and_file("data_batch_3.bin");
    let full_len = (common::SMALL_CIFAR_RECORDS * 3073) as u64;

    batch[3073 * 7 + 500] ^= 0x80;
    fs::write(&target, &batch).unwrap();
    let err = load_error_with(&set.data_dir, Dataset::Cifar10, &set.catalogue);
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
    assert!(
        err.to_string().contains("bn-exp data fetch cifar10"),
        "{err}"
    );
    batch[3073 * 7 + 500] ^= 0x80;

    fs::write(&target, &batch[..batch.len() - 3073]).unwrap();
    let err = load_error_with(&set.data_dir, Dataset::Cifar10, &set.catalogue);
    assert_eq!(
        err,
        DataError::Truncated {
            dataset: Dataset::Cifar10,
            path: target.clone(),
            expected: full_len,
            actual: full_len - 3073,
        }
    );

    let report = data::verify_dataset(&set.data_dir, Dataset::Cifar10, &set.catalogue);
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
fn cifar_label_out_of_range_is_malformed_after_the_checksum() {
    // A catalogue that vouches for a file with label 10: the checksum passes, the label check
    // must still refuse it.
    let (_tmp, set, target, mut batch) = small_cifar_and_file("test_batch.bin");
    batch[3073 * 4] = 10;
    fs::write(&target, &batch).unwrap();
    let text = fs::read_to_string(&set.catalogue_path).unwrap();
    let old = data::sha256_hex(&common::small_cifar_batch(5));
    let patched = text.replace(&old, &data::sha256_hex(&batch));
    fs::write(&set.catalogue_path, patched).unwrap();
    let catalogue = Catalogue::from_file(&set.catalogue_path).unwrap();
    let err = load_error_with(&set.data_dir, Dataset::Cifar10, &catalogue);
    assert!(matches!(err, DataError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("record 4 has label 10"), "{err}");
}

#[test]
fn cifar_wrong_class_list_is_malformed() {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(tmp.path());
    fs::write(set.dir.join("batches.meta.txt"), "airplane\ncar\n").unwrap();
    let err = load_error_with(&set.data_dir, Dataset::Cifar10, &set.catalogue);
    assert!(matches!(err, DataError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("batches.meta.txt"), "{err}");
}

#[test]
fn bad_catalogue_files_are_named_errors() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("catalogue.json");
    let cases = [
        (
            r#"{"cifar10": {"records_per_batch": 3, "sha256": {}}}"#,
            "no entry for data_batch_1.bin",
        ),
        (
            r#"{"cifar10": {"records_per_batch": 0, "sha256": {}}}"#,
            "no entry for",
        ),
        (r#"{"cifar": {}}"#, "unknown field"),
        (
            r#"{"cifar10": {"records_per_batch": 3, "sha256": {"x.bin": "00"}}}"#,
            "unknown file \"x.bin\"",
        ),
        ("not json", "not a valid data catalogue"),
    ];
    for (text, needle) in cases {
        fs::write(&path, text).unwrap();
        let err = format!("{:#}", Catalogue::from_file(&path).unwrap_err());
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.contains("catalogue"), "{text}: {err}");
    }
    let set = common::write_small_cifar(tmp.path());
    let text = fs::read_to_string(&set.catalogue_path).unwrap();
    fs::write(
        &path,
        text.replace("\"records_per_batch\": 30", "\"records_per_batch\": 0"),
    )
    .unwrap();
    let err = format!("{:#}", Catalogue::from_file(&path).unwrap_err());
    assert!(
        err.contains("cifar10.records_per_batch must be between 1"),
        "{err}"
    );
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
    assert_eq!(output.status.code(), Some(2), "{text}");
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
    assert_eq!(output.status.code(), Some(2), "{text}");
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
fn verify_on_the_small_cifar_set_exits_zero_and_lists_both_sets_valid() {
    let tmp = TempDir::new().unwrap();
    let set = common::write_small_cifar(tmp.path());
    common::copy_mnist(&set.data_dir);
    let output = common::bn_exp()
        .args(["data", "verify", "--data-dir"])
        .arg(&set.data_dir)
        .env(data::CATALOGUE_ENV, &set.catalogue_path)
        .output()
        .unwrap();
    let text = common::all_output(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("catalogue.json (not the published checksums)"),
        "{stdout}"
    );
    assert_eq!(common::verified_ok_lines(&stdout), 11, "{stdout}");
    assert!(common::lists_valid(&stdout, "MNIST") && common::lists_valid(&stdout, "CIFAR-10"));

    // The same folder without the catalogue: CIFAR-10 is damaged (wrong size), exit 2.
    let output = common::run_bn_exp(&[
        "data",
        "verify",
        "--data-dir",
        set.data_dir.to_str().unwrap(),
    ]);
    let text = common::all_output(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("CIFAR-10") && text.contains("truncated"),
        "{text}"
    );
}
