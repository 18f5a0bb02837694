//! 2×2 max-pooling with stride 2 as one op, parallel over the (image, channel) planes, with an
//! optional nonlinearity g applied after it.
//!
//! ```text
//! y[n, c, i, j] = g(max of x[n, c, 2i..2i+2, 2j..2j+2])     (odd trailing rows/columns dropped)
//! ∂x = ∂y · g'(y) at the position each maximum came from, 0 elsewhere
//! ```
//!
//! For a non-decreasing g (identity, ReLU, sigmoid, tanh) max-pooling commutes with g:
//! max(g(a), g(b)) = g(max(a, b)). So the CNN's "g, then pool" runs as "pool, then g" on a
//! quarter of the values, and the full-size activation and its backward are never built.
//!
//! Why: Flex's max-pool backward scatters the gradient with a scalar, bounds-checked add per
//! element, which measured about 20% of a CIFAR CNN step with BN. Here the forward records the
//! winner of each window (0–3, the first maximum in row-major order, as Flex and PyTorch pick)
//! and the backward writes every window's four values in one pass. A NaN in a window wins it,
//! so a diverging run still shows NaN downstream.

use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::common::{InDtype, OneInputBackward, Real, float_dispatch, tensor_from, values};
use super::dense::{Act, activate, activation_backward, activation_reference};

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedMaxPool: Backend {
    /// `[N, C, H, W]` → `[N, C, H/2, W/2]`, then `act`.
    ///
    /// This default body is `max_pool2x2_reference`; Flex overrides it with the kernel below.
    fn max_pool2x2(x: FloatTensor<Self>, act: Act) -> FloatTensor<Self> {
        max_pool2x2_reference::<Self>(x, act)
    }
}

/// The reference for [`FusedMaxPool`], in the op's own order: Burn's `max_pool2d` (kernel 2,
/// stride 2, no padding, floor mode, so odd trailing rows and columns are dropped), then g
/// (`dense::activation_reference`):
///
/// ```text
/// y[n, c, i, j] = g(max of x[n, c, 2i..2i+2, 2j..2j+2])
/// ```
pub(crate) fn max_pool2x2_reference<B: Backend>(x: FloatTensor<B>, act: Act) -> FloatTensor<B> {
    let pooled = B::max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
    activation_reference::<B>(pooled, act)
}

/// 2×2 max-pooling, stride 2, no padding.
pub fn max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    max_pool2x2_then(x, Act::Identity)
}

/// 2×2 max-pooling followed by the non-decreasing `act`, which equals `act` followed by the
/// pooling (see the module documentation).
pub fn max_pool2x2_then(x: Tensor<4>, act: Act) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedMaxPool>::max_pool2x2(
        x.into_dispatch(),
        act,
    ))
}

/// Input shape and the pooled plane's size.
#[derive(Debug, Clone, Copy)]
struct PoolDims {
    planes: usize,
    h: usize,
    w: usize,
}

impl PoolDims {
    fn of(x: &FlexTensor) -> Self {
        let d = x.layout().shape().to_vec();
        assert!(d.len() == 4, "max_pool2x2 takes [N, C, H, W], got {d:?}");
        PoolDims {
            planes: d[0] * d[1],
            h: d[2],
            w: d[3],
        }
    }
    fn out_hw(&self) -> (usize, usize) {
        (self.h / 2, self.w / 2)
    }
}

