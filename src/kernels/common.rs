//! What every Flex kernel shares, so that each kernel's file holds only its own arithmetic:
//!
//! - [`Real`]: the floats the kernels compute in (f32 in training, f64 in the reference tests);
//! - [`float_dispatch!`]: the one place where a kernel picks that float from a tensor's dtype;
//! - [`values`] and [`tensor_from`]: a Flex tensor's values as a slice, and a tensor from a `Vec`;
//! - [`backward_node`]: the part of a hand-written backward that is the same for every op
//!   (take ∂out, compute the inputs' gradients, give each to the input that tracks one), and
//!   [`OneInputBackward`], the whole node of the ops with one differentiable input;
//! - [`simd_fn!`]: a loop compiled for AVX-512, AVX2 + FMA and baseline x86-64, the widest the
//!   CPU has chosen at run time; [`lane_sum`], a sum whose order does not depend on that choice;
//! - [`vec_written`]: an output buffer that is not zeroed before the kernel writes all of it;
//! - [`transpose_into`]: a matrix transposed in 8×8 register blocks (float32 with AVX2), beside
//!   its plain reference [`transpose_plain`].
//!
//! This file imports nothing from the other kernel files; they all import from it.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, TensorData};

/// A float the kernels run in: f32 in training, f64 in the reference tests.
pub(super) trait Real:
    Copy
    + bytemuck::Pod
    + burn::tensor::Element
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + PartialOrd
    + Send
    + Sync
    + 'static
{
    const ZERO: Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// self·a + b rounded once (an FMA instruction where the CPU has one).
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
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
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
}

/// `float_dispatch!(dtype, |T| body)`: `body` with the type `T` set to the float the kernels
/// compute a tensor of `dtype` in (written as a closure so that rustfmt formats the body; `T` is
/// a type, and the body is expanded once per float, not called). f64 and f32 run natively. Any other float dtype (f16, bf16)
/// runs in f32: [`values`] reads its inputs converted, and the body's result (tensors, options,
/// tuples and arrays of them: [`InDtype`]) is converted back to `dtype`.
///
/// Every kernel's Flex entry point goes through this, so a new dtype or a change of how the
/// others are handled is made here once.
macro_rules! float_dispatch {
    ($dtype:expr, |$t:ident| $body:expr) => {
        match $dtype {
            burn::tensor::DType::F64 => {
                type $t = f64;
                $body
            }
            burn::tensor::DType::F32 => {
                type $t = f32;
                $body
            }
            other => {
                type $t = f32;
                $crate::kernels::common::InDtype::in_dtype($body, other)
            }
        }
    };
}
pub(super) use float_dispatch;

/// `simd_fn! { fn name<T: Real>(args) -> R { body } }`: `name` with `body` compiled three
/// times, for AVX-512F, for AVX2 + FMA and for baseline x86-64 (SSE2), and the widest the CPU has
/// chosen at run time, as the sigmoid does (`super::sigmoid`). bn-exp is built for any x86-64, so
/// without this every loop of the kernels ran 4 floats wide. The three builds compute the same
/// bits: Rust never contracts a multiply and an add into an FMA on its own, and a body that
/// vectorises a sum must fix its order itself ([`lane_sum`]). Call it inside a rayon task, not
/// around one: the closures rayon runs are functions of their own, compiled for the baseline.
macro_rules! simd_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident<$t:ident: Real $(, const $s:ident: usize)?>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name<$t: $crate::kernels::common::Real $(, const $s: usize)?>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body<$t: $crate::kernels::common::Real $(, const $s: usize)?>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<$t: $crate::kernels::common::Real $(, const $s: usize)?>($($arg: $ty),*) $(-> $ret)? {
                    body::<$t $(, $s)?>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$t: $crate::kernels::common::Real $(, const $s: usize)?>($($arg: $ty),*) $(-> $ret)? {
                    body::<$t $(, $s)?>($($arg),*)
                }
                match $crate::kernels::common::simd_level() {
                    // SAFETY: the CPU has AVX-512F (checked by `simd_level`).
                    $crate::kernels::common::SimdLevel::Avx512 => return unsafe { avx512::<$t $(, $s)?>($($arg),*) },
                    // SAFETY: the CPU has AVX2 and FMA (checked by `simd_level`).
                    $crate::kernels::common::SimdLevel::Avx2 => return unsafe { avx2::<$t $(, $s)?>($($arg),*) },
                    $crate::kernels::common::SimdLevel::Baseline => {}
                }
            }
            body::<$t $(, $s)?>($($arg),*)
        }
    };
}
pub(super) use simd_fn;

