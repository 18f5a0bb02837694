//! Max-pooling as one op, parallel over the (image, channel) planes: the CNN's 2×2 windows with
//! stride 2, with an optional nonlinearity g applied after it, and the Inception's overlapping
//! 3×3 windows with stride 2 (see [`max_pool3x3_stride2`]).
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

use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::common::{
    InDtype, OneInputBackward, Real, float_dispatch, simd_fn, tensor_from, values, vec_written,
};
use super::dense::{Act, activate, activation_reference};

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedMaxPool: Backend {
    /// `[N, C, H, W]` → `[N, C, H/2, W/2]`, then `act`.
    ///
    /// This default body is `max_pool2x2_reference`; Flex overrides it with the kernel below.
    fn max_pool2x2(x: FloatTensor<Self>, act: Act) -> FloatTensor<Self> {
        max_pool2x2_reference::<Self>(x, act)
    }

    /// `[N, C, H, W]` → `[N, C, ⌊(H − 3)/2⌋ + 1, ⌊(W − 3)/2⌋ + 1]`: 3×3 windows, stride 2.
    ///
    /// This default body is `max_pool3x3_stride2_reference`; Flex overrides it with the kernel
    /// below.
    fn max_pool3x3_stride2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        max_pool3x3_stride2_reference::<Self>(x)
    }
}

/// The reference for [`FusedMaxPool::max_pool3x3_stride2`]: Burn's `max_pool2d` with kernel 3,
/// stride 2, no padding, floor mode:
///
/// ```text
/// y[n, c, i, j] = max of x[n, c, 2i..2i+3, 2j..2j+3]
/// ```
pub(crate) fn max_pool3x3_stride2_reference<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
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

/// 3×3 max-pooling with stride 2 and no padding: the Inception's downsample modules. Panics if
/// the image is smaller than 3×3.
///
/// Why its own kernel: Flex's max-pool records indices and scatters the gradient back with a
/// scalar, bounds-checked add, about 10% of a one-thread Inception step. Here the forward
/// records each window's winner (0–8, the first maximum in row-major order; a NaN wins) and
/// the backward adds ∂y at the winners plane by plane, in a fixed order. The windows overlap,
/// so an input can win up to four of them and receive the sum of their gradients.
pub fn max_pool3x3_stride2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    assert!(
        h >= 3 && w >= 3,
        "max_pool3x3_stride2: the image is {h}x{w}, under 3x3"
    );
    Tensor::from_dispatch(<Dispatch as FusedMaxPool>::max_pool3x3_stride2(
        x.into_dispatch(),
    ))
}

/// The output side of a 3×3 window with stride 2 on a side of `side` (at least 3).
fn windows3(side: usize) -> usize {
    side.saturating_sub(3) / 2 + 1
}

/// Each window's maximum and its winner (0–8, row-major), for every plane.
fn forward3<T: Real>(x: &[T], d: PoolDims) -> (Vec<T>, Vec<u8>) {
    pool_planes(x, d, (windows3(d.h), windows3(d.w)), pool3_plane::<T>)
}

simd_fn! {
    /// One plane of 3×3 windows with stride 2: each window scanned in row-major order, each
    /// value taking over when it [`wins`] (as a select, not a branch on the values). Window
    /// (i, j) reads columns 2j, 2j + 1 and 2j + 2 of rows 2i to 2i + 2, every other value, so
    /// the nine values of all windows are first copied into nine runs of `oh · ow`, one per
    /// place in the window: the scan is then one loop over contiguous runs, which LLVM
    /// vectorises 16 windows at a time (scanning the plane in place, one window at a time, was
    /// 6% of an Inception step).
    fn pool3_plane<T: Real>(
        xp: &[T],
        yp: &mut [MaybeUninit<T>],
        ap: &mut [MaybeUninit<u8>],
        w: usize,
        oh: usize,
        ow: usize,
    ) {
        let n = oh * ow;
        let mut taps = vec![T::ZERO; 9 * n];
        let (t012, t345678) = taps.split_at_mut(3 * n);
        let (t345, t678) = t345678.split_at_mut(3 * n);
        for (dy, t) in [t012, t345, t678].into_iter().enumerate() {
            let (left, rest) = t.split_at_mut(n);
            let (middle, right) = rest.split_at_mut(n);
            for i in 0..oh {
                let row = &xp[(2 * i + dy) * w..][..2 * ow + 1];
                let l = &mut left[i * ow..][..ow];
                let m = &mut middle[i * ow..][..ow];
                let r = &mut right[i * ow..][..ow];
                for j in 0..ow {
                    l[j] = row[2 * j];
                    m[j] = row[2 * j + 1];
                    r[j] = row[2 * j + 2];
                }
            }
        }
        // Named one by one, each of length n: through an array of slices LLVM kept the scan
        // scalar.
        let [t0, t1, t2, t3, t4, t5, t6, t7, t8]: [&[T]; 9] =
            std::array::from_fn(|k| &taps[k * n..][..n]);
        let (yp, ap) = (&mut yp[..n], &mut ap[..n]);
        for o in 0..n {
            // The winner as a u32 while scanning, as wide as the values: with a u8, LLVM
            // vectorised 4 windows at a time instead of 16.
            let (mut best, mut at) = (t0[o], 0u32);
            let rest = [t1[o], t2[o], t3[o], t4[o], t5[o], t6[o], t7[o], t8[o]];
            for (idx, v) in (1u32..).zip(rest) {
                let take = wins(best, v);
                best = if take { v } else { best };
                at = if take { idx } else { at };
            }
            yp[o].write(best);
            ap[o].write(at as u8);
        }
    }
}

