//! Two maps joined along the channels, each through its own nonlinearity, as one op parallel
//! over images: how the Inception's modules end (`crate::model::inception`).
//!
//! ```text
//! a: [N, C_a, H, W], b: [N, C_b, H, W]  →  y: [N, C_a + C_b, H, W]
//! y[n]  = [ g_a(a[n]) ; g_b(b[n]) ]
//! ∂a[n] = ∂y[n, ..C_a] · g_a'        ∂b[n] = ∂y[n, C_a..] · g_b'      (g' from the saved y)
//! ```
//!
//! Why: Burn's `cat`, ReLU and ReLU's backward run on the thread that calls them, while the
//! other cores wait. In a two-thread Inception step they were about a third of what that thread
//! ran alone (`perf record` by thread; docs/performance.md). Here each image is one task, and
//! each value is read once and written once in each direction.
//!
//! The values and gradients have the bits of the ops they replace, so that a net computes the
//! same numbers through either: Flex's `cat`; Flex's `relu` and `relu_backward` (a value ≤ 0
//! becomes +0, a NaN stays a NaN and passes its gradient on); bn-exp's `sigmoid` with Flex's
//! `sigmoid_backward`, ∂y·s·(1 − s). Tanh is computed in float64 as the dense layer does, with
//! ∂y·(1 − y²); it is held to its reference within the float64 tolerance only.

use std::mem::MaybeUninit;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::common::{
    Real, assume_written, backward_node, float_dispatch, simd_fn, tensor_from, values, vec_written,
};
use super::dense::{Act, activate, activation_reference};
use super::sigmoid::SigmoidInPlace;

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedConcat: Backend {
    /// `[N, C_a, H, W]` and `[N, C_b, H, W]` → `[N, C_a + C_b, H, W]`: `act_a` of the first
    /// and `act_b` of the second, one after the other along the channels.
    ///
    /// This default body is `concat_channels_reference`; Flex overrides it with the kernel
    /// below.
    fn concat_channels(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        act_a: Act,
        act_b: Act,
    ) -> FloatTensor<Self> {
        concat_channels_reference::<Self>(a, b, act_a, act_b)
    }
}

/// The reference for [`FusedConcat`], the ops it replaces: each input through its nonlinearity
/// (`dense::activation_reference`), then Burn's `cat` along the channels.
pub(crate) fn concat_channels_reference<B: Backend>(
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    act_a: Act,
    act_b: Act,
) -> FloatTensor<B> {
    let a = activation_reference::<B>(a, act_a);
    let b = activation_reference::<B>(b, act_b);
    B::float_cat(vec![a, b], 1)
}

/// `[g_a(a); g_b(b)]` along the channels, for `acts = [g_a, g_b]` (see the module's notes).
/// Panics unless the two maps have the same batch size, height and width.
pub fn concat_channels(a: Tensor<4>, b: Tensor<4>, [act_a, act_b]: [Act; 2]) -> Tensor<4> {
    let ([na, _, ha, wa], [nb, _, hb, wb]) = (a.dims(), b.dims());
    assert!(
        (na, ha, wa) == (nb, hb, wb),
        "concat_channels: maps of {na} x {ha}x{wa} and {nb} x {hb}x{wb} images"
    );
    Tensor::from_dispatch(<Dispatch as FusedConcat>::concat_channels(
        a.into_dispatch(),
        b.into_dispatch(),
        act_a,
        act_b,
    ))
}

simd_fn! {
    /// y = x, or ReLU(x) for `Act::Relu` (Flex's: a value ≤ 0 becomes +0, a NaN stays).
    fn copy_run<T: Real>(x: &[T], y: &mut [MaybeUninit<T>], act: Act) {
        let pairs = y.iter_mut().zip(x);
        if act == Act::Relu {
            pairs.for_each(|(y, &x)| {
                y.write(if x <= T::ZERO { T::ZERO } else { x });
            });
        } else {
            pairs.for_each(|(y, &x)| {
                y.write(x);
            });
        }
    }
}

