//! The nets' convolutions, plus bias, as one op with a hand-written backward, parallel over the
//! images of the batch: 3×3 with stride 1 and padding 1, which keeps the map's size (the CNN, the
//! Inception's 3×3 modules); 1×1 (the Inception's 1×1 modules); and 3×3 with stride 2 and no
//! padding (the Inception's downsample modules).
//!
//! ```text
//! z[n] = W · col(x[n]) + b          W: [C_out, C·k²] (Burn's [C_out, C, k, k], row-major)
//!                                   col(x[n]): [C·k², H'·W'], row (c, ky, kx) holds
//!                                   x[n, c, s·i + ky − p, s·j + kx − p] at column (i, j)
//! ∂b   = Σ_n Σ_hw ∂z[n]
//! ∂W   = Σ_n ∂z[n] · col(x[n])ᵀ
//! ∂x[n] = col⁻¹(Wᵀ · ∂z[n])         col⁻¹ adds each row back to where it was read from
//! ```
//!
//! A 1×1 convolution is the same with col(x[n]) = x[n] as `[C, H·W]`: no column matrix is
//! built, and ∂x[n] = Wᵀ · ∂z[n] is written by the product itself. A 3×3 stride-1 convolution
//! with few output channels, on a CPU with AVX-512, computes z, ∂x and ∂W from the image and ∂z
//! directly (`super::direct`), with the same bits as the column-matrix path.
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

mod im2col;

use super::common::{
    Real, assume_written, backward_node, float_dispatch, lane_sum, simd_fn, tensor_from,
    transpose_into, values, vec_written,
};
use super::direct;
use super::gemm::{Operand, gemm_into, sums_in_lanes};
use im2col::{Dims, Geometry, add_columns, columns};

/// Images per parallel task: small enough to balance two threads over a batch of 128, large
/// enough that a task's ∂W partial sum is worth its memory.
const IMAGES_PER_TASK: usize = 8;

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedConv: Backend {
    /// `[N, C, H, W]` ⋆ `[C_out, C, k, k]` with `stride` (+ `[C_out]` when `has_bias`) →
    /// `[N, C_out, H', W']`, for the shapes of [`Geometry`]: k = 3 with stride 1 (padding 1,
    /// H' = H), k = 1 (H' = H), k = 3 with stride 2 (no padding, H' = ⌊(H − 3)/2⌋ + 1).
    ///
    /// This default body is `conv_reference`; Flex overrides it with the kernel below.
    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
        stride: usize,
    ) -> FloatTensor<Self> {
        conv_reference::<Self>(x, weight, bias, has_bias, stride)
    }
}

/// The reference for [`FusedConv`]: Burn's own `conv2d` with stride s, the padding p of
/// [`Geometry`] (1 for 3×3 stride 1, else 0), dilation 1 and one group,
///
/// ```text
/// z[n, o, i, j] = b[o] + Σ_c Σ_{ky,kx ∈ 0..k} W[o, c, ky, kx] · x[n, c, s·i + ky − p, s·j + kx − p]
/// ```
///
/// with x read as 0 outside the image. The shape check is the fast op's: `conv2d` would accept
/// other kernel sizes.
pub(crate) fn conv_reference<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    has_bias: bool,
    stride: usize,
) -> FloatTensor<B> {
    let g = Geometry::fitting(&x.shape(), &weight.shape(), stride);
    let (s, p) = (g.stride, g.pad);
    let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
    B::conv2d(x, weight, has_bias.then_some(bias), options)
}

/// 3×3 convolution with stride 1 and zero padding 1 (the output has the input's H and W), plus
/// the bias if given. Panics if the weight is not `[C_out, C, 3, 3]` for the input's C.
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    conv_checked("conv3x3", 3, 1, x, weight, bias)
}

/// 1×1 convolution (a product over the channels at each position), plus the bias if given.
/// Panics if the weight is not `[C_out, C, 1, 1]` for the input's C.
pub fn conv1x1(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    conv_checked("conv1x1", 1, 1, x, weight, bias)
}