/// Pooled values and, per output, which of the window's four inputs won (row-major 0–3).
fn forward<T: Real>(x: &[T], d: PoolDims) -> (Vec<T>, Vec<u8>) {
    let (oh, ow) = d.out_hw();
    let plane_in = d.h * d.w;
    let plane_out = oh * ow;
    let mut y = vec![T::ZERO; d.planes * plane_out];
    let mut arg = vec![0u8; d.planes * plane_out];
    y.par_chunks_mut(plane_out.max(1))
        .zip(arg.par_chunks_mut(plane_out.max(1)))
        .zip(x.par_chunks(plane_in.max(1)))
        .for_each(|((yp, ap), xp)| {
            for i in 0..oh {
                let r0 = &xp[2 * i * d.w..][..d.w];
                let r1 = &xp[(2 * i + 1) * d.w..][..d.w];
                for j in 0..ow {
                    let cand = [r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]];
                    let mut best = 0;
                    for (k, &v) in cand.iter().enumerate().skip(1) {
                        let b = cand[best].to_f64();
                        let v = v.to_f64();
                        if !b.is_nan() && (v > b || v.is_nan()) {
                            best = k;
                        }
                    }
                    yp[i * ow + j] = cand[best];
                    ap[i * ow + j] = best as u8;
                }
            }
        });
    (y, arg)
}

/// ∂x from ∂y and the winners.
fn backward<T: Real>(g: &[T], arg: &[u8], d: PoolDims) -> Vec<T> {
    let (oh, ow) = d.out_hw();
    let plane_in = d.h * d.w;
    let plane_out = oh * ow;
    let mut dx = vec![T::ZERO; d.planes * plane_in];
    dx.par_chunks_mut(plane_in.max(1))
        .zip(g.par_chunks(plane_out.max(1)))
        .zip(arg.par_chunks(plane_out.max(1)))
        .for_each(|((dp, gp), ap)| {
            for i in 0..oh {
                for j in 0..ow {
                    let k = ap[i * ow + j] as usize;
                    let (dy, dxx) = (k / 2, k % 2);
                    dp[(2 * i + dy) * d.w + 2 * j + dxx] = gp[i * ow + j];
                }
            }
        });
    dx
}

/// What the backward keeps: the winners, the input's shape and dtype, the nonlinearity and its
/// output (for g').
#[derive(Debug, Clone)]
struct Winners {
    arg: Arc<Vec<u8>>,
    dims: Vec<usize>,
    dtype: DType,
    act: Act,
    output: FlexTensor,
}

/// Only the dtype changes: the winners and the output the backward reads stay as the kernel
/// computed them (in float32 for f16 and bf16), for the backward runs in that float too.
impl InDtype for Winners {
    fn in_dtype(self, dtype: DType) -> Self {
        Winners { dtype, ..self }
    }
}

fn flex_forward(x: &FlexTensor, act: Act) -> (FlexTensor, Winners) {
    let d = PoolDims::of(x);
    let dims = x.layout().shape().to_vec();
    let (oh, ow) = d.out_hw();
    let out_shape = vec![dims[0], dims[1], oh, ow];
    float_dispatch!(x.dtype(), |T| {
        let (mut y, arg) = forward::<T>(&values(x), d);
        activate(&mut y, act);
        let y = tensor_from(y, out_shape);
        let winners = Winners {
            arg: Arc::new(arg),
            dims,
            dtype: x.dtype(),
            act,
            output: y.clone(),
        };
        (y, winners)
    })
}

fn flex_backward(g: &FlexTensor, w: &Winners) -> FlexTensor {
    let d = PoolDims {
        planes: w.dims[0] * w.dims[1],
        h: w.dims[2],
        w: w.dims[3],
    };
    float_dispatch!(w.dtype, |T| {
        let gy = activation_backward::<T>(&values(&w.output), &values(g), w.act);
        tensor_from(backward::<T>(&gy, &w.arg, d), w.dims.clone())
    })
}

impl FusedMaxPool for Flex {
    fn max_pool2x2(x: FlexTensor, act: Act) -> FlexTensor {
        flex_forward(&x, act).0
    }
}

impl<C: CheckpointStrategy> FusedMaxPool for Autodiff<Flex, C> {
    fn max_pool2x2(x: FloatTensor<Self>, act: Act) -> FloatTensor<Self> {
        let (y, winners) = flex_forward(x.primitive(), act);
        match OneInputBackward::new(|winners: Winners, g| flex_backward(&g, &winners))
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(winners, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
