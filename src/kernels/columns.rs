//! Two per-column ops on `[R, C]` matrices that the MLP's normalisation layers beside BN run at
//! every step, each as one op with a closed-form backward:
//!
//! - [`weight_norm_columns`]: Weight Norm's w = g·v/‖v‖ on a linear weight `[in, out]` (Burn's
//!   layout), the norm taken down each column (one output unit):
//!
//!   ```text
//!   n_o = √(Σ_i v_io²)     w_io = g_o·v_io/n_o
//!   ∂g_o  = Σ_i ∂w_io·v_io / n_o
//!   ∂v_io = (g_o/n_o)·(∂w_io − v_io·(Σ_i ∂w_io·v_io)/n_o²)
//!   ```
//!
//! - [`center_columns`]: mean-only BN on `[N, C]`, y = x − μ_B + β:
//!
//!   ```text
//!   μ_B,c = (1/N) Σ_n x_nc      y_nc = x_nc − μ_B,c + β_c
//!   ∂x_nc = ∂y_nc − (1/N) Σ_n ∂y_nc      ∂β_c = Σ_n ∂y_nc
//!   ```
//!
//! Why: op by op, each is five or six autodiff nodes with their own buffers (square, sum, sqrt,
//! divide, multiply; mean, subtract, add), which made Weight Norm's step of the paper's MLP 1.33×
//! BN's and mean-only BN's 1.51×. Each kernel reads its input twice forward and twice backward,
//! row by row so the column loops vectorise, summing in f64. The references beside them
//! (`*_reference`) are the same formulas in Burn's ops; `tests/kernels.rs` holds the two together.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, Shape, TensorMetadata, backend_extension};
use burn::tensor::Tensor;

use super::common::{Real, backward_node, float_dispatch, tensor_from, values};

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedColumns: Backend {
    /// w = g·v/‖v‖ per column of `v` `[R, C]`, with `g` `[C]`.
    ///
    /// This default body is `weight_norm_columns_reference`; Flex overrides it with the kernel.
    fn weight_norm_columns(v: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        weight_norm_columns_reference::<Self>(v, g)
    }

    /// (y, μ_B): y = x − μ_B + β per column of `x` `[N, C]`; μ_B `[C]` detached.
    ///
    /// This default body is `center_columns_reference`; Flex overrides it with the kernel.
    fn center_columns(
        x: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        center_columns_reference::<Self>(x, beta)
    }
}

/// The reference for [`FusedColumns::weight_norm_columns`], in Burn's ops:
/// `v · reshape(g, [1, C]) / √(sum_dim(v·v, 0))`.
pub(crate) fn weight_norm_columns_reference<B: Backend>(
    v: FloatTensor<B>,
    g: FloatTensor<B>,
) -> FloatTensor<B> {
    let c = v.shape()[1];
    let norms = B::float_sqrt(B::float_sum_dim(B::float_mul(v.clone(), v.clone()), 0));
    let scale = B::float_div(B::float_reshape(g, Shape::new([1, c])), norms);
    B::float_mul(v, scale)
}

/// The reference for [`FusedColumns::center_columns`], in Burn's ops:
/// `x − mean_dim(x, 0) + reshape(β, [1, C])`, and the mean detached.
pub(crate) fn center_columns_reference<B: Backend>(
    x: FloatTensor<B>,
    beta: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let c = x.shape()[1];
    let mean = B::float_mean_dim(x.clone(), 0);
    let y = B::float_add(
        B::float_sub(x, mean.clone()),
        B::float_reshape(beta, Shape::new([1, c])),
    );
    let mean = B::float_reshape(B::float_detach(mean), Shape::new([c]));
    (y, mean)
}

/// Weight Norm's w = g·v/‖v‖ per column of a linear weight `[in, out]`, as one op.
pub fn weight_norm_columns(v: Tensor<2>, g: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedColumns>::weight_norm_columns(
        v.into_dispatch(),
        g.into_dispatch(),
    ))
}

/// Mean-only BN on `[N, C]` as one op: (x − μ_B + β, μ_B).
pub fn center_columns(x: Tensor<2>, beta: Tensor<1>) -> (Tensor<2>, Tensor<1>) {
    let (y, mean) =
        <Dispatch as FusedColumns>::center_columns(x.into_dispatch(), beta.into_dispatch());
    (Tensor::from_dispatch(y), Tensor::from_dispatch(mean))
}