/// 3×3 convolution with stride 2 and no padding (`[N, C, H, W]` → `[N, C_out, ⌊(H − 3)/2⌋ + 1,
/// ⌊(W − 3)/2⌋ + 1]`), plus the bias if given. Panics if the weight is not `[C_out, C, 3, 3]`
/// for the input's C, or the image is smaller than 3×3.
pub fn conv3x3_stride2(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    conv_checked("conv3x3_stride2", 3, 2, x, weight, bias)
}

/// [`conv3x3`], [`conv1x1`] or [`conv3x3_stride2`] (by the weight's shape and `stride`)
/// through [`conv_reference`] (see `super::reference`).
pub(super) fn conv_reference_tensors(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
) -> Tensor<4> {
    conv_with(conv_reference::<Dispatch>, x, weight, bias, stride)
}

/// The signature of [`FusedConv::conv`] on `Dispatch`.
type ConvOp = fn(
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    bool,
    usize,
) -> FloatTensor<Dispatch>;

/// The fast op after checking that the weight is `kernel`×`kernel`: a 1×1 weight given to
/// [`conv3x3`] would otherwise run as a 1×1 convolution.
fn conv_checked(
    name: &str,
    kernel: usize,
    stride: usize,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    assert_eq!(
        weight.dims()[2..],
        [kernel, kernel],
        "{name}: the weight must be {kernel}x{kernel}"
    );
    conv_with(<Dispatch as FusedConv>::conv, x, weight, bias, stride)
}

/// Calls `op` (the fast op or its reference) with [`conv3x3`]'s arguments made into its inputs.
fn conv_with(
    op: ConvOp,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
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
        stride,
    ))
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

/// A thread's working memory for the images it runs: the column matrix and its gradient. Each
/// use writes what it reads first (`gemm` does not read an output it overwrites), so the
/// buffers are made once per rayon job and reused across its tasks instead of zeroed for every
/// task, which was 5% of an Inception step (`memset`).
#[derive(Default)]
struct Scratch<T> {
    col: Vec<T>,
    dcol: Vec<T>,
    /// One image's ∂z transposed, `[H'·W', C_out]` (the backward's).
    gzt: Vec<T>,
}

impl<T: Real> Scratch<T> {
    /// The column matrix's buffer, its gradient's and ∂z's, at least these lengths.
    fn buffers(&mut self, col: usize, dcol: usize, gzt: usize) -> [&mut [T]; 3] {
        [
            grown(&mut self.col, col),
            grown(&mut self.dcol, dcol),
            grown(&mut self.gzt, gzt),
        ]
    }
}

/// `v`, grown with zeros to at least `len` values.
fn grown<T: Real>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    v
}

