//! Hand-written CPU kernels for what Burn's `flex` backend runs slower op by op. Each is
//! registered through Burn's backend-extension mechanism as one autodiff node with a
//! hand-written backward, and tested against its reference and PyTorch (`tests/kernels.rs`,
//! `tests/batch_norm.rs`):
//! - here: training-mode BatchNorm, and a vectorised sigmoid;
//! - [`dense`]: a whole MLP layer, `g(BN(x·W + b))`;
//! - `conv`: the CNN's 3×3 convolution, parallel over images;
//! - `pool`: 2×2 max-pooling, optionally followed by the nonlinearity;
//! - `loss`: softmax cross-entropy;
//! - `columns`: Weight Norm's w = g·v/‖v‖ and mean-only BN, per column of a matrix;
//! - `gemm`: the matrix products they share, with a spinning second thread for the big ones.
//!
//! Numbers before and after each: `docs/performance.md`.
//!
//! # References
//!
//! Beside each kernel is its reference, a generic `*_reference<B: Backend>` written with Burn's
//! backend ops (matmul, `batch_norm_train`, `conv2d`, `max_pool2d`, the activations,
//! `log_softmax`), whose doc comment gives the formula. It is the default body of the trait
//! method: `Flex` and `Autodiff<Flex>` override it with the kernel and its backward, and any other
//! backend runs the reference (under autodiff, Burn differentiates it op by op) once it is named
//! in the `#[backend_extension(...)]` lists and given an empty `impl`, as the GPU's `Cube` is
//! under the `gpu` feature (see `crate::backend`).
//! [`reference`] calls each one on tensors, for the tests.
//!
//! # BatchNorm
//!
//! Burn's generic `batch_norm_train` builds BN from small tensor ops: for `[N, C, H, W]` it
//! transposes the activation to `[C, N·H·W]` (a full copy) for each of the two reductions, and
//! its backward makes several more full-size temporaries. On the CNN that made BN cost more
//! than a convolution. This kernel reads the activation in place, channel by channel, in two
//! passes forward (mean, then the biased variance and the output) and two backward (the sums
//! ∂β = Σg and ∂γ = Σg·x̂, then ∂x), the paper's closed-form gradients:
//!
//! ```text
//! x̂   = (x − μ_B) / √(σ²_B + ε)
//! ∂γ  = Σ g·x̂          ∂β = Σ g
//! ∂x  = γ/√(σ²_B + ε) · (g − ∂β/m − x̂·∂γ/m)
//! ```
//!
//! It is registered with Burn through the backend-extension mechanism: the `Flex` impl computes,
//! and the `Autodiff<Flex>` impl records one graph node whose backward calls the kernel again.
//! Sums are accumulated in f64 so that float32 results stay within 1e-6 of PyTorch's. Inputs of
//! any float dtype are computed in their own precision (f32 and f64 are native; others go
//! through f32).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

mod columns;
mod conv;
mod dense;
mod gemm;
mod loss;
mod pool;
pub use columns::{FusedColumns, center_columns, weight_norm_columns};
pub use conv::{FusedConv, conv3x3};
pub use dense::{Act, DenseOutput, DenseSpec, FusedDense, dense};
pub use loss::{FusedCrossEntropy, cross_entropy};
pub use pool::{FusedMaxPool, max_pool2x2, max_pool2x2_then};

/// On the GPU (`Cube`, every cubecl runtime, wgpu among them), each fused op is its trait's
/// default body: the reference, with Burn's own ops, which autodiff differentiates op by op.
/// The hand-written kernels and backwards stay Flex's: they read tensors on the host.
#[cfg(feature = "gpu")]
macro_rules! references_on_the_gpu {
    ($($op:ident),*) => {$(
        impl $op for burn::backend::Cube {}
        impl<C: CheckpointStrategy> $op for Autodiff<burn::backend::Cube, C> {}
    )*};
}
#[cfg(feature = "gpu")]
references_on_the_gpu!(
    FusedBatchNorm,
    FastSigmoid,
    FusedColumns,
    FusedConv,
    FusedDense,
    FusedCrossEntropy,
    FusedMaxPool
);

/// Each fused op's reference, at tensor level: the same arguments and outputs as the fast op of
/// the same name, computed by the generic `*_reference::<B>` function that is also the trait's
/// default body. Here `B` is `Dispatch`, so the reference runs with Burn's own ops on whatever
/// device the tensors live on, and autodiff differentiates it op by op. `tests/kernels.rs` holds
/// every fast op to these.
///
/// The generic functions are called directly, not through the traits: `#[backend_extension]`
/// implements every method for `Dispatch` as routing to the tensor's backend, so
/// `<Dispatch as FusedDense>::fused_dense` reaches Flex's kernel, never the default body.
pub mod reference {
    use burn::backend::Dispatch;
    use burn::tensor::Tensor;

