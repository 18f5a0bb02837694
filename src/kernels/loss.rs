//! Softmax cross-entropy with logits as one op with a closed-form backward.
//!
//! ```text
//! ℓ = −(1/N) Σ_n Σ_c y[n,c] · log softmax(z[n])_c          z: logits [N, C], y: targets [N, C]
//! ∂ℓ/∂z[n,c] = (1/N) · (softmax(z[n])_c · Σ_c' y[n,c'] − y[n,c])
//! ```
//!
//! Why: Burn's `cross_entropy_with_logits` is a log-softmax (max, subtract, exp, sum, log) and a
//! product and two means, each an autodiff node with its own buffers; for the paper's MLP that
//! was some 5% of a step. Here the forward makes one pass per row (max-shifted, so it cannot
//! overflow) and keeps the softmax, from which the backward is one more pass.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, Scalar, TensorMetadata, backend_extension};
use burn::tensor::Tensor;

use super::common::{OneInputBackward, Real, float_dispatch, tensor_from, values};

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedCrossEntropy: Backend {
    /// Mean cross-entropy `[1]` of logits `[N, C]` against targets `[N, C]`.
    ///
    /// This default body is `cross_entropy_reference`; Flex overrides it with the kernel below.
    fn cross_entropy(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        cross_entropy_reference::<Self>(logits, targets)
    }
}

/// The reference for [`FusedCrossEntropy`], from Burn's ops:
///
/// ```text
/// ℓ = −(1/N) Σ_n Σ_c y[n,c] · log_softmax(z)[n,c]        log_softmax: Burn's, along dim 1
/// ```
///
/// The targets are detached: the fast op gives them no gradient, and neither does this one.
pub(crate) fn cross_entropy_reference<B: Backend>(
    logits: FloatTensor<B>,
    targets: FloatTensor<B>,
) -> FloatTensor<B> {
    let (d, t) = (logits.shape(), targets.shape());
    assert!(
        d.num_dims() == 2 && d == t,
        "cross_entropy: logits {d:?} and targets {t:?} must both be [N, C]"
    );
    let n = d[0] as f64;
    let log_p = B::log_softmax(logits, 1);
    let total = B::float_sum(B::float_mul(B::float_detach(targets), log_p));
    B::float_mul_scalar(total, Scalar::Float(-1.0 / n))
}

/// Mean softmax cross-entropy of `logits` against (one-hot or soft) `targets`, shape `[1]`.
/// Gradients flow to the logits only. Panics if the shapes differ.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedCrossEntropy>::cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// (mean loss, softmax) of row-major `[n, c]` logits and targets.
fn forward<T: Real>(z: &[T], y: &[T], n: usize, c: usize) -> (T, Vec<T>) {
    let mut softmax = vec![T::ZERO; n * c];
    let mut total = 0.0f64;
    for ((zr, yr), pr) in z.chunks(c).zip(y.chunks(c)).zip(softmax.chunks_mut(c)) {
        let max = zr
            .iter()
            .map(|v| v.to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0f64;
        for (p, &v) in pr.iter_mut().zip(zr) {
            let e = (v.to_f64() - max).exp();
            *p = T::from_f64(e);
            sum += e;
        }
        let log_sum = sum.ln();
        for (p, (&v, &t)) in pr.iter_mut().zip(zr.iter().zip(yr)) {
            // log softmax = z − max − log Σ e^(z − max)
            total -= t.to_f64() * (v.to_f64() - max - log_sum);
            *p = T::from_f64(p.to_f64() / sum);
        }
    }
    (T::from_f64(total / n as f64), softmax)
}

/// ∂ℓ/∂z for upstream gradient `g` (a scalar).
fn backward<T: Real>(softmax: &[T], y: &[T], g: f64, n: usize, c: usize) -> Vec<T> {
    let scale = g / n as f64;
    let mut dz = vec![T::ZERO; n * c];
    for ((dr, pr), yr) in dz.chunks_mut(c).zip(softmax.chunks(c)).zip(y.chunks(c)) {
        let mass: f64 = yr.iter().map(|t| t.to_f64()).sum();
        for (d, (&p, &t)) in dr.iter_mut().zip(pr.iter().zip(yr)) {
            *d = T::from_f64(scale * (p.to_f64() * mass - t.to_f64()));
        }
    }
    dz
}

fn dims_of(logits: &FlexTensor, targets: &FlexTensor) -> (usize, usize) {
    let d = logits.layout().shape().to_vec();
    let t = targets.layout().shape().to_vec();
    assert!(
        d.len() == 2 && d == t,
        "cross_entropy: logits {d:?} and targets {t:?} must both be [N, C]"
    );
    (d[0], d[1])
}

/// (loss `[1]`, softmax `[N, C]`).
fn flex_forward(logits: &FlexTensor, targets: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (n, c) = dims_of(logits, targets);
    float_dispatch!(logits.dtype(), |T| {
        let (loss, p) = forward::<T>(&values(logits), &values(targets), n, c);
        (tensor_from(vec![loss], vec![1]), tensor_from(p, vec![n, c]))
    })
}

fn flex_backward(softmax: &FlexTensor, targets: &FlexTensor, g: &FlexTensor) -> FlexTensor {
    let (n, c) = dims_of(softmax, targets);
    float_dispatch!(softmax.dtype(), |T| {
        let g = values::<T>(g)[0].to_f64();
        tensor_from(
            backward::<T>(&values(softmax), &values(targets), g, n, c),
            vec![n, c],
        )
    })
}

impl FusedCrossEntropy for Flex {
    fn cross_entropy(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        flex_forward(&logits, &targets).0
    }
}

impl<C: CheckpointStrategy> FusedCrossEntropy for Autodiff<Flex, C> {
    fn cross_entropy(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        let (loss, softmax) = flex_forward(logits.primitive(), targets.primitive());
        // State: the softmax and the targets.
        let grad =
            |(softmax, targets): (FlexTensor, FlexTensor), g| flex_backward(&softmax, &targets, &g);
        OneInputBackward::new(grad).record::<C>(&logits, (softmax, targets.into_primitive()), loss)
    }
}
