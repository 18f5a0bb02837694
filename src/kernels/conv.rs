//! The nets' stride-1 convolutions that keep the map's size, 3×3 with padding 1 (the CNN, the
//! Inception's 3×3 modules) and 1×1 (the Inception's 1×1 modules), plus bias, as one op with a
//! hand-written backward, parallel over the images of the batch.
//!
//! ```text
//! z[n] = W · col(x[n]) + b          W: [C_out, C·9] (Burn's [C_out, C, 3, 3], row-major)
//!                                   col(x[n]): [C·9, H·W], row (c, ky, kx) = x[n, c] shifted
//! ∂b   = Σ_n Σ_hw ∂z[n]
//! ∂W   = Σ_n ∂z[n] · col(x[n])ᵀ
//! ∂x[n] = col⁻¹(Wᵀ · ∂z[n])         col⁻¹ adds each row back to where it was read from
//! ```
//!
//! A 1×1 convolution is the same with col(x[n]) = x[n] as `[C, H·W]`: no column matrix is
//! built, and ∂x[n] = Wᵀ · ∂z[n] is written by the product itself.
//!
//! Why: Flex's convolution builds the im2col matrix of the whole batch, runs its products in
//! rayon closures per output block, and its backward goes through a transposed convolution with
//! layout copies; on the CIFAR CNN that took most of a step. Here each image's column matrix
//! (at most 288 × 1,024 floats) is built, used and dropped while it is in cache, the output is
//! written in NCHW directly, and the images are spread over rayon's threads in fixed chunks.
//! The chunks (not the threads) decide the order in which ∂W and ∂b are summed, so results do
//! not depend on the thread count and a resumed run repeats exactly.

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorCreationOptions};
use rayon::prelude::*;

use super::common::{
    Real, assume_written, backward_node, float_dispatch, lane_sum, simd_fn, tensor_from, values,
    vec_written,
};
use super::gemm::{Operand, gemm_into};

/// Images per parallel task: small enough to balance two threads over a batch of 128, large
/// enough that a task's ∂W partial sum is worth its memory.
const IMAGES_PER_TASK: usize = 8;

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedConv: Backend {
    /// `[N, C, H, W]` ⋆ `[C_out, C, k, k]` (+ `[C_out]` when `has_bias`) → `[N, C_out, H, W]`,
    /// for k = 3 (padding 1) or k = 1.
    ///
    /// This default body is `conv_same_reference`; Flex overrides it with the kernel below.
    fn conv_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        conv_same_reference::<Self>(x, weight, bias, has_bias)
    }
}

/// The reference for [`FusedConv`]: Burn's own `conv2d` with stride 1, padding p = k/2
/// (1 for 3×3, 0 for 1×1), dilation 1 and one group,
///
/// ```text
/// z[n, o, i, j] = b[o] + Σ_c Σ_{ky,kx ∈ 0..k} W[o, c, ky, kx] · x[n, c, i + ky − p, j + kx − p]
/// ```
///
/// with x read as 0 outside the image. The shape check is the fast op's: `conv2d` would accept
/// other kernel sizes and return a smaller output.
pub(crate) fn conv_same_reference<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    has_bias: bool,
) -> FloatTensor<B> {
    let (xd, wd) = (x.shape(), weight.shape());
    assert!(
        xd.num_dims() == 4 && wd.num_dims() == 4 && wd[1] == xd[1] && fits_kernel(wd[2], wd[3]),
        "conv: input {xd:?} and weight {wd:?} do not fit (weight must be [C_out, C, k, k], k 1 or 3)"
    );
    let p = wd[2] / 2;
    let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
    B::conv2d(x, weight, has_bias.then_some(bias), options)
}

/// A square kernel side the op computes: 3 (padding 1) or 1.
fn fits_kernel(kh: usize, kw: usize) -> bool {
    kh == kw && (kh == 1 || kh == 3)
}

/// 3×3 convolution with stride 1 and zero padding 1 (the output has the input's H and W), plus
/// the bias if given. Panics if the weight is not `[C_out, C, 3, 3]` for the input's C.
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    assert_eq!(
        weight.dims()[2..],
        [3, 3],
        "conv3x3: the weight must be 3x3"
    );
    conv_same_with(<Dispatch as FusedConv>::conv_same, x, weight, bias)
}