/// Which build of a [`simd_fn!`] loop runs, from the narrowest to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Baseline = 1,
    Avx2 = 2,
    Avx512 = 3,
}

/// The widest build this CPU runs: AVX-512F, else AVX2 with FMA, else the baseline.
pub fn detected_simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return SimdLevel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Baseline
    })
}

/// The environment variable that caps the build [`simd_fn!`] loops run: `baseline` or `avx2`
/// (read once per process). Every build computes the same bits; the tests use it to hold each
/// build this CPU has to the references, in child processes.
pub const SIMD_CAP_VAR: &str = "BN_EXP_SIMD";

/// The build a [`simd_fn!`] loop runs: the detected one, no wider than [`SIMD_CAP_VAR`] says.
pub(super) fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var(SIMD_CAP_VAR).as_deref() {
            Ok("baseline") => SimdLevel::Baseline,
            Ok("avx2") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        detected_simd_level().min(cap)
    })
}

/// `src`, a row-major `[rows, cols]` matrix, written transposed into `dst` (`[cols, rows]`,
/// row-major): `dst[j·rows + i] = src[i·cols + j]`. Values are moved, never computed on.
///
/// Float32 on a CPU with AVX2 goes in 8×8 blocks of register shuffles
/// ([`transpose_8x8_f32_avx2`]); the rest (the edges of a side that is not a multiple of 8,
/// float64, other CPUs) is [`transpose_plain`], the reference the tests hold the fast path to.
pub(super) fn transpose_into<T: Real>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    assert!(
        src.len() == rows * cols && dst.len() == src.len(),
        "transpose: {rows} x {cols} does not match lengths {} and {}",
        src.len(),
        dst.len()
    );
    let mut done = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if T::dtype() == DType::F32 && simd_level() >= SimdLevel::Avx2 {
        let (s, d): (&[f32], &mut [f32]) =
            (bytemuck::cast_slice(src), bytemuck::cast_slice_mut(dst));
        done = (rows / 8 * 8, cols / 8 * 8);
        for i in (0..done.0).step_by(8) {
            for j in (0..done.1).step_by(8) {
                // SAFETY: the CPU has AVX2 (checked by `simd_level`); the block's 8 rows of 8
                // lie inside `s` (i + 8 ≤ rows, j + 8 ≤ cols) and inside `d` (transposed).
                unsafe {
                    transpose_8x8_f32_avx2(
                        s[i * cols + j..].as_ptr(),
                        cols,
                        d[j * rows + i..].as_mut_ptr(),
                        rows,
                    )
                };
            }
        }
    }
    // The edges: rows past the blocks (every column), then columns past them (the blocks' rows).
    transpose_plain(src, (done.0..rows, 0..cols), rows, cols, dst);
    transpose_plain(src, (0..done.0, done.1..cols), rows, cols, dst);
}

