//! The one place that chooses Burn's backend.
//!
//! bn-exp runs on Burn's `flex` backend: pure Rust, builds offline, and measured here at about
//! 1.3 ms per step of the paper's MLP and 0.22 s per step of the CIFAR CNN, against 1.5 ms and
//! 7 s for `ndarray`, whose convolution is unusable for the CNN (see `docs/performance.md`).
//! A GPU backend would be added behind a cargo feature, here and nowhere else.

use burn::tensor::Device;

/// Name recorded in every run's summary.
pub const BACKEND_NAME: &str = "flex";

/// The device for inference and data (no autodiff).
pub fn device() -> Device {
    Device::flex()
}

/// The device for training: the same backend with autodiff on.
pub fn train_device() -> Device {
    device().autodiff()
}

/// Threads rayon may use in this process (flex parallelises only large ops).
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