/// The references at tensor level, for the tests.
pub(crate) fn weight_norm_columns_reference_tensors(v: Tensor<2>, g: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(weight_norm_columns_reference::<Dispatch>(
        v.into_dispatch(),
        g.into_dispatch(),
    ))
}

pub(crate) fn center_columns_reference_tensors(
    x: Tensor<2>,
    beta: Tensor<1>,
) -> (Tensor<2>, Tensor<1>) {
    let (y, mean) = center_columns_reference::<Dispatch>(x.into_dispatch(), beta.into_dispatch());
    (Tensor::from_dispatch(y), Tensor::from_dispatch(mean))
}

fn dims2(t: &FlexTensor) -> (usize, usize) {
    let shape = t.layout().shape().to_vec();
    assert!(
        shape.len() == 2,
        "a per-column op takes [R, C], got {shape:?}"
    );
    (shape[0], shape[1])
}

/// Σ_i a_ic·b_ic down each column of two row-major `[R, C]` matrices. Row by row with zipped
/// slices, so the inner loop vectorises; partial sums of [`BLOCK`] rows are kept in `T` and
/// added into f64, which bounds float32's rounding to that of a 16-term sum.
fn column_dots<T: Real>(a: &[T], b: &[T], c: usize) -> Vec<f64> {
    let mut sums = vec![0.0f64; c];
    let mut block = vec![T::ZERO; c];
    for (ra, rb) in a.chunks(BLOCK * c).zip(b.chunks(BLOCK * c)) {
        block.fill(T::ZERO);
        for (xa, xb) in ra.chunks_exact(c).zip(rb.chunks_exact(c)) {
            for ((s, &x), &y) in block.iter_mut().zip(xa).zip(xb) {
                *s += x * y;
            }
        }
        for (s, &p) in sums.iter_mut().zip(&block) {
            *s += p.to_f64();
        }
    }
    sums
}

/// Rows summed in `T` before their total joins the f64 sum, in [`column_dots`].
const BLOCK: usize = 16;

/// Σ_i a_ic down each column, in f64.
fn column_sums<T: Real>(a: &[T], c: usize) -> Vec<f64> {
    let mut sums = vec![0.0f64; c];
    for row in a.chunks_exact(c) {
        for (s, &x) in sums.iter_mut().zip(row) {
            *s += x.to_f64();
        }
    }
    sums
}

/// Each row of `a` `[R, C]` combined with per-column values by `f`, into a new matrix.
fn map_rows<T: Real>(a: &[T], cols: &[T], f: impl Fn(T, T) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len());
    for row in a.chunks_exact(cols.len()) {
        out.extend(row.iter().zip(cols).map(|(&x, &k)| f(x, k)));
    }
    out
}

/// (w, n): w = g·v/n per column, and the column norms n.
fn wn_forward<T: Real>(v: &[T], g: &[T], c: usize) -> (Vec<T>, Vec<f64>) {
    let norms: Vec<f64> = column_dots(v, v, c).into_iter().map(f64::sqrt).collect();
    let scale: Vec<T> = (0..c)
        .map(|j| T::from_f64(g[j].to_f64() / norms[j]))
        .collect();
    (map_rows(v, &scale, |a, s| a * s), norms)
}

/// (∂v, ∂g) from ∂w, v, g and the forward's column norms.
fn wn_backward<T: Real>(v: &[T], g: &[T], norms: &[f64], dw: &[T], c: usize) -> (Vec<T>, Vec<T>) {
    let dots = column_dots(dw, v, c);
    let dg: Vec<T> = (0..c).map(|j| T::from_f64(dots[j] / norms[j])).collect();
    let scale: Vec<T> = (0..c)
        .map(|j| T::from_f64(g[j].to_f64() / norms[j]))
        .collect();
    let along: Vec<T> = (0..c)
        .map(|j| T::from_f64(dots[j] / (norms[j] * norms[j])))
        .collect();
    let mut dv = Vec::with_capacity(v.len());
    for (vrow, drow) in v.chunks_exact(c).zip(dw.chunks_exact(c)) {
        dv.extend(
            vrow.iter()
                .zip(drow)
                .zip(scale.iter().zip(&along))
                .map(|((&vv, &d), (&s, &k))| s * (d - vv * k)),
        );
    }
    (dv, dg)
}