/// ∂x from ∂y and the winners: each plane zeroed, then ∂y added at each window's winner,
/// windows in row-major order.
fn backward3<T: Real>(g: &[T], arg: &[u8], d: PoolDims) -> Vec<T> {
    let (oh, ow) = (windows3(d.h), windows3(d.w));
    let (plane_in, plane_out) = (d.h * d.w, oh * ow);
    let mut dx = vec![T::ZERO; d.planes * plane_in];
    dx.par_chunks_mut(plane_in.max(1))
        .zip(
            g.par_chunks(plane_out.max(1))
                .zip(arg.par_chunks(plane_out.max(1))),
        )
        .for_each(|(dp, (gp, ap))| {
            for (o, (&gv, &k)) in gp.iter().zip(ap).enumerate() {
                let (i, j) = (o / ow, o % ow);
                let (ky, kx) = (usize::from(k) / 3, usize::from(k) % 3);
                dp[(2 * i + ky) * d.w + 2 * j + kx] += gv;
            }
        });
    dx
}

/// What the 3×3 pool's backward keeps: the winners, the input's shape and dtype.
#[derive(Debug, Clone)]
struct Winners3 {
    arg: Arc<Vec<u8>>,
    dims: Vec<usize>,
    dtype: DType,
}

impl InDtype for Winners3 {
    fn in_dtype(self, dtype: DType) -> Self {
        Winners3 { dtype, ..self }
    }
}

fn flex_forward3(x: &FlexTensor) -> (FlexTensor, Winners3) {
    let d = PoolDims::of(x);
    let dims = x.layout().shape().to_vec();
    let out_shape = vec![dims[0], dims[1], windows3(d.h), windows3(d.w)];
    float_dispatch!(x.dtype(), |T| {
        let (y, arg) = forward3::<T>(&values(x), d);
        let winners = Winners3 {
            arg: Arc::new(arg),
            dims,
            dtype: x.dtype(),
        };
        (tensor_from(y, out_shape), winners)
    })
}

fn flex_backward3(g: &FlexTensor, w: &Winners3) -> FlexTensor {
    let d = PoolDims::of_dims(&w.dims);
    float_dispatch!(w.dtype, |T| {
        tensor_from(backward3::<T>(&values(g), &w.arg, d), w.dims.clone())
    })
}

/// Input shape and the pooled plane's size.
#[derive(Debug, Clone, Copy)]
struct PoolDims {
    planes: usize,
    h: usize,
    w: usize,
}

impl PoolDims {
    /// The shape `[N, C, H, W]` a backward keeps.
    fn of_dims(dims: &[usize]) -> Self {
        PoolDims {
            planes: dims[0] * dims[1],
            h: dims[2],
            w: dims[3],
        }
    }

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
    pool_planes(x, d, d.out_hw(), pool_plane::<T>)
}

/// One plane's pooling: (input, outputs, winners, input width, output height and width).
type PoolPlane<T> = fn(&[T], &mut [MaybeUninit<T>], &mut [MaybeUninit<u8>], usize, usize, usize);

/// Pooled values `[planes, oh, ow]` and each window's winner, with `plane` run on every plane,
/// planes spread over threads.
fn pool_planes<T: Real>(
    x: &[T],
    d: PoolDims,
    (oh, ow): (usize, usize),
    plane: PoolPlane<T>,
) -> (Vec<T>, Vec<u8>) {
    let plane_in = d.h * d.w;
    let plane_out = oh * ow;
    let len = d.planes * plane_out;
    let mut arg = Vec::with_capacity(len);
    // SAFETY: every plane's `oh·ow` outputs and winners are written by `plane`.
    let y = unsafe {
        vec_written(len, |y| {
            y.par_chunks_mut(plane_out.max(1))
                .zip(arg.spare_capacity_mut()[..len].par_chunks_mut(plane_out.max(1)))
                .zip(x.par_chunks(plane_in.max(1)))
                .for_each(|((yp, ap), xp)| plane(xp, yp, ap, d.w, oh, ow));
        })
    };
    // SAFETY: written above, with `y`.
    unsafe { arg.set_len(len) };
    (y, arg)
}