/// [`transpose_into`] one element at a time, on the `(rows, columns)` ranges of `src`.
fn transpose_plain<T: Real>(
    src: &[T],
    (rows_in, cols_in): (std::ops::Range<usize>, std::ops::Range<usize>),
    rows: usize,
    cols: usize,
    dst: &mut [T],
) {
    for i in rows_in {
        for j in cols_in.clone() {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
}

/// The 8×8 float32 block at `src` (rows `src_stride` floats apart) written transposed at `dst`
/// (rows `dst_stride` apart): pairs of rows interleaved, then pairs of pairs, then halves
/// swapped, the usual AVX2 transpose.
///
/// # Safety
/// The CPU has AVX2; 8 rows of 8 floats are readable at `src` and writable at `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8_f32_avx2(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps,
        _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    // SAFETY: the caller's contract: 8 rows of 8 floats at each end.
    unsafe {
        let r: [_; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let q = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for i in 0..4 {
            _mm256_storeu_ps(
                dst.add(i * dst_stride),
                _mm256_permute2f128_ps::<0x20>(q[i], q[i + 4]),
            );
            _mm256_storeu_ps(
                dst.add((i + 4) * dst_stride),
                _mm256_permute2f128_ps::<0x31>(q[i], q[i + 4]),
            );
        }
    }
}

/// How many of `got` differ from `want` in their bits (a NaN equals a NaN of the same bits,
/// +0 and −0 differ): the unit tests' check of a fast kernel against its plain form.
#[cfg(test)]
pub(super) fn differing_bits<T: Real>(got: &[T], want: &[T]) -> usize {
    assert_eq!(got.len(), want.len(), "lengths");
    got.iter()
        .zip(want)
        .filter(|(a, b)| bytemuck::bytes_of(*a) != bytemuck::bytes_of(*b))
        .count()
}

/// Deterministic values in [-1, 1) that use the whole mantissa, so that sums taken in another
/// order round differently: the kernels' unit tests' inputs.
#[cfg(test)]
pub(super) fn test_values<T: Real>(n: usize, seed: u64) -> Vec<T> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            T::from_f64(((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
        })
        .collect()
}

/// Lanes of [`lane_sum`]: one AVX-512 register of float32, two of AVX2.
pub(super) const LANES: usize = 16;

/// Σ f(u[i], v[i]) in `T` (u and v of one length), in a fixed order that vectorises: term i is
/// added to lane i mod [`LANES`], and the lanes are then added pairwise. A plain left-to-right
/// sum cannot vectorise (float addition is not associative, so the compiler keeps its order) and
/// ran one add every four cycles. The order depends only on the length, never on the thread
/// count or the CPU.
#[inline(always)]
pub(super) fn lane_sum<T: Real>(u: &[T], v: &[T], f: impl Fn(T, T) -> T) -> T {
    let [sum] = lane_sums(u, v, |x, y| [f(x, y)]);
    sum
}

/// `S` sums of [`lane_sum`] in one pass over u and v: Σ f(u[i], v[i])[s] for each s, each in
/// [`lane_sum`]'s order, so each has the bits [`lane_sum`] gives it alone. Why: BN's backward
/// needs Σ g and Σ g·(x − μ) over the same activations, memory-bound passes; one pass reads g
/// once instead of twice.
#[inline(always)]
pub(super) fn lane_sums<T: Real, const S: usize>(
    u: &[T],
    v: &[T],
    f: impl Fn(T, T) -> [T; S],
) -> [T; S] {
    assert_eq!(u.len(), v.len(), "lane_sum of two lengths");
    let mut acc = [[T::ZERO; LANES]; S];
    let (uc, vc) = (u.chunks_exact(LANES), v.chunks_exact(LANES));
    let (ur, vr) = (uc.remainder(), vc.remainder());
    for (uc, vc) in uc.zip(vc) {
        for (lane, (&x, &y)) in uc.iter().zip(vc).enumerate() {
            let terms = f(x, y);
            for (a, t) in acc.iter_mut().zip(terms) {
                a[lane] += t;
            }
        }
    }
    for (lane, (&x, &y)) in ur.iter().zip(vr).enumerate() {
        let terms = f(x, y);
        for (a, t) in acc.iter_mut().zip(terms) {
            a[lane] += t;
        }
    }
    acc.map(|mut lanes| {
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            let (lo, hi) = lanes.split_at_mut(width);
            for (a, &b) in lo.iter_mut().zip(&hi[..width]) {
                *a += b;
            }
        }
        lanes[0]
    })
}

/// A vector of `len` values that `write` initialises, without zeroing it first: allocating
/// zeroed memory and then overwriting all of it was a tenth of a CNN step (`memset`).
///
/// # Safety
/// `write` must initialise every element of the slice it is given.
pub(super) unsafe fn vec_written<T>(
    len: usize,
    write: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    write(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `write` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// `v` as the values it now holds.
///
/// # Safety
/// Every element of `v` must have been written.
pub(super) unsafe fn assume_written<T>(v: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: MaybeUninit<T> has T's layout, and the caller wrote every element.
    unsafe { &mut *(v as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A kernel's result converted to another float dtype: every tensor in it, and nothing else.
pub(super) trait InDtype: Sized {
    fn in_dtype(self, dtype: DType) -> Self;
}

impl InDtype for FlexTensor {
    fn in_dtype(self, dtype: DType) -> Self {
        FlexTensor::from_data(self.into_data().convert_dtype(dtype))
    }
}

/// Numbers a kernel keeps in f64 whatever its tensors' dtype (Weight Norm's column norms).
impl InDtype for Vec<f64> {
    fn in_dtype(self, _: DType) -> Self {
        self
    }
}

impl<T: InDtype> InDtype for Option<T> {
    fn in_dtype(self, dtype: DType) -> Self {
        self.map(|t| t.in_dtype(dtype))
    }
}

impl<T: InDtype, const N: usize> InDtype for [T; N] {
    fn in_dtype(self, dtype: DType) -> Self {
        self.map(|t| t.in_dtype(dtype))
    }
}

impl<A: InDtype, B: InDtype> InDtype for (A, B) {
    fn in_dtype(self, dtype: DType) -> Self {
        (self.0.in_dtype(dtype), self.1.in_dtype(dtype))
    }
}

impl<A: InDtype, B: InDtype, C: InDtype> InDtype for (A, B, C) {
    fn in_dtype(self, dtype: DType) -> Self {
        let (a, b, c) = self;
        (a.in_dtype(dtype), b.in_dtype(dtype), c.in_dtype(dtype))
    }
}

/// (N, C, inner) of a `[N, C, ...]` shape.
pub(super) fn split_shape(dims: &[usize]) -> (usize, usize, usize) {
    (dims[0], dims[1], dims[2..].iter().product())
}

/// The values of `t` as `T`, row-major: borrowed when `t` is contiguous and holds `T`, otherwise
/// a copy (made contiguous, and converted when `t` holds another dtype, as f16 does under
/// [`float_dispatch!`]).
pub(super) fn values<T: Real>(t: &FlexTensor) -> Cow<'_, [T]> {
    if t.dtype() != T::dtype() {
        let data = t.clone().into_data().convert_dtype(T::dtype());
        return Cow::Owned(
            data.try_into_vec::<T>()
                .expect("converted to the kernel's float"),
        );
    }
    match t.as_slice::<T>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<T>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// A Flex tensor of `shape` holding `v`.
pub(super) fn tensor_from<T: Real>(v: Vec<T>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// The body of every hand-written backward: takes the node's gradient ∂out, asks `grad(state,
/// ∂out, wanted)` for the inputs' gradients (`wanted[i]`: whether input i tracks one, so a kernel
/// can skip what nobody reads), and registers each one that is given for its input.
pub(super) fn backward_node<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    grad: impl FnOnce(S, FlexTensor, [bool; N]) -> [Option<FlexTensor>; N],
) {
    let g = grads.consume::<Flex>(&ops.node);
    let wanted = ops.parents.each_ref().map(Option::is_some);
    let results = grad(ops.state, g, wanted);
    for (parent, result) in ops.parents.into_iter().zip(results) {
        if let (Some(node), Some(result)) = (parent, result) {
            grads.register::<Flex>(node.id, result);
        }
    }
}

/// The backward of an op with one differentiable input, whose gradient is `grad(state, ∂out)`.
/// One type for the sigmoid, the max-pool and the loss, whose nodes differ only in that function.
pub(super) struct OneInputBackward<S> {
    grad: fn(S, FlexTensor) -> FlexTensor,
}

impl<S: Clone + Send + std::fmt::Debug + 'static> OneInputBackward<S> {
    pub(super) fn new(grad: fn(S, FlexTensor) -> FlexTensor) -> Self {
        Self { grad }
    }

    /// `out`, computed by the kernel from `input`, as an autodiff tensor whose node keeps
    /// `state` for the backward when `input` tracks a gradient.
    pub(super) fn record<C: CheckpointStrategy>(
        self,
        input: &FloatTensor<Autodiff<Flex, C>>,
        state: S,
        out: FlexTensor,
    ) -> FloatTensor<Autodiff<Flex, C>> {
        match self.prepare::<C>([input.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

impl<S> std::fmt::Debug for OneInputBackward<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneInputBackward")
    }
}

impl<S: Clone + Send + std::fmt::Debug + 'static> Backward<Flex, 1> for OneInputBackward<S> {
    type State = S;

    fn backward(self, ops: Ops<S, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads, |state, g, [wanted]| {
            [wanted.then(|| (self.grad)(state, g))]
        })
    }
}

#[cfg(test)]
mod tests {
    //! [`float_dispatch!`]'s third arm, which no other test reaches: a half-precision input runs
    //! the float32 kernel on its values, and every output and gradient comes back in its dtype.

    use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};

    use crate::kernels::{self, Act};

    /// Values in [-2, 2) that f16 holds exactly, so both sides start from the same numbers.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 64) as f32 - 32.0) / 16.0)
            .collect()
    }

    fn tensor<const D: usize>(v: &[f32], shape: [usize; D], dtype: DType) -> Tensor<D> {
        let options = TensorCreationOptions::new(Device::flex().autodiff()).with_dtype(dtype);
        Tensor::from_data(TensorData::new(v.to_vec(), shape), options).require_grad()
    }

    /// A tensor's values as f32, after rounding them to f16 (a no-op for an f16 tensor).
    fn as_f16_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        let data = t.into_data().convert_dtype(DType::F16);
        data.convert_dtype(DType::F32)
            .try_into_vec::<f32>()
            .unwrap()
    }

    /// Runs `op` on f16 inputs and on the same values in f32. The f16 outputs must be the f32
    /// ones rounded to f16, and the gradients of Σ outputs f16 tensors within f16's rounding of
    /// the f32 ones (not equal: what a kernel saves for its backward, such as BN's statistics, is
    /// rounded to f16 too). Each input feeds one op once (and reshapes), so that no gradient is
    /// summed in f16 on one side and in f32 on the other.
    fn assert_half_is_single_rounded<const D: usize>(
        inputs: &[(Vec<f32>, [usize; D])],
        op: impl Fn(&[Tensor<D>]) -> Vec<Tensor<D>>,
    ) {
        let run = |dtype| {
            let xs: Vec<Tensor<D>> = inputs.iter().map(|(v, s)| tensor(v, *s, dtype)).collect();
            let outs = op(&xs);
            let loss = outs.iter().map(|o| o.clone().sum()).reduce(|a, b| a + b);
            let grads = loss.unwrap().backward();
            let grads: Vec<Tensor<D>> = xs.iter().map(|x| x.grad(&grads).unwrap()).collect();
            for t in outs.iter().chain(&grads) {
                assert_eq!(t.dtype(), dtype, "an output or gradient changed dtype");
            }
            let outs: Vec<Vec<f32>> = outs.into_iter().map(as_f16_values).collect();
            (
                outs,
                grads.into_iter().map(as_f16_values).collect::<Vec<_>>(),
            )
        };
        let (half, single) = (run(DType::F16), run(DType::F32));
        assert_eq!(half.0, single.0, "outputs");
        for (h, s) in half.1.iter().flatten().zip(single.1.iter().flatten()) {
            assert!(
                (h - s).abs() <= 4e-3 * s.abs().max(1.0),
                "gradient {h} vs {s}"
            );
        }
    }

    /// The values of `len` inputs, each `[rows, cols]`, drawn with seeds from `seed` on.
    fn matrices(shapes: &[[usize; 2]], seed: usize) -> Vec<(Vec<f32>, [usize; 2])> {
        let draw = |(i, s): (usize, &[usize; 2])| (values(s[0] * s[1], seed + i), *s);
        shapes.iter().enumerate().map(draw).collect()
    }

    #[test]
    fn half_precision_inputs_run_in_float32_and_come_back_in_their_dtype() {
        let row = |t: &Tensor<2>| t.clone().reshape([4]);
        let bn = matrices(&[[3, 4], [1, 4], [1, 4]], 1);
        assert_half_is_single_rounded(&bn, |t| {
            vec![kernels::batch_norm_train_fused(t[0].clone(), row(&t[1]), row(&t[2]), 1e-5).output]
        });
        assert_half_is_single_rounded(&matrices(&[[3, 4]], 4), |t| {
            vec![kernels::sigmoid(t[0].clone())]
        });
        assert_half_is_single_rounded(&matrices(&[[3, 4], [1, 4]], 5), |t| {
            vec![kernels::weight_norm_columns(t[0].clone(), row(&t[1]))]
        });
        assert_half_is_single_rounded(&matrices(&[[3, 4], [1, 4]], 7), |t| {
            vec![kernels::center_columns(t[0].clone(), row(&t[1])).0]
        });
        assert_half_is_single_rounded(&matrices(&[[3, 4]], 9), |t| {
            let targets = t[0].clone().detach().mul_scalar(0.0).add_scalar(0.25);
            vec![kernels::cross_entropy(t[0].clone(), targets).reshape([1, 1])]
        });
        let dense = matrices(&[[3, 4], [4, 5], [1, 5], [1, 5], [1, 5]], 10);
        assert_half_is_single_rounded(&dense, |t| {
            let (bias, gamma, beta) = (t[2].clone(), t[3].clone(), t[4].clone());
            let bn = Some((gamma.reshape([5]), beta.reshape([5]), 1e-5));
            let out = kernels::dense(
                t[0].clone(),
                t[1].clone(),
                Some(bias.reshape([5])),
                bn,
                Act::Tanh,
            );
            vec![out.output]
        });
        let images = [(values(2 * 2 * 5 * 4, 15), [2, 2, 5, 4])];
        assert_half_is_single_rounded(&images, |t| {
            vec![kernels::max_pool2x2_then(t[0].clone(), Act::Relu)]
        });
        let parts = [images[0].clone(), (values(2 * 5 * 4, 17), [2, 1, 5, 4])];
        assert_half_is_single_rounded(&parts, |t| {
            let acts = [Act::Sigmoid, Act::Relu];
            vec![kernels::concat_channels(t[0].clone(), t[1].clone(), acts)]
        });
        let conv = [images[0].clone(), (values(3 * 2 * 3 * 3, 16), [3, 2, 3, 3])];
        assert_half_is_single_rounded(&conv, |t| {
            vec![kernels::conv3x3(t[0].clone(), t[1].clone(), None)]
        });
    }
}

#[cfg(test)]
mod transpose_tests {
    //! [`super::transpose_into`]'s register blocks against [`super::transpose_plain`], on sides
    //! that are and are not multiples of the block's 8.

    use super::{transpose_into, transpose_plain};

    #[test]
    fn the_block_transpose_moves_every_value_where_the_plain_one_does() {
        for (rows, cols) in [
            (8, 8),
            (16, 24),
            (12, 225),
            (44, 49),
            (3, 5),
            (64, 256),
            (9, 17),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let mut fast = vec![f32::NAN; src.len()];
            let mut plain = vec![f32::NAN; src.len()];
            transpose_into(&src, rows, cols, &mut fast);
            transpose_plain(&src, (0..rows, 0..cols), rows, cols, &mut plain);
            assert_eq!(
                fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{rows} x {cols}"
            );
            let f64s: Vec<f64> = src.iter().map(|&v| f64::from(v)).collect();
            let mut t = vec![f64::NAN; src.len()];
            transpose_into(&f64s, rows, cols, &mut t);
            assert!(
                t.iter().zip(&plain).all(|(&a, &b)| a == f64::from(b)),
                "f64 {rows} x {cols}"
            );
        }
    }
}
