//! Helpers of the float64 numeric tests (`tests/kernels.rs`, `tests/fast_paths.rs`).

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use burn::tensor::{DType, Tensor};

/// Deterministic values in [-1, 1) from a seed (a simple LCG; no test depends on their law).
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor's values as f64, row-major.
pub fn flat<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert_dtype(DType::F64)
        .try_to_vec::<f64>()
        .expect("f64 values")
}
