//! Hand-written CPU kernels for what Burn's `flex` backend runs slower op by op. Each is
//! registered through Burn's backend-extension mechanism as one autodiff node with a
//! hand-written backward, and tested against its reference and PyTorch (`tests/kernels.rs`,
//! `tests/batch_norm.rs`). One file each:
//! - `batch_norm`: training-mode BatchNorm (Algorithm 1), which Group and Layer Norm run on too;
//! - `sigmoid`: a sigmoid whose float32 loop vectorises;
//! - `concat`: two maps joined along the channels, each through its nonlinearity (the
//!   Inception's modules);
//! - [`dense`]: a whole MLP layer, `g(BN(x·W + b))`;
//! - `conv`: the 3×3 (stride 1, padding 1; stride 2, no padding) and 1×1 convolutions of the
//!   CNN and the Inception, parallel over images;
//! - `pool`: 2×2 max-pooling, optionally followed by the nonlinearity, and 3×3 stride-2
//!   max-pooling;
//! - `loss`: softmax cross-entropy;
//! - `columns`: Weight Norm's w = g·v/‖v‖ and mean-only BN, per column of a matrix;
//! - `gemm`: the matrix products they share, with a spinning second thread for the big ones;
//! - `common`: what they all share (the floats they compute in, the one dispatch on a tensor's
//!   dtype, `simd_fn!`, the one dispatch on the CPU's vector width, reading and making Flex
//!   tensors, the autodiff nodes' plumbing). It imports none of the others, and none of them
//!   imports anything from this file.
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
//! Inputs of any float dtype are computed in their own precision: f32 and f64 natively, others
//! (f16, bf16) through f32 (`common::float_dispatch!`).

#[cfg(feature = "gpu")]
use burn::backend::{Cube, autodiff::Autodiff, autodiff::checkpoint::strategy::CheckpointStrategy};

mod batch_norm;
mod columns;
mod common;
mod concat;
mod conv;
mod dense;
mod direct;
mod gemm;
mod loss;
mod pool;
mod sigmoid;
pub use batch_norm::{FusedBatchNorm, FusedOutput, batch_norm_train_fused};
pub use columns::{FusedColumns, center_columns, weight_norm_columns};
pub use common::{SIMD_CAP_VAR, SimdLevel, detected_simd_level};
pub use concat::{FusedConcat, concat_channels};
pub use conv::{FusedConv, conv1x1, conv3x3, conv3x3_stride2};
pub use dense::{Act, DenseOutput, DenseSpec, FusedDense, dense};
pub use loss::{FusedCrossEntropy, cross_entropy};
pub use pool::{FusedMaxPool, max_pool2x2, max_pool2x2_then, max_pool3x3_stride2};
pub use sigmoid::{FastSigmoid, sigmoid};

/// On the GPU (`Cube`, every cubecl runtime, wgpu among them), each fused op is its trait's
/// default body: the reference, with Burn's own ops, which autodiff differentiates op by op.
/// The hand-written kernels and backwards stay Flex's: they read tensors on the host.
#[cfg(feature = "gpu")]
macro_rules! references_on_the_gpu {
    ($($op:ident),*) => {$(
        impl $op for Cube {}
        impl<C: CheckpointStrategy> $op for Autodiff<Cube, C> {}
    )*};
}
#[cfg(feature = "gpu")]
references_on_the_gpu!(
    FusedBatchNorm,
    FastSigmoid,
    FusedColumns,
    FusedConcat,
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

    use super::batch_norm::{batch_norm_train_reference, batch_norm_train_with};
    use super::{Act, FusedOutput};

    /// [`super::sigmoid`] through `sigmoid::sigmoid_reference`.
    pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        Tensor::from_dispatch(super::sigmoid::sigmoid_reference::<Dispatch>(
            x.into_dispatch(),
        ))
    }

    /// [`super::batch_norm_train_fused`] through `batch_norm::batch_norm_train_reference`.
    pub fn batch_norm_train<const D: usize>(
        x: Tensor<D>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        eps: f64,
    ) -> FusedOutput<D> {
        batch_norm_train_with(batch_norm_train_reference::<Dispatch>, x, gamma, beta, eps)
    }

    /// [`super::dense`] through `dense::dense_reference` (defined beside the op, whose
    /// signature it shares).
    pub use super::dense::dense_through_reference as dense;

    /// [`super::weight_norm_columns`] through `columns::weight_norm_columns_reference`.
    pub fn weight_norm_columns(v: Tensor<2>, g: Tensor<1>) -> Tensor<2> {
        super::columns::weight_norm_columns_reference_tensors(v, g)
    }

    /// [`super::center_columns`] through `columns::center_columns_reference`.
    pub fn center_columns(x: Tensor<2>, beta: Tensor<1>) -> (Tensor<2>, Tensor<1>) {
        super::columns::center_columns_reference_tensors(x, beta)
    }

    /// [`super::conv3x3`] through `conv::conv_reference`.
    pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        super::conv::conv_reference_tensors(x, weight, bias, 1)
    }

    /// [`super::conv1x1`] through `conv::conv_reference`.
    pub fn conv1x1(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        super::conv::conv_reference_tensors(x, weight, bias, 1)
    }

    /// [`super::conv3x3_stride2`] through `conv::conv_reference`.
    pub fn conv3x3_stride2(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        super::conv::conv_reference_tensors(x, weight, bias, 2)
    }

    /// [`super::max_pool2x2_then`] through `pool::max_pool2x2_reference`.
    pub fn max_pool2x2_then(x: Tensor<4>, act: Act) -> Tensor<4> {
        Tensor::from_dispatch(super::pool::max_pool2x2_reference::<Dispatch>(
            x.into_dispatch(),
            act,
        ))
    }

    /// [`super::max_pool3x3_stride2`] through `pool::max_pool3x3_stride2_reference`.
    pub fn max_pool3x3_stride2(x: Tensor<4>) -> Tensor<4> {
        Tensor::from_dispatch(super::pool::max_pool3x3_stride2_reference::<Dispatch>(
            x.into_dispatch(),
        ))
    }

    /// [`super::concat_channels`] through `concat::concat_channels_reference`.
    pub fn concat_channels(a: Tensor<4>, b: Tensor<4>, acts: [super::Act; 2]) -> Tensor<4> {
        Tensor::from_dispatch(super::concat::concat_channels_reference::<Dispatch>(
            a.into_dispatch(),
            b.into_dispatch(),
            acts[0],
            acts[1],
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
