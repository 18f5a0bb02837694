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

/// The tolerance of the float64 comparisons: relative to the largest reference value (the two
/// sides sum in different orders, so they agree to rounding, far below this).
pub const TOL: f64 = 1e-10;

/// `got` within [`TOL`] of the reference `want`, element by element, relative to the largest
/// reference value (at least 1e-3, so that near-zero references do not demand exact zeros).
pub fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_close_within(what, got, want, TOL);
}

/// `got` within `tol` of `want`, relative to the largest reference value (at least 1e-3).
pub fn assert_close_within(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    assert_close_at_scale(what, got, want, tol, scale);
}

/// `got` within `tol·scale` of `want`, element by element. A caller names its own scale where
/// the reference is near zero by cancellation (∂x of BN with m = 2, of Layer Norm over two
/// features): then the scale is that of the terms that cancel, not of the tiny result.
pub fn assert_close_at_scale(what: &str, got: &[f64], want: &[f64], tol: f64, scale: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / scale;
        assert!(
            err <= tol,
            "{what}[{i}]: got {g}, reference {w} (relative error {err:.2e} > {tol:.0e})"
        );
    }
}