/// 1×1 convolution (a product over the channels at each position), plus the bias if given.
/// Panics if the weight is not `[C_out, C, 1, 1]` for the input's C.
pub fn conv1x1(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    assert_eq!(
        weight.dims()[2..],
        [1, 1],
        "conv1x1: the weight must be 1x1"
    );
    conv_same_with(<Dispatch as FusedConv>::conv_same, x, weight, bias)
}

/// [`conv3x3`] or [`conv1x1`], by the weight's shape, through [`conv_same_reference`] (see
/// `super::reference`).
pub(super) fn conv_same_reference_tensors(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    conv_same_with(conv_same_reference::<Dispatch>, x, weight, bias)
}

/// The signature of [`FusedConv::conv_same`] on `Dispatch`.
type ConvOp = fn(
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    bool,
) -> FloatTensor<Dispatch>;

/// Calls `op` (the fast op or its reference) with [`conv3x3`]'s arguments made into its inputs.
fn conv_same_with(
    op: ConvOp,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    let has_bias = bias.is_some();
    // A placeholder in x's dtype (the kernel reads all inputs as one type).
    let options = TensorCreationOptions::new(x.device()).with_dtype(x.dtype());
    let bias = bias.unwrap_or_else(|| Tensor::zeros([0], options));
    Tensor::from_dispatch(op(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        has_bias,
    ))
}

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    c_out: usize,
    /// The kernel's side: 3 or 1.
    kernel: usize,
}

impl Dims {
    fn of(x: &FlexTensor, weight: &FlexTensor) -> Self {
        let xd = x.layout().shape().to_vec();
        let wd = weight.layout().shape().to_vec();
        assert!(
            xd.len() == 4 && wd.len() == 4 && wd[1] == xd[1] && fits_kernel(wd[2], wd[3]),
            "conv: input {xd:?} and weight {wd:?} do not fit (weight must be [C_out, C, k, k], \
             k 1 or 3)"
        );
        Dims {
            n: xd[0],
            c: xd[1],
            h: xd[2],
            w: xd[3],
            c_out: wd[0],
            kernel: wd[2],
        }
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn k(&self) -> usize {
        self.c * self.kernel * self.kernel
    }
}

simd_fn! {
    /// The column matrix `[C·9, H·W]` of one image `[C, H, W]`: row (c, ky, kx) holds the image
    /// shifted by (ky − 1, kx − 1), zero where that reads outside it.
    fn im2col<T: Real>(img: &[T], d: Dims, col: &mut [T]) {
        let (h, w, hw) = (d.h, d.w, d.hw());
        for c in 0..d.c {
            let plane = &img[c * hw..(c + 1) * hw];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &mut col[(c * 9 + ky * 3 + kx) * hw..][..hw];
                    for (y, dst) in row.chunks_exact_mut(w).enumerate() {
                        let sy = y as isize + ky as isize - 1;
                        if sy < 0 || sy >= h as isize {
                            dst.fill(T::ZERO);
                            continue;
                        }
                        let src = &plane[sy as usize * w..(sy as usize + 1) * w];
                        shifted_copy(dst, src, kx);
                    }
                }
            }
        }
    }
}

/// dst[x] = src[x + kx − 1], zero outside src.
#[inline(always)]
fn shifted_copy<T: Real>(dst: &mut [T], src: &[T], kx: usize) {
    let w = dst.len();
    match kx {
        0 => {
            dst[0] = T::ZERO;
            dst[1..].copy_from_slice(&src[..w - 1]);
        }
        1 => dst.copy_from_slice(src),
        _ => {
            dst[..w - 1].copy_from_slice(&src[1..]);
            dst[w - 1] = T::ZERO;
        }
    }
}

