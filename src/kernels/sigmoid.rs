//! The logistic sigmoid σ(x) = 1/(1 + e^(−x)) as one op whose float32 loop vectorises, and
//! [`SigmoidInPlace`], the same loop for the dense layer and the max-pool's nonlinearity.
//!
//! Why: Flex's own sigmoid calls libm's scalar `expf` behind a branch per element, which measured
//! 12% of an MLP step. Here e^(−|x|) is a branch-free polynomial the compiler turns into AVX code,
//! compiled for AVX-512 and AVX2 and chosen at run time (`docs/performance.md`).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

use super::common::{OneInputBackward, float_dispatch, tensor_from, values};

/// Logistic sigmoid whose float32 forward vectorises (see [`sigmoid`]).
#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FastSigmoid: Backend {
    /// This default body is `sigmoid_reference`; Flex overrides it with the kernel.
    fn fast_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        sigmoid_reference::<Self>(x)
    }
}

/// The reference for [`FastSigmoid`]: Burn's own σ(x) = 1/(1 + e^(−x)) (`ActivationOps::
/// sigmoid`; its backward is σ(1 − σ)). Burn's trait default computes it in float32 whatever
/// the input's dtype; Flex's own keeps float64, which the float64 tests rely on.
pub(crate) fn sigmoid_reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::sigmoid(x)
}

/// σ(x) = 1/(1 + e^(−x)), elementwise. Flex's own sigmoid calls libm's scalar `expf` on a branch
/// per element, which measured 12% of an MLP step; this one evaluates e^(−|x|) with a
/// branch-free polynomial (Cephes' expf: relative error below 2e-7, about 1 ulp) that the
/// compiler turns into AVX code. Its backward is σ'(x) = σ(x)·(1 − σ(x)), from the saved output.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastSigmoid>::fast_sigmoid(x.into_dispatch()))
}

/// e^(−|x|) in float32, branch-free: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial
/// (the Cephes coefficients), 2^n by building the float's exponent bits. No float-to-int cast
/// (Rust's saturating `as i32` would not vectorise): adding 1.5·2²³ leaves n in the low mantissa
/// bits, read back as an integer.
#[inline(always)]
fn exp_neg_abs(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting it rounds to an integer
    let a = (-x.abs()).max(-87.0); // e^-87 is near f32's smallest normal
    let t = a * LOG2E + ROUND;
    let n = t - ROUND;
    let r = a - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let er = p * r * r + r + 1.0;
    // n ∈ [−126, 0]: t's bits are ROUND's plus n, so the biased exponent is that difference + 127.
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    er * f32::from_bits(biased << 23)
}

/// σ in place, float32. The loop is compiled three times (AVX-512, AVX2 + FMA, baseline) and
/// the widest the CPU has is chosen at run time: bn-exp is built for any x86-64, whose baseline
/// (SSE2) runs this loop at a quarter of AVX-512's width.
fn sigmoid_in_place_f32(v: &mut [f32]) {
    #[inline(always)]
    fn body(v: &mut [f32]) {
        for x in v.iter_mut() {
            let e = exp_neg_abs(*x);
            let s = 1.0 / (1.0 + e);
            *x = if *x >= 0.0 { s } else { e * s };
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(v: &mut [f32]) {
            body(v)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(v: &mut [f32]) {
            body(v)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(v) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { avx2(v) };
        }
    }
    body(v)
}

/// σ in place, for each float the kernels run in: float32 through the vectorised loop above,
/// float64 by the formula (the float64 tests hold everything to 1e-10, which 2e-7 would miss).
pub(super) trait SigmoidInPlace: Sized {
    fn sigmoid_in_place(v: &mut [Self]);
}

impl SigmoidInPlace for f32 {
    fn sigmoid_in_place(v: &mut [f32]) {
        sigmoid_in_place_f32(v)
    }
}

impl SigmoidInPlace for f64 {
    fn sigmoid_in_place(v: &mut [f64]) {
        for x in v.iter_mut() {
            *x = 1.0 / (1.0 + (-*x).exp());
        }
    }
}

fn flex_sigmoid(x: &FlexTensor) -> FlexTensor {
    let dims = x.layout().shape().to_vec();
    float_dispatch!(x.dtype(), |T| {
        let mut v = values::<T>(x).into_owned();
        T::sigmoid_in_place(&mut v);
        tensor_from(v, dims)
    })
}

impl FastSigmoid for Flex {
    fn fast_sigmoid(x: FlexTensor) -> FlexTensor {
        flex_sigmoid(&x)
    }
}

impl<C: CheckpointStrategy> FastSigmoid for Autodiff<Flex, C> {
    fn fast_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = flex_sigmoid(x.primitive());
        OneInputBackward::new(|y: FlexTensor, g| Flex::sigmoid_backward(y, g)).record::<C>(
            &x,
            y.clone(),
            y,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn fast_sigmoid_is_within_2e7_relative_of_the_float64_formula() {
        // Every 1/64 between −100 and 100, plus the extremes.
        let xs: Vec<f32> = (-6400..=6400)
            .map(|i| i as f32 / 64.0)
            .chain([-1e30, -88.0, 88.0, 1e30, 0.0, -0.0])
            .collect();
        let mut fast = xs.clone();
        sigmoid_in_place_f32(&mut fast);
        for (&x, &y) in xs.iter().zip(&fast) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let rel = (y as f64 - exact).abs() / exact.max(f64::MIN_POSITIVE);
            // Below e^-87 the result is a denormal or zero; judge it absolutely there.
            let ok = rel < 2e-7 || (exact < 1e-37 && (y as f64 - exact).abs() < 1e-37);
            assert!(
                ok,
                "sigmoid({x}) = {y}, exact {exact}, relative error {rel:.1e}"
            );
        }
    }

    #[test]
    fn fast_sigmoid_gradient_is_sigma_times_one_minus_sigma() {
        let device = Device::flex().autodiff();
        let x =
            Tensor::<2>::from_floats([[-3.0, -0.5, 0.0], [0.25, 2.0, 9.0]], &device).require_grad();
        let y = sigmoid(x.clone());
        let grads = (y.clone() * y.clone()).sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        let yv: Vec<f32> = y.into_data().try_to_vec().unwrap();
        for (gi, yi) in g.iter().zip(&yv) {
            // d/dx y² = 2y·y(1 − y)
            let want = 2.0 * yi * yi * (1.0 - yi);
            assert!((gi - want).abs() < 1e-7, "{gi} vs {want}");
        }
    }
}