/// `b` wins over `a`, which comes first: it is larger, or a NaN where `a` is none (so the first
/// maximum wins a tie, and the first NaN wins the window).
#[inline(always)]
fn wins<T: Real>(a: T, b: T) -> bool {
    #[allow(clippy::eq_op)] // x != x: x is a NaN
    let nan = |x: T| x != x;
    (b > a) | (nan(b) & !nan(a))
}

simd_fn! {
    /// One plane: each window's maximum and winner, without a branch on the values (random
    /// activations made the old per-window branches mispredict, 20% of a CNN step). The window
    /// is decided as a tree, top pair, bottom pair, then the two, which picks the same winner
    /// as scanning it in row-major order.
    fn pool_plane<T: Real>(
        xp: &[T],
        yp: &mut [MaybeUninit<T>],
        ap: &mut [MaybeUninit<u8>],
        w: usize,
        oh: usize,
        ow: usize,
    ) {
        for i in 0..oh {
            // Zipped chunks, not indices: a bounds check on the last window kept LLVM from
            // vectorising all but the first 8 windows of a row.
            let r0 = xp[2 * i * w..][..2 * ow].chunks_exact(2);
            let r1 = xp[(2 * i + 1) * w..][..2 * ow].chunks_exact(2);
            let out = yp[i * ow..][..ow].iter_mut().zip(&mut ap[i * ow..][..ow]);
            for ((p0, p1), (y, k)) in r0.zip(r1).zip(out) {
                let (a, b, c, e) = (p0[0], p0[1], p1[0], p1[1]);
                let top_right = wins(a, b);
                let top = if top_right { b } else { a };
                let bottom_right = wins(c, e);
                let bottom = if bottom_right { e } else { c };
                let down = wins(top, bottom);
                y.write(if down { bottom } else { top });
                let top_k = top_right as u8;
                let bottom_k = 2 + bottom_right as u8;
                k.write(if down { bottom_k } else { top_k });
            }
        }
    }
}

/// One plane's (∂x to write, ∂y) and (y, winners), as the parallel zip hands them out.
type PlaneOfBackward<'a, T> = ((&'a mut [MaybeUninit<T>], &'a [T]), (&'a [T], &'a [u8]));

/// ∂x from ∂y (of the pooled values, before g), g's derivative from its output `y`, and the
/// winners, in one pass that writes every element of ∂x (no zeroed buffer, no scatter).
fn backward<T: Real>(g: &[T], y: &[T], arg: &[u8], act: Act, d: PoolDims) -> Vec<T> {
    let (oh, ow) = d.out_hw();
    let plane_in = d.h * d.w;
    let plane_out = oh * ow;
    let plane = |((dp, gp), (yp, ap)): PlaneOfBackward<T>| match act {
        Act::Identity => unpool_plane(dp, gp, yp, ap, d.h, d.w, |_, g| g),
        Act::Relu => unpool_plane(dp, gp, yp, ap, d.h, d.w, |y, g| {
            if y > T::ZERO { g } else { T::ZERO }
        }),
        Act::Sigmoid => {
            let one = T::from_f64(1.0);
            unpool_plane(dp, gp, yp, ap, d.h, d.w, move |y, g| g * (y * (one - y)))
        }
        Act::Tanh => {
            let one = T::from_f64(1.0);
            unpool_plane(dp, gp, yp, ap, d.h, d.w, move |y, g| g * (one - y * y))
        }
    };
    // SAFETY: `unpool_plane` writes every element of each plane.
    unsafe {
        vec_written(d.planes * plane_in, |dx| {
            dx.par_chunks_mut(plane_in.max(1))
                .zip(g.par_chunks(plane_out.max(1)))
                .zip(
                    y.par_chunks(plane_out.max(1))
                        .zip(arg.par_chunks(plane_out.max(1))),
                )
                .for_each(plane);
        })
    }
}

simd_fn! {
    /// One plane of ∂x: each window's four values, ∂y·g'(y) at its winner and 0 elsewhere, and
    /// 0 in an odd trailing row or column.
    fn unpool_plane<T: Real>(
        dp: &mut [MaybeUninit<T>],
        gp: &[T],
        yp: &[T],
        ap: &[u8],
        h: usize,
        w: usize,
        grad: impl Fn(T, T) -> T,
    ) {
        let (oh, ow) = (h / 2, w / 2);
        for i in 0..oh {
            let (top, bottom) = dp[2 * i * w..][..2 * w].split_at_mut(w);
            let (gr, yr, ar) = (&gp[i * ow..][..ow], &yp[i * ow..][..ow], &ap[i * ow..][..ow]);
            let windows = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
            for ((t, b), ((&g, &y), &k)) in windows.zip(gr.iter().zip(yr).zip(ar)) {
                let v = grad(y, g);
                let pick = |at: u8| if k == at { v } else { T::ZERO };
                t[0].write(pick(0));
                t[1].write(pick(1));
                b[0].write(pick(2));
                b[1].write(pick(3));
            }
            if w % 2 == 1 {
                top[w - 1].write(T::ZERO);
                bottom[w - 1].write(T::ZERO);
            }
        }
        for v in &mut dp[2 * oh * w..] {
            v.write(T::ZERO);
        }
    }
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
    let d = PoolDims::of_dims(&w.dims);
    float_dispatch!(w.dtype, |T| {
        let dx = backward::<T>(&values(g), &values(&w.output), &w.arg, w.act, d);
        tensor_from(dx, w.dims.clone())
    })
}