/// (y, μ_B) of mean-only BN.
fn center_forward<T: Real>(x: &[T], beta: &[T], n: usize, c: usize) -> (Vec<T>, Vec<T>) {
    let mean: Vec<T> = column_sums(x, c)
        .into_iter()
        .map(|s| T::from_f64(s / n as f64))
        .collect();
    let shift: Vec<T> = (0..c).map(|j| beta[j] - mean[j]).collect();
    (map_rows(x, &shift, |a, s| a + s), mean)
}

/// (∂x, ∂β) of mean-only BN from ∂y.
fn center_backward<T: Real>(dy: &[T], n: usize, c: usize) -> (Vec<T>, Vec<T>) {
    let sums = column_sums(dy, c);
    let mean: Vec<T> = sums.iter().map(|s| T::from_f64(s / n as f64)).collect();
    (
        map_rows(dy, &mean, |a, m| a - m),
        sums.into_iter().map(T::from_f64).collect(),
    )
}

/// (w, column norms) on Flex tensors.
fn flex_wn_forward(v: &FlexTensor, g: &FlexTensor) -> (FlexTensor, Vec<f64>) {
    let (r, c) = dims2(v);
    float_dispatch!(v.dtype(), |T| {
        let (w, norms) = wn_forward::<T>(&values(v), &values(g), c);
        (tensor_from(w, vec![r, c]), norms)
    })
}

/// (∂v, ∂g) on Flex tensors.
fn flex_wn_backward(
    v: &FlexTensor,
    g: &FlexTensor,
    norms: &[f64],
    dw: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let (r, c) = dims2(v);
    float_dispatch!(v.dtype(), |T| {
        let (dv, dg) = wn_backward::<T>(&values(v), &values(g), norms, &values(dw), c);
        (tensor_from(dv, vec![r, c]), tensor_from(dg, vec![c]))
    })
}

/// (y, μ_B) on Flex tensors.
fn flex_center_forward(x: &FlexTensor, beta: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (n, c) = dims2(x);
    float_dispatch!(x.dtype(), |T| {
        let (y, mean) = center_forward::<T>(&values(x), &values(beta), n, c);
        (tensor_from(y, vec![n, c]), tensor_from(mean, vec![c]))
    })
}

/// (∂x, ∂β) on Flex tensors.
fn flex_center_backward(dy: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (n, c) = dims2(dy);
    float_dispatch!(dy.dtype(), |T| {
        let (dx, dbeta) = center_backward::<T>(&values(dy), n, c);
        (tensor_from(dx, vec![n, c]), tensor_from(dbeta, vec![c]))
    })
}

impl FusedColumns for Flex {
    fn weight_norm_columns(v: FlexTensor, g: FlexTensor) -> FlexTensor {
        flex_wn_forward(&v, &g).0
    }

    fn center_columns(x: FlexTensor, beta: FlexTensor) -> (FlexTensor, FlexTensor) {
        flex_center_forward(&x, &beta)
    }
}

/// Weight Norm's node: it keeps v, g and the column norms.
#[derive(Debug)]
struct WeightNormBackward;

impl Backward<Flex, 2> for WeightNormBackward {
    type State = (FlexTensor, FlexTensor, Vec<f64>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads, |(v, g, norms), dw, _| {
            let (dv, dg) = flex_wn_backward(&v, &g, &norms, &dw);
            [Some(dv), Some(dg)]
        })
    }
}

/// Mean-only BN's node: its backward needs nothing but ∂y.
#[derive(Debug)]
struct CenterBackward;

impl Backward<Flex, 2> for CenterBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads, |(), dy, _| {
            let (dx, dbeta) = flex_center_backward(&dy);
            [Some(dx), Some(dbeta)]
        })
    }
}

impl<C: CheckpointStrategy> FusedColumns for Autodiff<Flex, C> {
    fn weight_norm_columns(v: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let (w, norms) = flex_wn_forward(v.primitive(), g.primitive());
        match WeightNormBackward
            .prepare::<C>([v.node(), g.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (v.into_primitive(), g.into_primitive(), norms);
                prep.finish(state, w)
            }
            OpsKind::UnTracked(prep) => prep.finish(w),
        }
    }

    fn center_columns(
        x: FloatTensor<Self>,
        beta: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, mean) = flex_center_forward(x.primitive(), beta.primitive());
        let mean = FloatTensor::<Self>::new(mean);
        let y = match CenterBackward
            .prepare::<C>([x.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, mean)
    }
}