fn forward<T: Real>(x: &[T], wt: &[T], bias: Option<&[T]>, d: Dims) -> Vec<T> {
    let (hw, k) = (d.hw_out(), d.k());
    let img_len = d.c * d.hw();
    let out_len = d.c_out * hw;
    // 3×3 with stride 1 straight from the image where that is faster and keeps the bits
    // (`super::direct`); `col` then holds the padded image and the output's grid.
    let direct = d.g == Geometry::THREE_STRIDE_ONE && direct::applies(d.c, d.c_out, hw);
    let col_len = match (direct, d.g.kernel) {
        (true, _) => direct::scratch_len(d.image()),
        (false, 3) => k * hw,
        _ => 0,
    };
    let task = |scratch: &mut Scratch<T>, (z_chunk, x_chunk): (&mut [MaybeUninit<T>], &[T])| {
        let [col, ..] = scratch.buffers(col_len, 0, 0);
        for (zi, xi) in z_chunk.chunks_mut(out_len).zip(x_chunk.chunks(img_len)) {
            if direct {
                direct::conv3x3_direct(xi, wt, bias, d.image(), col, zi);
                continue;
            }
            let col = columns(xi, d, col);
            // The bias first, for the product to add onto; without one the product writes
            // every element.
            for (row, c) in zi.chunks_mut(hw).zip(0..) {
                let v = bias.map_or(T::ZERO, |b| b[c]);
                row.iter_mut().for_each(|o| {
                    o.write(v);
                });
            }
            // SAFETY: every element was written just above.
            let zi = unsafe { assume_written(zi) };
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
    // SAFETY: each image's output is written above: every element by the direct kernel, or the
    // bias (or zero) before the product runs on it.
    unsafe {
        vec_written(d.n * out_len, |z| {
            z.par_chunks_mut(out_len * IMAGES_PER_TASK)
                .zip(x.par_chunks(img_len * IMAGES_PER_TASK))
                .for_each_init(Scratch::default, task);
        })
    }
}

/// ∂Wᵀ (`[K, C_out]`, K = C·k²) += col · ∂zᵀ for one image: `col` its column matrix `[K, H'·W']`,
/// `gz` its ∂z `[C_out, H'·W']`, `gzt` scratch for ∂z transposed.
///
/// Why ∂Wᵀ = col · ∂zᵀ and not ∂W = ∂z · colᵀ: `gemm` vectorises along its output's rows and
/// copies the operand that runs along them into panels, so it wants that operand contiguous
/// along them. In this orientation the operand is ∂zᵀ, transposed here in register blocks, and
/// col's rows are read in place. The other orientation had `gemm` gather the whole column matrix
/// (K rows, each H'·W' floats apart) one float at a time: about a third of an Inception step;
/// gathering ∂z so was still 10% of a CNN step. Each element is the same sum in the same order,
/// so ∂W has the same bits as `∂z · colᵀ` (tested below), except that products `gemm` sums in
/// lanes ([`sums_in_lanes`]) keep ∂z as it is, for they only go that way with both operands
/// running along the depth.
fn add_weight_gradient<T: Real>(
    col: &[T],
    gz: &[T],
    (k, c_out, hw): (usize, usize, usize),
    gzt: &mut [T],
    dwt: &mut [T],
) {
    let col_op = Operand {
        data: col,
        rs: hw as isize,
        cs: 1,
    };
    let gz_t = if sums_in_lanes(k, c_out) {
        Operand {
            data: gz,
            rs: 1,
            cs: hw as isize,
        }
    } else {
        let gzt = &mut gzt[..c_out * hw];
        transpose_into(gz, c_out, hw, gzt);
        Operand {
            data: gzt,
            rs: c_out as isize,
            cs: 1,
        }
    };
    gemm_into((k, c_out, hw), dwt, col_op, gz_t, true);
}

/// One task's images, upstream gradients and (if wanted) ∂x, as chunks of the batch.
type ChunkInputs<'a, T> = (&'a [T], (&'a [T], Option<&'a mut [MaybeUninit<T>]>));

/// (∂x if wanted, ∂W, ∂b if wanted) from the upstream gradient `gz`.
fn backward<T: Real>(
    x: &[T],
    wt: &[T],
    gz: &[T],
    d: Dims,
    (want_dx, want_db): (bool, bool),
) -> (Option<Vec<T>>, Vec<T>, Option<Vec<T>>) {
    let (hw, k) = (d.hw_out(), d.k());
    let img_len = d.c * d.hw();
    let out_len = d.c_out * hw;
    let three = d.g.kernel == 3;
    let stride1 = d.g == Geometry::THREE_STRIDE_ONE;
    // ∂W of a 3×3 stride-1 convolution straight from the image where that is faster and keeps
    // the bits (`super::direct`); `col` then holds the padded image and ∂z transposed.
    let direct_dw = stride1 && direct::applies_weight_grad(d.c, d.c_out, hw);
    let col_len = match (direct_dw, three) {
        (true, _) => direct::weight_grad_scratch_len(d.image()),
        (false, true) => k * hw,
        (false, false) => 0,
    };
    // ∂x of a 3×3 stride-1 convolution straight from ∂z where that is faster and keeps the
    // bits (`super::direct`); `dcol` then holds ∂z padded and ∂x's grid.
    let direct_dx = want_dx && stride1 && direct::applies_input_grad(d.c_out);
    let dcol_len = match (want_dx, direct_dx, three) {
        (true, true, _) => direct::input_grad_scratch_len(d.image()),
        (true, false, true) => k * hw,
        _ => 0,
    };
    let chunks = d.n.div_ceil(IMAGES_PER_TASK);
    // Each task's partial (∂W, ∂b), summed in chunk order below.
    let task = |scratch: &mut Scratch<T>, (x_chunk, (gz_chunk, dx_chunk)): ChunkInputs<T>| {
        let [col, dcol, gzt] = scratch.buffers(col_len, dcol_len, out_len);
        // ∂W transposed, `[C·k², C_out]` (see `add_weight_gradient`).
        let mut dwt = vec![T::ZERO; k * d.c_out];
        let mut db = vec![0.0f64; if want_db { d.c_out } else { 0 }];
        let mut dx_images = dx_chunk.map(|c| c.chunks_mut(img_len));
        for (xi, gi) in x_chunk.chunks(img_len).zip(gz_chunk.chunks(out_len)) {
            if want_db {
                bias_sums(gi, hw, &mut db);
            }
            if direct_dw {
                direct::conv3x3_direct_weight_grad(xi, gi, d.image(), col, &mut dwt);
            } else {
                let col = columns(xi, d, col);
                add_weight_gradient(col, gi, (k, d.c_out, hw), gzt, &mut dwt);
            }
            let Some(dxi) = dx_images.as_mut().and_then(Iterator::next) else {
                continue;
            };
            if direct_dx {
                direct::conv3x3_direct_input_grad(gi, wt, d.image(), dcol, dxi);
                continue;
            }
            // ∂col = Wᵀ · ∂z[n], added back onto ∂x, zeroed first.
            dxi.fill(MaybeUninit::new(T::ZERO));
            // SAFETY: every element was written just above.
            let dxi = unsafe { assume_written(dxi) };
            let w_t = Operand {
                data: wt,
                rs: 1,
                cs: k as isize,
            };
            let g = Operand {
                data: gi,
                rs: hw as isize,
                cs: 1,
            };
            if three {
                gemm_into((k, hw, d.c_out), &mut dcol[..k * hw], w_t, g, false);
                add_columns(dcol, d, dxi);
            } else {
                // 1×1: the column matrix is the image, so the product is ∂x[n] itself.
                gemm_into((k, hw, d.c_out), dxi, w_t, g, false);
            }
        }
        (dwt, db)
    };
    let x_chunks = x.par_chunks(img_len * IMAGES_PER_TASK);
    let gz_chunks = gz.par_chunks(out_len * IMAGES_PER_TASK);
    let (dx, partials): (_, Vec<(Vec<T>, Vec<f64>)>) = if want_dx {
        let mut partials = Vec::new();
        // ∂x is not zeroed where the direct kernel writes every element of it (zeroed here, on
        // the calling thread while the others waited, it was 3.3% of a two-thread Inception
        // step's samples). SAFETY: each image's ∂x is written in `task`: by the
        // direct kernel, or zeroed before the product and the adjoint add onto it.
        let dx = unsafe {
            vec_written(d.n * img_len, |dx| {
                partials = x_chunks
                    .zip(gz_chunks.zip(dx.par_chunks_mut(img_len * IMAGES_PER_TASK).map(Some)))
                    .map_init(Scratch::default, task)
                    .collect();
            })
        };
        (Some(dx), partials)
    } else {
        let partials = x_chunks
            .zip(gz_chunks.map(|g| (g, None)))
            .map_init(Scratch::default, task)
            .collect();
        (None, partials)
    };
    debug_assert_eq!(partials.len(), chunks);
    // The tasks' ∂Wᵀ are summed in that layout, element by element, and transposed once.
    let mut dwt = vec![T::ZERO; k * d.c_out];
    let mut db = vec![0.0f64; if want_db { d.c_out } else { 0 }];
    for (pw, pb) in partials {
        dwt.iter_mut().zip(&pw).for_each(|(a, &b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, &b)| *a += b);
    }
    let mut dw = vec![T::ZERO; d.c_out * k];
    transpose_into(&dwt, k, d.c_out, &mut dw);
    let db = want_db.then(|| db.into_iter().map(T::from_f64).collect());
    (dx, dw, db)
}

fn flex_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    b: &FlexTensor,
    has_bias: bool,
    stride: usize,
) -> FlexTensor {
    let d = Dims::of(x, w, stride);
    let shape = vec![d.n, d.c_out, d.ho, d.wo];
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
    stride: usize,
    want: (bool, bool),
) -> (Option<FlexTensor>, FlexTensor, Option<FlexTensor>) {
    let d = Dims::of(x, w, stride);
    float_dispatch!(x.dtype(), |T| {
        let (dx, dw, db) = backward::<T>(&values(x), &values(w), &values(gz), d, want);
        (
            dx.map(|v| tensor_from(v, vec![d.n, d.c, d.h, d.w])),
            tensor_from(dw, vec![d.c_out, d.c, d.g.kernel, d.g.kernel]),
            db.map(|v| tensor_from(v, vec![d.c_out])),
        )
    })
}