impl FusedMaxPool for Flex {
    fn max_pool2x2(x: FlexTensor, act: Act) -> FlexTensor {
        flex_forward(&x, act).0
    }

    fn max_pool3x3_stride2(x: FlexTensor) -> FlexTensor {
        flex_forward3(&x).0
    }
}

impl<C: CheckpointStrategy> FusedMaxPool for Autodiff<Flex, C> {
    fn max_pool2x2(x: FloatTensor<Self>, act: Act) -> FloatTensor<Self> {
        let (y, winners) = flex_forward(x.primitive(), act);
        OneInputBackward::new(|winners: Winners, g| flex_backward(&g, &winners))
            .record::<C>(&x, winners, y)
    }

    fn max_pool3x3_stride2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (y, winners) = flex_forward3(x.primitive());
        OneInputBackward::new(|winners: Winners3, g| flex_backward3(&g, &winners))
            .record::<C>(&x, winners, y)
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::{differing_bits, test_values};
    use super::*;

    /// Each 3×3 window's maximum and winner by definition: its nine values in row-major order,
    /// each taking over when it wins over the best before it. The plain reference for
    /// [`pool3_plane`].
    fn scan<T: Real>(x: &[T], w: usize, (oh, ow): (usize, usize)) -> (Vec<T>, Vec<u8>) {
        let window = |i: usize, j: usize| {
            let at = |k: u8| x[(2 * i + usize::from(k) / 3) * w + 2 * j + usize::from(k) % 3];
            (1..9u8).fold((at(0), 0u8), |best, k| {
                if wins(best.0, at(k)) {
                    (at(k), k)
                } else {
                    best
                }
            })
        };
        (0..oh)
            .flat_map(|i| (0..ow).map(move |j| (i, j)))
            .map(|(i, j)| window(i, j))
            .unzip()
    }

    /// Random values, ties (0, 1, 2), NaNs in every position of the window, and signed zeros.
    fn planes<T: Real>(n: usize, seed: u64) -> [Vec<T>; 4] {
        let random = test_values::<T>(n, seed);
        let ties = (0..n)
            .map(|i| T::from_f64(((i * 7 + i / 5) % 3) as f64))
            .collect();
        let mut nans = random.clone();
        for v in nans.iter_mut().step_by(11) {
            *v = T::from_f64(f64::NAN);
        }
        let zeros = (0..n)
            .map(|i| T::from_f64(if i % 3 == 0 { -0.0 } else { 0.0 }))
            .collect();
        [random, ties, nans, zeros]
    }

    fn pool3_agrees<T: Real>(seed: u64) {
        for (h, w) in [(3, 3), (7, 9), (8, 6), (15, 15), (32, 32), (33, 36)] {
            let (oh, ow) = (windows3(h), windows3(w));
            for (case, x) in planes::<T>(h * w, seed).iter().enumerate() {
                let (want_y, want_at) = scan(x, w, (oh, ow));
                let mut y = vec![MaybeUninit::new(T::ZERO); oh * ow];
                let mut at = vec![MaybeUninit::new(9u8); oh * ow];
                pool3_plane(x, &mut y, &mut at, w, oh, ow);
                // SAFETY: initialised above.
                let (y, at): (Vec<T>, Vec<u8>) = y
                    .iter()
                    .zip(&at)
                    .map(|(v, a)| unsafe { (v.assume_init(), a.assume_init()) })
                    .unzip();
                let n = differing_bits(&y, &want_y);
                assert_eq!(n, 0, "{h}x{w}, case {case}: {n} maxima differ");
                assert_eq!(at, want_at, "{h}x{w}, case {case}: winners differ");
            }
        }
    }

    /// The vectorised 3×3 pool picks each window's first maximum (or first NaN), with the
    /// value's bits, as scanning the window in row-major order does: in f32 and f64, on odd
    /// and even sides.
    #[test]
    fn pool3_plane_picks_each_windows_first_maximum() {
        pool3_agrees::<f32>(3);
        pool3_agrees::<f64>(5);
    }
}