simd_fn! {
    /// ∂x = ∂y · g'(x) from the saved output y = g(x): Flex's `relu_backward` (∂y where y > 0
    /// or y is a NaN, else +0) and `sigmoid_backward` (∂y·s·(1 − s)), and ∂y·(1 − y²) for tanh.
    fn grad_run<T: Real>(y: &[T], g: &[T], d: &mut [MaybeUninit<T>], act: Act) {
        let one = T::from_f64(1.0);
        let each = d.iter_mut().zip(y.iter().zip(g));
        match act {
            Act::Identity => each.for_each(|(d, (_, &g))| {
                d.write(g);
            }),
            Act::Relu => each.for_each(|(d, (&y, &g))| {
                d.write(if y <= T::ZERO { T::ZERO } else { g });
            }),
            Act::Sigmoid => each.for_each(|(d, (&s, &g))| {
                d.write(g * s * (one - s));
            }),
            Act::Tanh => each.for_each(|(d, (&y, &g))| {
                d.write(g * (one - y * y));
            }),
        }
    }
}

/// g(x) written into `y`: ReLU and the identity in one pass, the others in place after a copy.
fn activate_into<T: Real + SigmoidInPlace>(x: &[T], y: &mut [MaybeUninit<T>], act: Act) {
    copy_run(x, y, act);
    if matches!(act, Act::Sigmoid | Act::Tanh) {
        // SAFETY: `copy_run` wrote every element.
        activate(unsafe { assume_written(y) }, act);
    }
}

/// The shape of the op: images, and each input's values per image.
#[derive(Debug, Clone, Copy)]
struct Parts {
    n: usize,
    per_image: [usize; 2],
}

impl Parts {
    /// From the two inputs' shapes, `[N, C, H, W]` each.
    fn of(a: &[usize], b: &[usize]) -> Self {
        let per_image = |dims: &[usize]| dims[1..].iter().product();
        Parts {
            n: a[0],
            per_image: [per_image(a), per_image(b)],
        }
    }

    /// Values per image of the output.
    fn image(self) -> usize {
        self.per_image[0] + self.per_image[1]
    }

    /// Where input `part`'s values start within an image of the output, and how many there are.
    fn within_image(self, part: usize) -> (usize, usize) {
        let [a, b] = self.per_image;
        if part == 0 { (0, a) } else { (a, b) }
    }
}

fn forward<T: Real + SigmoidInPlace>(a: &[T], b: &[T], p: Parts, acts: [Act; 2]) -> Vec<T> {
    let [la, lb] = p.per_image;
    // SAFETY: each image's task writes its whole chunk, the first `la` values from `a` and the
    // rest from `b`; the chunks cover the output.
    unsafe {
        vec_written(p.n * p.image(), |y| {
            y.par_chunks_mut(p.image().max(1))
                .enumerate()
                .for_each(|(i, y)| {
                    let (ya, yb) = y.split_at_mut(la);
                    activate_into(&a[i * la..][..la], ya, acts[0]);
                    activate_into(&b[i * lb..][..lb], yb, acts[1]);
                });
        })
    }
}

/// Input `part`'s gradient: its channels of each image's ∂y, through g'.
fn input_grad<T: Real>(y: &[T], g: &[T], p: Parts, part: usize, act: Act) -> Vec<T> {
    let (skip, len) = p.within_image(part);
    // SAFETY: each image's task writes its whole chunk of `len` values.
    unsafe {
        vec_written(p.n * len, |d| {
            d.par_chunks_mut(len.max(1)).enumerate().for_each(|(i, d)| {
                let at = i * p.image() + skip;
                grad_run(&y[at..][..len], &g[at..][..len], d, act);
            });
        })
    }
}

/// What the backward keeps: the output (for g'; in the inputs' dtype), the inputs' shapes and
/// the nonlinearities.
#[derive(Debug, Clone)]
struct Saved {
    output: FlexTensor,
    dims: [Vec<usize>; 2],
    acts: [Act; 2],
}

fn flex_forward(a: &FlexTensor, b: &FlexTensor, acts: [Act; 2]) -> FlexTensor {
    let (da, db) = (a.layout().shape(), b.layout().shape());
    let p = Parts::of(da, db);
    let mut shape = da.to_vec();
    shape[1] += db[1];
    float_dispatch!(a.dtype(), |T| {
        tensor_from(forward::<T>(&values(a), &values(b), p, acts), shape)
    })
}

