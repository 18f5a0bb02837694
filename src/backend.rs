//! The one place that chooses Burn's backend.
//!
//! bn-exp runs on Burn's `flex` backend: pure Rust, builds offline, and measured here at about
//! 1.3 ms per step of the paper's MLP and 0.22 s per step of the CIFAR CNN, against 1.5 ms and
//! 7 s for `ndarray`, whose convolution is unusable for the CNN (see `docs/performance.md`).
//!
//! # Another backend (a GPU)
//!
//! The model code is backend-free, and each fused kernel in `crate::kernels` has a default trait
//! body written with Burn's own ops (its reference), so another backend computes the same
//! functions without new kernels; only Flex has the fast ones. Choosing it takes:
//! - a cargo feature that enables Burn's backend (e.g. `gpu = ["burn/cuda"]`), and this module
//!   choosing its device and [`BACKEND_NAME`] under that feature;
//! - in `src/kernels.rs` and `src/kernels/*.rs`, that backend's selector added to each
//!   `#[backend_extension(Autodiff, Flex)]` list (e.g. `Cube: cfg(feature = "gpu")`; an unlisted
//!   backend panics at the first fused op), and for each of the six traits two empty impls under
//!   the same cfg, `impl FusedDense for Cube {}` and
//!   `impl<C: CheckpointStrategy> FusedDense for Autodiff<Cube, C> {}`, which take the reference
//!   bodies. The hand-written `Autodiff<Flex, C>` impls stay Flex-only: their backward reads
//!   Flex tensors on the host.
//!
//! `tests/kernels.rs` checks each reference against its Flex kernel.

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
