//! The real data sets, loaded as training will load them, against the published facts
//! (data/README.md): class counts, pixel statistics, sizes and preprocessing.
//!
//! MNIST is embedded in the repository, so its tests always run. The tests that need the real
//! CIFAR-10 (170 MB, not in the repository) form the ignored real-data group: run them with
//! `BN_EXP_DATA_DIR=DIR cargo test --release -- --ignored`. Run without the data, they fail
//! with instructions; they never pass silently.

use std::sync::OnceLock;
use std::time::Instant;

use bn_exp::data::{self, Catalogue, Dataset, LoadedData, Preprocess, Split};

use crate::common;

const MNIST_TRAIN_COUNTS: [usize; 10] =
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const CIFAR_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR_STD: [f64; 3] = [0.2470, 0.2435, 0.2616];
const STAT_TOLERANCE: f64 = 0.0005;

/// Each data set is loaded once per preprocessing and shared by the tests (CIFAR-10 as f32 is
/// 740 MB; loading it in every test would be slow and heavy).
fn loaded(dataset: Dataset, preprocess: Preprocess) -> &'static LoadedData {
    static MNIST_SCALE: OnceLock<LoadedData> = OnceLock::new();
    static MNIST_BINARIZE: OnceLock<LoadedData> = OnceLock::new();
    static MNIST_STANDARDIZE: OnceLock<LoadedData> = OnceLock::new();
    static CIFAR_SCALE: OnceLock<LoadedData> = OnceLock::new();
    static CIFAR_STANDARDIZE: OnceLock<LoadedData> = OnceLock::new();
    let (cell, dir) = match (dataset, preprocess) {
        (Dataset::Mnist, Preprocess::Scale) => (&MNIST_SCALE, common::embedded_data()),
        (Dataset::Mnist, Preprocess::Binarize) => (&MNIST_BINARIZE, common::embedded_data()),
        (Dataset::Mnist, Preprocess::Standardize) => (&MNIST_STANDARDIZE, common::embedded_data()),
        (Dataset::Cifar10, Preprocess::Scale) => (&CIFAR_SCALE, common::real_data()),
        (Dataset::Cifar10, Preprocess::Standardize) => (&CIFAR_STANDARDIZE, common::real_data()),
        other => panic!("no test loads {other:?}"),
    };
    cell.get_or_init(|| {
        let start = Instant::now();
        let data = data::load(&dir, dataset, preprocess, &Catalogue::published())
            .unwrap_or_else(|e| panic!("loading {dataset} from {}: {e:#}", dir.display()));
        eprintln!(
            "loaded {dataset} ({preprocess:?}) in {:.3} s",
            start.elapsed().as_secs_f64()
        );
        data
    })
}

fn class_counts(labels: &[u8]) -> [usize; 10] {
    let mut counts = [0; 10];
    for &l in labels {
        counts[usize::from(l)] += 1;
    }
    counts
}

/// Per-channel mean and population std of a split's values, summed in f64.
fn channel_mean_std(split: &Split) -> Vec<(f64, f64)> {
    let plane = split.height * split.width;
    let mut sums = vec![(0f64, 0f64, 0u64); split.channels];
    for (k, values) in split.images.chunks_exact(plane).enumerate() {
        let (sum, sum_sq, n) = &mut sums[k % split.channels];
        for &v in values {
            let v = f64::from(v);
            *sum += v;
            *sum_sq += v * v;
        }
        *n += plane as u64;
    }
    sums.into_iter()
        .map(|(sum, sum_sq, n)| {
            let mean = sum / n as f64;
            (mean, (sum_sq / n as f64 - mean * mean).sqrt())
        })
        .collect()
}

fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

fn assert_split_shape(split: &Split, len: usize, chw: (usize, usize, usize)) {
    assert_eq!(split.len, len);
    assert_eq!((split.channels, split.height, split.width), chw);
    assert_eq!(split.labels.len(), len);
    assert_eq!(split.images.len(), len * split.feature_len());
    assert_eq!(split.feature_len(), chw.0 * chw.1 * chw.2);
}