fn flex_backward(s: &Saved, g: &FlexTensor, wanted: [bool; 2]) -> [Option<FlexTensor>; 2] {
    let p = Parts::of(&s.dims[0], &s.dims[1]);
    float_dispatch!(s.output.dtype(), |T| {
        let (y, g) = (values::<T>(&s.output), values::<T>(g));
        let part = |i: usize| {
            wanted[i].then(|| tensor_from(input_grad(&y, &g, p, i, s.acts[i]), s.dims[i].clone()))
        };
        [part(0), part(1)]
    })
}

impl FusedConcat for Flex {
    fn concat_channels(a: FlexTensor, b: FlexTensor, act_a: Act, act_b: Act) -> FlexTensor {
        flex_forward(&a, &b, [act_a, act_b])
    }
}

#[derive(Debug)]
struct ConcatBackward;

impl Backward<Flex, 2> for ConcatBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads, |saved, g, wanted| {
            flex_backward(&saved, &g, wanted)
        })
    }
}

impl<C: CheckpointStrategy> FusedConcat for Autodiff<Flex, C> {
    fn concat_channels(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        act_a: Act,
        act_b: Act,
    ) -> FloatTensor<Self> {
        let y = flex_forward(a.primitive(), b.primitive(), [act_a, act_b]);
        match ConcatBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    output: y.clone(),
                    dims: [
                        a.primitive().layout().shape().to_vec(),
                        b.primitive().layout().shape().to_vec(),
                    ],
                    acts: [act_a, act_b],
                };
                prep.finish(saved, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;
    use burn::tensor::{Device, TensorData};

    /// `n` values that try every branch of ReLU (±0, NaN, ±∞, denormals) among random ones.
    fn inputs(n: usize, seed: u64) -> Vec<f32> {
        let special = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            -1e-40,
        ];
        let mut v = super::super::common::test_values::<f32>(n, seed);
        for (i, s) in special.into_iter().enumerate() {
            v[i * 5 % n] = s;
        }
        v
    }

    fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        let v: Vec<f32> = t.into_data().try_to_vec().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    /// g as the Inception applies it op by op: Burn's `relu`, bn-exp's `sigmoid`.
    fn g_op_by_op(x: Tensor<4>, act: Act) -> Tensor<4> {
        match act {
            Act::Relu => relu(x),
            Act::Sigmoid => super::super::sigmoid(x),
            _ => x,
        }
    }

    /// For ReLU and the sigmoid on both parts, and on the first only (the downsample modules),
    /// the op's output and both inputs' gradients have the bits of g op by op then Burn's
    /// `cat`, and their backwards: NaNs, signed zeros and infinities included, in the values
    /// and in ∂y.
    #[test]
    fn concat_channels_has_the_bits_of_g_then_burns_cat() {
        let device = Device::flex().autodiff();
        let (sa, sb) = ([3, 2, 5, 7], [3, 4, 5, 7]);
        let (xa, xb) = (inputs(3 * 2 * 35, 1), inputs(3 * 4 * 35, 2));
        let mut up = super::super::common::test_values::<f32>(3 * 6 * 35, 3);
        up[7] = f32::NAN;
        up[11] = -0.0;
        for g in [Act::Relu, Act::Sigmoid] {
            for act_b in [g, Act::Identity] {
                let run = |fast: bool| {
                    let tensor = |x: &[f32], shape| {
                        Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &device)
                            .require_grad()
                    };
                    let (a, b) = (tensor(&xa, sa), tensor(&xb, sb));
                    let y = if fast {
                        concat_channels(a.clone(), b.clone(), [g, act_b])
                    } else {
                        let parts = vec![g_op_by_op(a.clone(), g), g_op_by_op(b.clone(), act_b)];
                        Tensor::cat(parts, 1)
                    };
                    let w =
                        Tensor::<4>::from_data(TensorData::new(up.clone(), [3, 6, 5, 7]), &device);
                    let grads = (y.clone() * w).sum().backward();
                    [
                        bits(y.detach()),
                        bits(a.grad(&grads).unwrap()),
                        bits(b.grad(&grads).unwrap()),
                    ]
                };
                let (fast, op_by_op) = (run(true), run(false));
                for (k, what) in ["outputs", "da", "db"].iter().enumerate() {
                    assert_eq!(
                        fast[k], op_by_op[k],
                        "{what} differ ({g:?}, then {act_b:?})"
                    );
                }
            }
        }
    }
}