impl FusedConv for Flex {
    fn conv(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        has_bias: bool,
        stride: usize,
    ) -> FlexTensor {
        flex_forward(&x, &weight, &bias, has_bias, stride)
    }
}

/// The backward node, with the convolution's stride.
#[derive(Debug)]
struct ConvBackward {
    stride: usize,
}

impl Backward<Flex, 3> for ConvBackward {
    /// The input and the weight.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let stride = self.stride;
        backward_node(ops, grads, |(x, w), gz, [want_dx, _, want_db]| {
            let (dx, dw, db) = flex_backward(&x, &w, &gz, stride, (want_dx, want_db));
            [dx, Some(dw), db]
        })
    }
}

impl<C: CheckpointStrategy> FusedConv for Autodiff<Flex, C> {
    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
        stride: usize,
    ) -> FloatTensor<Self> {
        let z = flex_forward(
            x.primitive(),
            weight.primitive(),
            bias.primitive(),
            has_bias,
            stride,
        );
        match (ConvBackward { stride })
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

#[cfg(test)]
mod tests {
    use super::super::common::test_values;
    use super::*;

    /// ∂W through [`add_weight_gradient`] and one transpose has the bits of ∂W = ∂z · colᵀ
    /// summed image by image, the orientation the conv had before: on shapes `gemm` sums in
    /// lanes (C_out·K at most 256) and shapes it does not, on maps whose depth `gemm` blocks
    /// (1,024 positions) and does not (225).
    #[test]
    fn weight_gradient_has_the_bits_of_dz_times_col_transposed() {
        for (c_out, k, hw) in [
            (3, 18, 1024),
            (8, 24, 1024),
            (8, 24, 225),
            (8, 24, 49),
            (12, 20, 49),
            (16, 72, 1024),
            (12, 216, 225),
            (44, 756, 49),
        ] {
            let mut old = vec![0.0f32; c_out * k];
            let mut dwt = vec![0.0f32; k * c_out];
            let mut gzt = vec![0.0f32; c_out * hw];
            for image in 0..3 {
                let col = test_values::<f32>(k * hw, 2 * image as u64);
                let gz = test_values::<f32>(c_out * hw, 2 * image as u64 + 1);
                let (gz_op, col_t) = (
                    Operand {
                        data: &gz[..],
                        rs: hw as isize,
                        cs: 1,
                    },
                    Operand {
                        data: &col[..],
                        rs: 1,
                        cs: hw as isize,
                    },
                );
                gemm_into((c_out, k, hw), &mut old, gz_op, col_t, true);
                add_weight_gradient(&col, &gz, (k, c_out, hw), &mut gzt, &mut dwt);
            }
            let mut new = vec![0.0f32; c_out * k];
            transpose_into(&dwt, k, c_out, &mut new);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&new),
                bits(&old),
                "C_out {c_out}, K {k}, {hw} positions"
            );
        }
    }
}