#[test]
fn mnist_train_label_counts_are_the_published_ones() {
    let data = loaded(Dataset::Mnist, Preprocess::Scale);
    assert_eq!(class_counts(&data.train.labels), MNIST_TRAIN_COUNTS);
    assert_eq!(
        data.classes,
        (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn mnist_shapes_are_60000_train_and_10000_test_of_1x28x28() {
    let data = loaded(Dataset::Mnist, Preprocess::Scale);
    assert_eq!(data.dataset, Dataset::Mnist);
    assert_eq!(data.preprocess, Preprocess::Scale);
    assert_split_shape(&data.train, 60_000, (1, 28, 28));
    assert_split_shape(&data.test, 10_000, (1, 28, 28));
    assert_eq!(
        class_counts(&data.test.labels).iter().sum::<usize>(),
        10_000
    );
}

#[test]
fn mnist_scaled_train_pixels_have_the_published_mean_and_std() {
    let data = loaded(Dataset::Mnist, Preprocess::Scale);
    let (mean, std) = channel_mean_std(&data.train)[0];
    assert_close("MNIST train mean", mean, 0.1307, STAT_TOLERANCE);
    assert_close("MNIST train std", std, 0.3081, STAT_TOLERANCE);
    assert_close("recorded mean", f64::from(data.channel_mean[0]), mean, 1e-5);
    assert_close("recorded std", f64::from(data.channel_std[0]), std, 1e-5);
    let (min, max) = data
        .train
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((min, max), (0.0, 1.0));
}

#[test]
fn mnist_binarize_yields_only_zeros_and_ones_thresholded_at_half() {
    let binary = loaded(Dataset::Mnist, Preprocess::Binarize);
    let scaled = loaded(Dataset::Mnist, Preprocess::Scale);
    assert_eq!(binary.preprocess, Preprocess::Binarize);
    for (split_b, split_s) in [(&binary.train, &scaled.train), (&binary.test, &scaled.test)] {
        assert_eq!(split_b.images.len(), split_s.images.len());
        for (&b, &s) in split_b.images.iter().zip(&split_s.images) {
            assert!(b == 0.0 || b == 1.0, "binarized value {b}");
            assert_eq!(b, if s >= 0.5 { 1.0 } else { 0.0 }, "pixel {s}");
        }
        assert_eq!(split_b.labels, split_s.labels);
    }
    let ones = binary.train.images.iter().filter(|&&v| v == 1.0).count();
    assert!(
        ones > 0 && ones < binary.train.images.len() / 2,
        "{ones} ones"
    );
    // Binarize keeps the statistics of the scaled pixels for information.
    assert_eq!(binary.channel_mean, scaled.channel_mean);
}

#[test]
fn mnist_standardize_gives_zero_mean_unit_std_on_train() {
    let data = loaded(Dataset::Mnist, Preprocess::Standardize);
    let (mean, std) = channel_mean_std(&data.train)[0];
    assert_close("standardized MNIST mean", mean, 0.0, 1e-3);
    assert_close("standardized MNIST std", std, 1.0, 1e-3);
    assert_close(
        "recorded mean",
        f64::from(data.channel_mean[0]),
        0.1307,
        STAT_TOLERANCE,
    );
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn real_mnist_is_the_embedded_mnist() {
    let published = Catalogue::published();
    let real = data::load_raw(&common::real_data(), Dataset::Mnist, &published).unwrap();
    let embedded = data::load_raw(&common::embedded_data(), Dataset::Mnist, &published).unwrap();
    assert!(real.train == embedded.train && real.test == embedded.test);
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn cifar_has_5000_train_and_1000_test_images_per_class() {
    let data = loaded(Dataset::Cifar10, Preprocess::Scale);
    assert_split_shape(&data.train, 50_000, (3, 32, 32));
    assert_split_shape(&data.test, 10_000, (3, 32, 32));
    assert_eq!(class_counts(&data.train.labels), [5000; 10]);
    assert_eq!(class_counts(&data.test.labels), [1000; 10]);
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn cifar_has_ten_class_names_from_airplane_to_truck() {
    let data = loaded(Dataset::Cifar10, Preprocess::Scale);
    assert_eq!(data.classes.len(), 10);
    assert_eq!(data.classes.first().map(String::as_str), Some("airplane"));
    assert_eq!(data.classes.last().map(String::as_str), Some("truck"));
    assert_eq!(
        data.classes,
        data::CIFAR_CLASSES.map(str::to_string).to_vec()
    );
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn cifar_scaled_train_channels_have_the_published_mean_and_std() {
    let data = loaded(Dataset::Cifar10, Preprocess::Scale);
    let stats = channel_mean_std(&data.train);
    for (c, &(mean, std)) in stats.iter().enumerate() {
        assert_close(
            &format!("CIFAR mean of channel {c}"),
            mean,
            CIFAR_MEAN[c],
            STAT_TOLERANCE,
        );
        assert_close(
            &format!("CIFAR std of channel {c}"),
            std,
            CIFAR_STD[c],
            STAT_TOLERANCE,
        );
        assert_close("recorded mean", f64::from(data.channel_mean[c]), mean, 1e-5);
        assert_close("recorded std", f64::from(data.channel_std[c]), std, 1e-5);
    }
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn cifar_standardize_gives_zero_mean_unit_std_per_channel_on_train() {
    let data = loaded(Dataset::Cifar10, Preprocess::Standardize);
    for (c, (mean, std)) in channel_mean_std(&data.train).into_iter().enumerate() {
        assert_close(&format!("standardized channel {c} mean"), mean, 0.0, 1e-3);
        assert_close(&format!("standardized channel {c} std"), std, 1.0, 1e-3);
    }
    // The test split is standardized with the training statistics, so it is only near 0 / 1.
    for (mean, std) in channel_mean_std(&data.test) {
        assert!(
            mean.abs() < 0.05 && (std - 1.0).abs() < 0.05,
            "test {mean} {std}"
        );
    }
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn cifar_first_training_image_is_stored_channel_by_channel() {
    // Record 0 of data_batch_1.bin: label byte, then 1024 R, 1024 G, 1024 B bytes.
    let bytes =
        std::fs::read(common::real_data().join("cifar-10-batches-bin/data_batch_1.bin")).unwrap();
    let data = loaded(Dataset::Cifar10, Preprocess::Scale);
    assert_eq!(data.train.labels[0], bytes[0]);
    let image = data.train.image(0).unwrap();
    for (k, &v) in image.iter().enumerate() {
        assert_eq!(v, f32::from(bytes[1 + k]) / 255.0, "value {k}");
    }
    let last = data.train.image(49_999).unwrap();
    assert_eq!(last.len(), 3072);
    assert!(data.train.image(50_000).is_none());
}

#[test]
fn preprocess_and_dataset_read_and_write_lowercase_json() {
    assert_eq!(
        serde_json::to_string(&Preprocess::Standardize).unwrap(),
        "\"standardize\""
    );
    assert_eq!(
        serde_json::from_str::<Dataset>("\"cifar10\"").unwrap(),
        Dataset::Cifar10
    );
    assert_eq!(Preprocess::default(), Preprocess::Scale);
}

#[test]
#[ignore = "needs the real data sets: set BN_EXP_DATA_DIR"]
fn verify_on_the_real_data_exits_zero_and_lists_both_sets_valid() {
    let dir = common::real_data();
    let output = common::run_bn_exp(&["data", "verify", "--data-dir", dir.to_str().unwrap()]);
    let text = common::all_output(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("published sha256"), "{stdout}");
    assert!(common::lists_valid(&stdout, "MNIST"), "{stdout}");
    assert!(common::lists_valid(&stdout, "CIFAR-10"), "{stdout}");
    assert_eq!(common::verified_ok_lines(&stdout), 11, "{stdout}");
}
