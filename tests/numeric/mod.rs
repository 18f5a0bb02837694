//! Helpers of the numeric tests (`batch_norm`, `norm_layers`, `kernels`, `fast_paths`,
//! `measures`, and the GPU harness): the device and tensors they compute on, deterministic
//! values, central differences, and the tolerances of their comparisons.

use burn::tensor::{DType, Device, Element, Tensor, TensorCreationOptions, TensorData};

/// Float64 against a float64 reference (PyTorch's vectors, a reference body, a closed form),
/// relative to the largest reference value. Float64 keeps about 16 significant digits; this asks
/// for 10 of them, leaving the rest to the two sides summing in different orders.
pub const F64_TOL: f64 = 1e-10;

/// Float32 against a float64 reference, relative to the largest reference value. Float32 keeps
/// about 7 significant digits (each operation rounds to 2⁻²⁴ ≈ 6e-8 relative); this asks for 5
/// of them, leaving the rest to the roundings a layer accumulates in its sums over the batch,
/// its division by σ and the gradients through them.
pub const F32_TOL: f64 = 1e-5;

/// A float64 gradient against [`central_differences`] ([`assert_gradient`]): with h = 1e-6 these
/// are good to about 1e-8 (truncation of order h², rounding of order 1e-16/h); 1e-6 leaves room
/// for cancellation.
pub const FD_TOL: f64 = 1e-6;

/// The device the CPU tests compute on: Burn's Flex backend, with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}

/// A tensor of `values` (row-major) with `shape`, stored as `dtype` on `device`.
pub fn tensor<const D: usize, E: Element>(
    values: &[E],
    shape: [usize; D],
    dtype: DType,
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), shape),
        TensorCreationOptions::new(device.clone()).with_dtype(dtype),
    )
}

/// A float64 tensor on [`device`] that takes no gradient: what most numeric tests compute on.
pub fn f64_tensor<const D: usize>(values: &[f64], shape: [usize; D]) -> Tensor<D> {
    tensor(values, shape, DType::F64, &device())
}

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

/// `analytic`, the gradient autodiff gave of `loss` at `x`, within [`FD_TOL`] of its
/// [`central_differences`], relative to their largest value.
pub fn assert_gradient(what: &str, analytic: &[f64], x: &[f64], loss: impl Fn(&[f64]) -> f64) {
    assert_close_within(what, analytic, &central_differences(x, loss), FD_TOL);
}

/// ∂loss/∂x_i for every i by central differences with step 1e-6.
fn central_differences(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let mut plus = x.to_vec();
            let mut minus = x.to_vec();
            plus[i] += h;
            minus[i] -= h;
            (loss(&plus) - loss(&minus)) / (2.0 * h)
        })
        .collect()
}

/// `got` within [`F64_TOL`] of the reference `want`, element by element, relative to the
/// largest reference value (at least 1e-3, so that near-zero references do not demand exact
/// zeros).
pub fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_close_within(what, got, want, F64_TOL);
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