    use super::dense::DenseOutput;
    use super::{Act, FusedOutput};

    /// [`super::sigmoid`] through `sigmoid_reference`.
    pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        Tensor::from_dispatch(super::sigmoid_reference::<Dispatch>(x.into_dispatch()))
    }

    /// [`super::batch_norm_train_fused`] through `batch_norm_train_reference`.
    pub fn batch_norm_train<const D: usize>(
        x: Tensor<D>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        eps: f64,
    ) -> FusedOutput<D> {
        super::batch_norm_train_with(
            super::batch_norm_train_reference::<Dispatch>,
            x,
            gamma,
            beta,
            eps,
        )
    }

    /// [`super::dense`] through `dense::dense_reference`.
    pub fn dense(
        x: Tensor<2>,
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
        bn: Option<(Tensor<1>, Tensor<1>, f64)>,
        act: Act,
    ) -> DenseOutput {
        super::dense::dense_with(
            super::dense::dense_reference::<Dispatch>,
            x,
            weight,
            bias,
            bn,
            act,
        )
    }

    /// [`super::weight_norm_columns`] through `columns::weight_norm_columns_reference`.
    pub fn weight_norm_columns(v: Tensor<2>, g: Tensor<1>) -> Tensor<2> {
        super::columns::weight_norm_columns_reference_tensors(v, g)
    }

    /// [`super::center_columns`] through `columns::center_columns_reference`.
    pub fn center_columns(x: Tensor<2>, beta: Tensor<1>) -> (Tensor<2>, Tensor<1>) {
        super::columns::center_columns_reference_tensors(x, beta)
    }

    /// [`super::conv3x3`] through `conv::conv3x3_reference`.
    pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        super::conv::conv3x3_reference_tensors(x, weight, bias)
    }

    /// [`super::max_pool2x2_then`] through `pool::max_pool2x2_reference`.
    pub fn max_pool2x2_then(x: Tensor<4>, act: Act) -> Tensor<4> {
        Tensor::from_dispatch(super::pool::max_pool2x2_reference::<Dispatch>(
            x.into_dispatch(),
            act,
        ))
    }

    /// [`super::cross_entropy`] through `loss::cross_entropy_reference`.
    pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        Tensor::from_dispatch(super::loss::cross_entropy_reference::<Dispatch>(
            logits.into_dispatch(),
            targets.into_dispatch(),
        ))
    }
}

/// Fused BN training forward: returns (output, batch mean, biased batch variance).
#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedBatchNorm: Backend {
    /// This default body is `batch_norm_train_reference`; Flex overrides it with the kernel.
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        batch_norm_train_reference::<Self>(x, gamma, beta, eps)
    }
}

/// The reference for [`FusedBatchNorm`]: Burn's own training-mode BN (`ModuleOps::
/// batch_norm_train`, which autodiff records as one node with Burn's closed-form backward).
///
/// ```text
/// μ_B  = mean of x over every axis but 1 (N and the positions)
/// σ²_B = mean of (x − μ_B)² over the same axes (biased)
/// y    = γ · (x − μ_B) / √(σ²_B + ε) + β
/// ```
///
/// Returns (y, μ_B, σ²_B), the statistics detached as the fast op's are: they feed only the
/// running averages, and Burn's `ModuleOps` does not promise that on every backend.
pub(crate) fn batch_norm_train_reference<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let out = B::batch_norm_train(x, gamma, beta, eps);
    (
        out.output,
        B::float_detach(out.mean),
        B::float_detach(out.variance),
    )
}

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
pub(crate) fn sigmoid_in_place_f32(v: &mut [f32]) {
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

fn sigmoid_f32(xs: &[f32]) -> Vec<f32> {
    let mut v = xs.to_vec();
    sigmoid_in_place_f32(&mut v);
    v
}

fn flex_sigmoid(x: &FlexTensor) -> FlexTensor {
    let dims = x.layout().shape().to_vec();
    match x.dtype() {
        DType::F32 => tensor_from(sigmoid_f32(&values::<f32>(x)), dims),
        DType::F64 => {
            let y: Vec<f64> = values::<f64>(x)
                .iter()
                .map(|&v| 1.0 / (1.0 + (-v).exp()))
                .collect();
            tensor_from(y, dims)
        }
        other => as_dtype(flex_sigmoid(&as_f32(x)), other),
    }
}

impl FastSigmoid for Flex {
    fn fast_sigmoid(x: FlexTensor) -> FlexTensor {
        flex_sigmoid(&x)
    }
}

/// The backward of an op with one differentiable input, whose gradient is `grad(state, ∂out)`.
/// One type for the sigmoid, the max-pool and the loss, whose nodes differ only in that function.
struct OneInputBackward<S> {
    grad: fn(S, FlexTensor) -> FlexTensor,
}

impl<S> OneInputBackward<S> {
    fn new(grad: fn(S, FlexTensor) -> FlexTensor) -> Self {
        Self { grad }
    }
}

impl<S> std::fmt::Debug for OneInputBackward<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneInputBackward")
    }
}