simd_fn! {
    /// The adjoint of [`im2col`]: adds each column-matrix row back onto the image `[C, H, W]`.
    fn col2im_add<T: Real>(col: &[T], d: Dims, img: &mut [T]) {
        let (h, w, hw) = (d.h, d.w, d.hw());
        for c in 0..d.c {
            let plane = &mut img[c * hw..(c + 1) * hw];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &col[(c * 9 + ky * 3 + kx) * hw..][..hw];
                    for (y, src) in row.chunks_exact(w).enumerate() {
                        let sy = y as isize + ky as isize - 1;
                        if sy < 0 || sy >= h as isize {
                            continue;
                        }
                        let dst = &mut plane[sy as usize * w..(sy as usize + 1) * w];
                        // dst[x + kx − 1] += src[x]
                        let (dst, src) = match kx {
                            0 => (&mut dst[..w - 1], &src[1..]),
                            1 => (dst, src),
                            _ => (&mut dst[1..], &src[..w - 1]),
                        };
                        for (o, &v) in dst.iter_mut().zip(src) {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// ∂b's terms of one image: each channel's Σ_hw ∂z in `T`, added to `db` in f64.
    fn bias_sums<T: Real>(gi: &[T], hw: usize, db: &mut [f64]) {
        for (sum, row) in db.iter_mut().zip(gi.chunks_exact(hw)) {
            *sum += lane_sum(row, row, |a, _| a).to_f64();
        }
    }
}

/// The weight as the `[C_out, C·9]` left operand.
fn weight_op<T>(w: &[T], d: Dims) -> Operand<'_, T> {
    Operand {
        data: w,
        rs: d.k() as isize,
        cs: 1,
    }
}

fn forward<T: Real>(x: &[T], wt: &[T], bias: Option<&[T]>, d: Dims) -> Vec<T> {
    let (hw, k) = (d.hw(), d.k());
    let img_len = d.c * hw;
    let out_len = d.c_out * hw;
    let task = |(z_chunk, x_chunk): (&mut [MaybeUninit<T>], &[T])| {
        let mut col = vec![T::ZERO; if d.kernel == 3 { k * hw } else { 0 }];
        for (zi, xi) in z_chunk.chunks_mut(out_len).zip(x_chunk.chunks(img_len)) {
            let col = columns(xi, d, &mut col);
            // The bias first, for the product to add onto; without one the product writes
            // every element.
            let zi = match bias {
                Some(b) => {
                    for (row, &bv) in zi.chunks_mut(hw).zip(b) {
                        row.iter_mut().for_each(|v| {
                            v.write(bv);
                        });
                    }
                    // SAFETY: every element was written just above.
                    unsafe { assume_written(zi) }
                }
                None => {
                    zi.iter_mut().for_each(|v| {
                        v.write(T::ZERO);
                    });
                    // SAFETY: as above; the product then overwrites these zeros.
                    unsafe { assume_written(zi) }
                }
            };
            let col_op = Operand {
                data: col,
                rs: hw as isize,
                cs: 1,
            };
            gemm_into(
                (d.c_out, hw, k),
                zi,
                weight_op(wt, d),
                col_op,
                bias.is_some(),
            );
        }
    };
    // SAFETY: each image's output is written above before the product runs on it.
    unsafe {
        vec_written(d.n * out_len, |z| {
            z.par_chunks_mut(out_len * IMAGES_PER_TASK)
                .zip(x.par_chunks(img_len * IMAGES_PER_TASK))
                .for_each(task);
        })
    }
}

/// The column matrix of one image `xi`: built in `col` for a 3×3 kernel, the image itself for
/// a 1×1 one.
fn columns<'a, T: Real>(xi: &'a [T], d: Dims, col: &'a mut [T]) -> &'a [T] {
    if d.kernel == 1 {
        return xi;
    }
    im2col(xi, d, col);
    col
}

/// One task's images, upstream gradients and (if wanted) ∂x, as chunks of the batch.
type ChunkInputs<'a, T> = (&'a [T], (&'a [T], Option<&'a mut [T]>));

/// (∂x if wanted, ∂W, ∂b if wanted) from the upstream gradient `gz`.
fn backward<T: Real>(
    x: &[T],
    wt: &[T],
    gz: &[T],
    d: Dims,
    (want_dx, want_db): (bool, bool),
) -> (Option<Vec<T>>, Vec<T>, Option<Vec<T>>) {
    let (hw, k) = (d.hw(), d.k());
    let img_len = d.c * hw;
    let out_len = d.c_out * hw;
    let mut dx = want_dx.then(|| vec![T::ZERO; d.n * img_len]);
    let chunks = d.n.div_ceil(IMAGES_PER_TASK);
    // Each task's partial (∂W, ∂b), summed in chunk order below.
    let task = |(x_chunk, (gz_chunk, dx_chunk)): ChunkInputs<T>| {
        let three = d.kernel == 3;
        let mut col = vec![T::ZERO; if three { k * hw } else { 0 }];
        let mut dcol = vec![T::ZERO; if want_dx && three { k * hw } else { 0 }];
        let mut dw = vec![T::ZERO; d.c_out * k];
        let mut db = vec![0.0f64; if want_db { d.c_out } else { 0 }];
        let mut dx_images = dx_chunk.map(|c| c.chunks_mut(img_len));
        for (xi, gi) in x_chunk.chunks(img_len).zip(gz_chunk.chunks(out_len)) {
            if want_db {
                bias_sums(gi, hw, &mut db);
            }
            let col = columns(xi, d, &mut col);
            let g_op = Operand {
                data: gi,
                rs: hw as isize,
                cs: 1,
            };
            // ∂W += ∂z[n] · colᵀ (col read with swapped strides)
            let col_t = Operand {
                data: col,
                rs: 1,
                cs: hw as isize,
            };
            gemm_into((d.c_out, k, hw), &mut dw, g_op, col_t, true);
            if let Some(dxi) = dx_images.as_mut().and_then(Iterator::next) {
                // ∂col = Wᵀ · ∂z[n], then scattered back onto the image.
                let w_t = Operand {
                    data: wt,
                    rs: 1,
                    cs: k as isize,
                };
                let g_op = Operand {
                    data: gi,
                    rs: hw as isize,
                    cs: 1,
                };
                if three {
                    gemm_into((k, hw, d.c_out), &mut dcol, w_t, g_op, false);
                    col2im_add(&dcol, d, dxi);
                } else {
                    // 1×1: the column matrix is the image, so the product is ∂x[n] itself.
                    gemm_into((k, hw, d.c_out), dxi, w_t, g_op, false);
                }
            }
        }
        (dw, db)
    };
    let x_chunks = x.par_chunks(img_len * IMAGES_PER_TASK);
    let gz_chunks = gz.par_chunks(out_len * IMAGES_PER_TASK);
    let partials: Vec<(Vec<T>, Vec<f64>)> = match dx.as_mut() {
        Some(dx) => x_chunks
            .zip(gz_chunks.zip(dx.par_chunks_mut(img_len * IMAGES_PER_TASK).map(Some)))
            .map(task)
            .collect(),
        None => x_chunks
            .zip(gz_chunks.map(|g| (g, None)))
            .map(task)
            .collect(),
    };
    debug_assert_eq!(partials.len(), chunks);
    let mut dw = vec![T::ZERO; d.c_out * k];
    let mut db = vec![0.0f64; if want_db { d.c_out } else { 0 }];
    for (pw, pb) in partials {
        dw.iter_mut().zip(&pw).for_each(|(a, &b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, &b)| *a += b);
    }
    let db = want_db.then(|| db.into_iter().map(T::from_f64).collect());
    (dx, dw, db)
}

fn flex_forward(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor, has_bias: bool) -> FlexTensor {
    let d = Dims::of(x, w);
    let shape = vec![d.n, d.c_out, d.h, d.w];
    float_dispatch!(x.dtype(), |T| {
        let bv = values::<T>(b);
        let z = forward::<T>(&values(x), &values(w), has_bias.then_some(&bv[..]), d);
        tensor_from(z, shape)
    })
}

/// (∂x, ∂W, ∂b) as tensors; ∂x only when `want.0`, ∂b only when `want.1`.
fn flex_backward(
    x: &FlexTensor,
    w: &FlexTensor,
    gz: &FlexTensor,
    want: (bool, bool),
) -> (Option<FlexTensor>, FlexTensor, Option<FlexTensor>) {
    let d = Dims::of(x, w);
    float_dispatch!(x.dtype(), |T| {
        let (dx, dw, db) = backward::<T>(&values(x), &values(w), &values(gz), d, want);
        (
            dx.map(|v| tensor_from(v, vec![d.n, d.c, d.h, d.w])),
            tensor_from(dw, vec![d.c_out, d.c, d.kernel, d.kernel]),
            db.map(|v| tensor_from(v, vec![d.c_out])),
        )
    })
}

impl FusedConv for Flex {
    fn conv_same(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        has_bias: bool,
    ) -> FlexTensor {
        flex_forward(&x, &weight, &bias, has_bias)
    }
}

#[derive(Debug)]
struct ConvSameBackward;

impl Backward<Flex, 3> for ConvSameBackward {
    /// The input and the weight.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads, |(x, w), gz, [want_dx, _, want_db]| {
            let (dx, dw, db) = flex_backward(&x, &w, &gz, (want_dx, want_db));
            [dx, Some(dw), db]
        })
    }
}

impl<C: CheckpointStrategy> FusedConv for Autodiff<Flex, C> {
    fn conv_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let z = flex_forward(
            x.primitive(),
            weight.primitive(),
            bias.primitive(),
            has_bias,
        );
        match ConvSameBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (x.into_primitive(), weight.into_primitive());
                prep.finish(state, z)
            }
            OpsKind::UnTracked(prep) => prep.finish(z),
        }
    }
}