impl<S: Clone + Send + std::fmt::Debug + 'static> Backward<Flex, 1> for OneInputBackward<S> {
    type State = S;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, (self.grad)(ops.state, g));
        }
    }
}

impl<C: CheckpointStrategy> FastSigmoid for Autodiff<Flex, C> {
    fn fast_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = flex_sigmoid(x.primitive());
        match OneInputBackward::new(|y: FlexTensor, g| Flex::sigmoid_backward(y, g))
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// Output and statistics of [`batch_norm_train_fused`].
pub struct FusedOutput<const D: usize> {
    pub output: Tensor<D>,
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
}

/// Training-mode BN of `x` (`[N, C, ...]`) with per-channel γ and β, as one op.
pub fn batch_norm_train_fused<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> FusedOutput<D> {
    batch_norm_train_with(
        <Dispatch as FusedBatchNorm>::fused_batch_norm_train,
        x,
        gamma,
        beta,
        eps,
    )
}

/// The signature of [`FusedBatchNorm::fused_batch_norm_train`] on `Dispatch`.
type BatchNormOp = fn(
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    f64,
) -> (
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
);

/// Calls `op` (the fast op or its reference) on tensors, and names its outputs.
fn batch_norm_train_with<const D: usize>(
    op: BatchNormOp,
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> FusedOutput<D> {
    let (output, mean, variance) = op(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    );
    FusedOutput {
        output: Tensor::from_dispatch(output),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(variance),
    }
}

/// A float the kernels run in: f32 in training, f64 in the reference tests.
trait Real:
    Copy
    + bytemuck::Pod
    + burn::tensor::Element
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + dense::SigmoidInPlace
    + Send
    + Sync
    + 'static
{
    const ZERO: Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// (N, C, inner) of a `[N, C, ...]` shape.
fn split_shape(dims: &[usize]) -> (usize, usize, usize) {
    (dims[0], dims[1], dims[2..].iter().product())
}

/// A contiguous copy (if needed) and its values as `T`.
fn values<T: Real>(t: &FlexTensor) -> std::borrow::Cow<'_, [T]> {
    match t.as_slice::<T>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<T>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

fn tensor_from<T: Real>(v: Vec<T>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// Per-channel sums of `f(x, ...)` over N and the inner positions. For `[N, C]` the rows are
/// added as vectors (channels contiguous, so the loop vectorises); for `[N, C, H, W]` each
/// channel's contiguous H·W run is summed in `T` and the runs are accumulated in f64.
fn channel_sums<T: Real>(
    n: usize,
    c: usize,
    inner: usize,
    f: impl Fn(usize, usize) -> T + Sync, // (flat index, channel) -> term
) -> Vec<f64> {
    if inner == 1 {
        let mut acc = vec![T::ZERO; c];
        for i in 0..n {
            let base = i * c;
            for (ch, a) in acc.iter_mut().enumerate() {
                *a += f(base + ch, ch);
            }
        }
        acc.into_iter().map(Real::to_f64).collect()
    } else {
        // One task per channel (each sums its runs in the same order as a single thread would,
        // so the result does not depend on the thread count).
        let channel = |ch: usize| {
            let mut sum = 0.0f64;
            for i in 0..n {
                let start = (i * c + ch) * inner;
                let mut s = T::ZERO;
                for k in start..start + inner {
                    s += f(k, ch);
                }
                sum += s.to_f64();
            }
            sum
        };
        if n * c * inner >= PARALLEL_MIN_ELEMENTS {
            (0..c).into_par_iter().map(channel).collect()
        } else {
            (0..c).map(channel).collect()
        }
    }
}

/// Conv-layer BN passes over at least this many values are spread over rayon's threads (the
/// CIFAR CNN's are 10⁶ and 4·10⁶); the MLP's `[60, 100]` stay on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Per-channel coefficients of [`per_channel_affine2`].
struct Coefficients<T> {
    a: Vec<T>,
    b: Vec<T>,
    mu: Vec<T>,
    d: Vec<T>,
}

/// out[k] = a[ch]·u[k] + b[ch]·(v[k] − μ[ch]) + d[ch] for every element k of channel ch: the one
/// loop both passes need (forward: a = 0, b = γ/σ, v = x, d = β; backward: the expanded ∂x).
/// Centring v before scaling keeps float32 exact where σ is tiny next to μ (a constant input).
fn per_channel_affine2<T: Real>(
    u: &[T],
    v: &[T],
    coef: &Coefficients<T>,
    n: usize,
    c: usize,
    inner: usize,
) -> Vec<T> {
    let Coefficients { a, b, mu, d } = coef;
    let mut out = vec![T::ZERO; u.len()];
    if inner == 1 {
        for i in 0..n {
            let r = i * c..(i + 1) * c;
            let (o, u, v) = (&mut out[r.clone()], &u[r.clone()], &v[r]);
            for ch in 0..c {
                o[ch] = a[ch] * u[ch] + b[ch] * (v[ch] - mu[ch]) + d[ch];
            }
        }
    } else {
        // One run of `inner` values per (image, channel), each independent of the others.
        let run = |(idx, o): (usize, &mut [T])| {
            let ch = idx % c;
            let r = idx * inner..(idx + 1) * inner;
            let (u, v) = (&u[r.clone()], &v[r]);
            let (a, b, mu, d) = (a[ch], b[ch], mu[ch], d[ch]);
            for k in 0..inner {
                o[k] = a * u[k] + b * (v[k] - mu) + d;
            }
        };
        if n * c * inner >= PARALLEL_MIN_ELEMENTS {
            out.par_chunks_mut(inner).enumerate().for_each(run);
        } else {
            out.chunks_mut(inner).enumerate().for_each(run);
        }
    }
    out
}

/// Forward: (y, mean, biased var) as flat vectors.
fn forward<T: Real>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    dims: &[usize],
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (n, c, inner) = split_shape(dims);
    let m = (n * inner) as f64;
    let mean: Vec<f64> = channel_sums(n, c, inner, |k, _| x[k])
        .into_iter()
        .map(|s| s / m)
        .collect();
    let mean_t: Vec<T> = mean.iter().map(|&v| T::from_f64(v)).collect();
    // Two passes: the variance of (x − μ) loses nothing to cancellation.
    let var: Vec<f64> = channel_sums(n, c, inner, |k, ch| {
        let d = x[k] - mean_t[ch];
        d * d
    })
    .into_iter()
    .map(|s| s / m)
    .collect();
    // y = γ/√(σ²+ε)·(x − μ) + β
    let coef = Coefficients {
        a: vec![T::ZERO; c],
        b: (0..c)
            .map(|ch| T::from_f64(gamma[ch].to_f64() / (var[ch] + eps).sqrt()))
            .collect(),
        mu: mean_t,
        d: beta.to_vec(),
    };
    let y = per_channel_affine2(x, x, &coef, n, c, inner);
    (y, coef.mu, var.into_iter().map(T::from_f64).collect())
}

/// Backward: (∂x, ∂γ, ∂β) from the upstream gradient `g`.
fn backward<T: Real>(
    x: &[T],
    g: &[T],
    gamma: &[T],
    mean: &[T],
    var: &[T],
    dims: &[usize],
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (n, c, inner) = split_shape(dims);
    let m = (n * inner) as f64;
    let inv_std: Vec<f64> = var
        .iter()
        .map(|v| 1.0 / (v.to_f64() + eps).sqrt())
        .collect();
    let dbeta = channel_sums(n, c, inner, |k, _| g[k]);
    // ∂γ = Σ g·x̂ = Σ g·(x − μ) / σ
    let dgamma: Vec<f64> = channel_sums(n, c, inner, |k, ch| g[k] * (x[k] - mean[ch]))
        .into_iter()
        .zip(&inv_std)
        .map(|(s, is)| s * is)
        .collect();
    // ∂x = k·(g − ∂β/m − x̂·∂γ/m) with k = γ/σ and x̂ = (x − μ)/σ,
    // i.e. k·g + (−k·∂γ/(m·σ))·(x − μ) + (−k·∂β/m).
    let k: Vec<f64> = (0..c).map(|ch| gamma[ch].to_f64() * inv_std[ch]).collect();
    let coef = Coefficients {
        a: k.iter().map(|&k| T::from_f64(k)).collect(),
        b: (0..c)
            .map(|ch| T::from_f64(-k[ch] * dgamma[ch] / m * inv_std[ch]))
            .collect(),
        mu: mean.to_vec(),
        d: (0..c)
            .map(|ch| T::from_f64(-k[ch] * dbeta[ch] / m))
            .collect(),
    };
    let dx = per_channel_affine2(g, x, &coef, n, c, inner);
    (
        dx,
        dgamma.into_iter().map(T::from_f64).collect(),
        dbeta.into_iter().map(T::from_f64).collect(),
    )
}

fn flex_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dims = x.layout().shape().to_vec();
    macro_rules! run {
        ($t:ty) => {
            full_and_per_channel(
                forward::<$t>(&values(x), &values(gamma), &values(beta), &dims, eps),
                &dims,
            )
        };
    }
    match x.dtype() {
        DType::F64 => run!(f64),
        DType::F32 => run!(f32),
        other => {
            let (y, mean, var) = flex_forward(&as_f32(x), &as_f32(gamma), &as_f32(beta), eps);
            (
                as_dtype(y, other),
                as_dtype(mean, other),
                as_dtype(var, other),
            )
        }
    }
}

/// Tensors of a kernel's (full-shape, per-channel, per-channel) outputs: (y, μ, σ²) forward,
/// (∂x, ∂γ, ∂β) backward.
fn full_and_per_channel<T: Real>(
    (full, a, b): (Vec<T>, Vec<T>, Vec<T>),
    dims: &[usize],
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let c = vec![dims[1]];
    (
        tensor_from(full, dims.to_vec()),
        tensor_from(a, c.clone()),
        tensor_from(b, c),
    )
}

/// A float32 copy, for dtypes the kernels do not run natively (f16, bf16).
fn as_f32(t: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(t.clone().into_data().convert_dtype(DType::F32))
}

/// `t` converted back to `dtype`.
fn as_dtype(t: FlexTensor, dtype: DType) -> FlexTensor {
    FlexTensor::from_data(t.into_data().convert_dtype(dtype))
}

fn flex_backward(
    x: &FlexTensor,
    g: &FlexTensor,
    gamma: &FlexTensor,
    mean: &FlexTensor,
    var: &FlexTensor,
    eps: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dims = x.layout().shape().to_vec();
    macro_rules! run {
        ($t:ty) => {
            full_and_per_channel(
                backward::<$t>(
                    &values(x),
                    &values(g),
                    &values(gamma),
                    &values(mean),
                    &values(var),
                    &dims,
                    eps,
                ),
                &dims,
            )
        };
    }
    match x.dtype() {
        DType::F64 => run!(f64),
        DType::F32 => run!(f32),
        other => {
            let (dx, dgamma, dbeta) = flex_backward(
                &as_f32(x),
                &as_f32(g),
                &as_f32(gamma),
                &as_f32(mean),
                &as_f32(var),
                eps,
            );
            (
                as_dtype(dx, other),
                as_dtype(dgamma, other),
                as_dtype(dbeta, other),
            )
        }
    }
}

impl FusedBatchNorm for Flex {
    fn fused_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex_forward(&x, &gamma, &beta, eps)
    }
}

/// The autodiff node: its state is what the backward needs (input, γ, batch mean and variance).
#[derive(Debug)]
struct FusedBatchNormBackward {
    eps: f64,
}

impl Backward<Flex, 3> for FusedBatchNormBackward {
    type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, gamma, mean, var) = ops.state;
        let (dx, dgamma, dbeta) = flex_backward(&x, &g, &gamma, &mean, &var, self.eps);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, dbeta);
        }
    }
}

impl<C: CheckpointStrategy> FusedBatchNorm for Autodiff<Flex, C> {
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (y, mean, var) = flex_forward(x.primitive(), gamma.primitive(), beta.primitive(), eps);
        // The statistics leave the graph as constants (they feed only the running averages).
        let stats = (
            FloatTensor::<Self>::new(mean.clone()),
            FloatTensor::<Self>::new(var.clone()),
        );
        let prep = FusedBatchNormBackward { eps }
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let output = match prep {
            OpsKind::Tracked(prep) => {
                let state = (x.into_primitive(), gamma.into_primitive(), mean, var);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (output, stats.0, stats.1)
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
        let fast = sigmoid_f32(&xs);
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
