//! One fully connected layer as one op: `z = x·W + b`, then (optionally) training-mode BN, then
//! the nonlinearity, with a hand-written backward.
//!
//! ```text
//! z   = x·W + b               x: [N, K], W: [K, M] (Burn's Linear layout), b: [M] or none
//! pre = BN(z) or z            BN with the batch's statistics (Algorithm 1), `super::batch_norm`
//! a   = g(pre)                g: identity, sigmoid, ReLU or tanh
//!
//! backward, from ∂a:
//! ∂pre = ∂a · g'(pre)         from the saved a: σ' = a(1 − a), tanh' = 1 − a², ReLU' = [a > 0]
//! ∂z, ∂γ, ∂β                  BN's closed form (`super::batch_norm`), or ∂z = ∂pre without BN
//! ∂b = Σ_rows ∂z      ∂W = xᵀ·∂z      ∂x = ∂z·Wᵀ (only when x needs it)
//! ```
//!
//! Why: built from Burn's ops, one MLP layer is a matmul, a broadcast bias add, BN and the
//! sigmoid: four autodiff nodes, each with its own output buffer, and a backward that walks them
//! one by one. For the paper's net (batch 60) that bookkeeping cost as much as the arithmetic.
//! Here the bias is added by the matrix product itself (its output starts as the broadcast bias),
//! the nonlinearity's derivative is folded into the first backward pass, and the products call
//! `gemm` directly (see `super::gemm` for how the big ones use a second thread).
//!
//! The op also returns `pre` (the input to g, which Figure 1 tracks) and BN's batch mean and
//! biased variance, as constants outside the graph: they feed the trace and the running averages.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, Shape, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorCreationOptions};

use super::batch_norm::{self, batch_norm_train_reference, channel_sums};
use super::common::{Real, backward_node, float_dispatch, tensor_from, values};
use super::gemm::{Operand, gemm_into};
use super::sigmoid::SigmoidInPlace;

/// The nonlinearity a [`dense`] layer applies after its affine map (and BN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Sigmoid,
    Relu,
    Tanh,
}

/// What a [`dense`] call computes besides `x·W`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseSpec {
    pub act: Act,
    pub bias: bool,
    /// `Some(ε)` for training-mode BN between the affine map and the nonlinearity.
    pub bn_eps: Option<f64>,
}

#[backend_extension(Autodiff, Flex, Cube: cfg(feature = "gpu"))]
pub trait FusedDense: Backend {
    /// Returns (a, pre, batch mean, biased batch variance); the last two are empty without BN.
    /// `bias`, `gamma` and `beta` are ignored (pass empty tensors) where `spec` does not use them.
    ///
    /// This default body is `dense_reference`; Flex overrides it with the fast kernel below.
    /// (The tuple is spelled out, not `DenseTensors`: `#[backend_extension]` reads it to wrap
    /// each output, and would take an alias for a struct of its own.)
    fn fused_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: DenseSpec,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        dense_reference::<Self>(x, weight, bias, gamma, beta, spec)
    }
}

/// The four outputs of [`FusedDense::fused_dense`] on backend `B`.
type DenseTensors<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

/// The reference for [`FusedDense`], op by op with Burn's backend ops, so that autodiff records
/// (and differentiates) each one:
///
/// ```text
/// z   = x·W + b                   float_matmul, then float_add of b as a [1, M] row
/// pre = BN(z) or z                batch_norm_train_reference (Burn's batch_norm_train)
/// a   = g(pre)                    activation_reference
/// ```
///
/// Returns (a, pre, μ_B, σ²_B) as the fast op does: `pre` and the statistics detached, and the
/// statistics empty (`[0]`, in x's dtype) without BN.
pub(crate) fn dense_reference<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    spec: DenseSpec,
) -> DenseTensors<B> {
    let (device, dtype) = (x.device(), x.dtype());
    let mut z = B::float_matmul(x, weight);
    if spec.bias {
        let m = bias.shape()[0];
        z = B::float_add(z, B::float_reshape(bias, Shape::new([1, m])));
    }
    let (pre, mean, var) = match spec.bn_eps {
        Some(eps) => batch_norm_train_reference::<B>(z, gamma, beta, eps),
        None => {
            let empty = || B::float_zeros(Shape::new([0]), &device, dtype.into());
            (z, empty(), empty())
        }
    };
    let a = activation_reference::<B>(pre.clone(), spec.act);
    (a, B::float_detach(pre), mean, var)
}

/// The reference for g: Burn's own sigmoid, ReLU and tanh.
pub(super) fn activation_reference<B: Backend>(x: FloatTensor<B>, act: Act) -> FloatTensor<B> {
    match act {
        Act::Identity => x,
        Act::Sigmoid => B::sigmoid(x),
        Act::Relu => B::relu(x),
        Act::Tanh => B::float_tanh(x),
    }
}

/// Outputs of [`dense`].
pub struct DenseOutput {
    /// g(pre), `[N, M]`: the only output gradients flow through.
    pub output: Tensor<2>,
    /// The input to g, `[N, M]`, detached.
    pub pre: Tensor<2>,
    /// BN's μ_B and biased σ²_B, `[M]`, detached (empty without BN).
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
}

/// `g(BN(x·W + b))` as one op. `bn` is `(γ, β, ε)`; `None` skips BN.
pub fn dense(
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    bn: Option<(Tensor<1>, Tensor<1>, f64)>,
    act: Act,
) -> DenseOutput {
    dense_with(
        <Dispatch as FusedDense>::fused_dense,
        x,
        weight,
        bias,
        bn,
        act,
    )
}

/// [`dense`] through [`dense_reference`], Burn's ops one by one: `kernels::reference::dense`, the
/// same signature as the fast op so that a test can take either.
pub fn dense_through_reference(
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    bn: Option<(Tensor<1>, Tensor<1>, f64)>,
    act: Act,
) -> DenseOutput {
    dense_with(dense_reference::<Dispatch>, x, weight, bias, bn, act)
}

/// The signature of [`FusedDense::fused_dense`] on `Dispatch`.
type DenseOp = fn(
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    DenseSpec,
) -> DenseTensors<Dispatch>;

/// Calls `op` (the fast op or its reference) with [`dense`]'s arguments made into its inputs.
fn dense_with(
    op: DenseOp,
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    bn: Option<(Tensor<1>, Tensor<1>, f64)>,
    act: Act,
) -> DenseOutput {
    // Placeholders for the unused inputs, in x's dtype (the kernel reads all inputs as one type).
    let options = TensorCreationOptions::new(x.device()).with_dtype(x.dtype());
    let empty = || Tensor::<1>::zeros([0], options.clone());
    let spec = DenseSpec {
        act,
        bias: bias.is_some(),
        bn_eps: bn.as_ref().map(|b| b.2),
    };
    let (gamma, beta) = match bn {
        Some((g, b, _)) => (g, b),
        None => (empty(), empty()),
    };
    let (output, pre, mean, variance) = op(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.unwrap_or_else(empty).into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        spec,
    );
    DenseOutput {
        output: Tensor::from_dispatch(output),
        pre: Tensor::from_dispatch(pre),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(variance),
    }
}

/// g(v) elementwise. The sigmoid is `super::sigmoid`'s loop, vectorised in float32.
pub(super) fn activate<T: Real + SigmoidInPlace>(v: &mut [T], act: Act) {
    match act {
        Act::Identity => {}
        // As Burn's relu: values ≤ 0 become 0, a NaN stays NaN (so divergence is still seen).
        // Compared in `T` (not through f64), so that the loop vectorises.
        Act::Relu => v.iter_mut().for_each(|x| {
            *x = if *x <= T::ZERO { T::ZERO } else { *x };
        }),
        Act::Tanh => v
            .iter_mut()
            .for_each(|x| *x = T::from_f64(x.to_f64().tanh())),
        Act::Sigmoid => T::sigmoid_in_place(v),
    }
}

/// ∂pre = ∂a · g'(pre), from the saved output a = g(pre).
pub(super) fn activation_backward<T: Real>(a: &[T], ga: &[T], act: Act) -> Vec<T> {
    let one = T::from_f64(1.0);
    match act {
        Act::Identity => ga.to_vec(),
        Act::Sigmoid => a
            .iter()
            .zip(ga)
            .map(|(&a, &g)| g * (a * (one - a)))
            .collect(),
        Act::Tanh => a.iter().zip(ga).map(|(&a, &g)| g * (one - a * a)).collect(),
        Act::Relu => a
            .iter()
            .zip(ga)
            .map(|(&a, &g)| if a.to_f64() > 0.0 { g } else { T::ZERO })
            .collect(),
    }
}

/// Forward results as flat vectors; `z` is kept only when BN's backward needs it.
struct Forward<T> {
    a: Vec<T>,
    pre: Vec<T>,
    z: Vec<T>,
    mean: Vec<T>,
    var: Vec<T>,
}

fn forward<T: Real + SigmoidInPlace>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    bn: Option<(&[T], &[T], f64)>,
    (n, k, m): (usize, usize, usize),
    act: Act,
) -> Forward<T> {
    let mut z = match bias {
        Some(b) => b.repeat(n),
        None => vec![T::ZERO; n * m],
    };
    let x_op = Operand {
        data: x,
        rs: k as isize,
        cs: 1,
    };
    let w_op = Operand {
        data: w,
        rs: m as isize,
        cs: 1,
    };
    gemm_into((n, m, k), &mut z, x_op, w_op, bias.is_some());
    let (pre, z, mean, var) = match bn {
        Some((gamma, beta, eps)) => {
            let (y, mean, var) = batch_norm::forward(&z, gamma, beta, &[n, m], eps);
            (y, z, mean, var)
        }
        None => (z, Vec::new(), Vec::new(), Vec::new()),
    };
    let mut a = pre.clone();
    activate(&mut a, act);
    Forward {
        a,
        pre,
        z,
        mean,
        var,
    }
}

/// What the backward reads: the forward's inputs and outputs it needs.
struct Saved<'a, T> {
    x: &'a [T],
    w: &'a [T],
    a: &'a [T],
    z: &'a [T],
    gamma: &'a [T],
    mean: &'a [T],
    var: &'a [T],
}

/// Gradients; each is computed only when `want` asks for it.
struct Grads<T> {
    dx: Option<Vec<T>>,
    dw: Option<Vec<T>>,
    db: Option<Vec<T>>,
    dgamma: Option<Vec<T>>,
    dbeta: Option<Vec<T>>,
}

/// Which of (x, W, b, γ, β) need a gradient.
type Wanted = [bool; 5];

fn backward<T: Real>(
    s: &Saved<T>,
    ga: &[T],
    (n, k, m): (usize, usize, usize),
    spec: DenseSpec,
    want: Wanted,
) -> Grads<T> {
    let gpre = activation_backward(s.a, ga, spec.act);
    let (gz, dgamma, dbeta) = match spec.bn_eps {
        Some(eps) => {
            let (gz, dgamma, dbeta) =
                batch_norm::backward(s.z, &gpre, s.gamma, s.mean, s.var, &[n, m], eps);
            (gz, Some(dgamma), Some(dbeta))
        }
        None => (gpre, None, None),
    };
    let db = (want[2] && spec.bias).then(|| {
        channel_sums((n, m, 1), &gz, &gz, |g, _, _| g)
            .into_iter()
            .map(T::from_f64)
            .collect()
    });
    let dw = want[1].then(|| {
        // ∂W[k×m] = xᵀ·∂z: xᵀ is x read with swapped strides.
        let mut dw = vec![T::ZERO; k * m];
        let xt = Operand {
            data: s.x,
            rs: 1,
            cs: k as isize,
        };
        let gz_op = Operand {
            data: &gz,
            rs: m as isize,
            cs: 1,
        };
        gemm_into((k, m, n), &mut dw, xt, gz_op, false);
        dw
    });
    let dx = want[0].then(|| {
        // ∂x[n×k] = ∂z·Wᵀ.
        let mut dx = vec![T::ZERO; n * k];
        let gz_op = Operand {
            data: &gz,
            rs: m as isize,
            cs: 1,
        };
        let wt = Operand {
            data: s.w,
            rs: 1,
            cs: m as isize,
        };
        gemm_into((n, k, m), &mut dx, gz_op, wt, false);
        dx
    });
    Grads {
        dx,
        dw,
        db,
        dgamma: dgamma.filter(|_| want[3]),
        dbeta: dbeta.filter(|_| want[4]),
    }
}

/// Flex tensors of one forward: [a, pre, z, mean, var].
type FlexForward = [FlexTensor; 5];

/// (N, K, M) of a layer, from x `[N, K]` and W `[K, M]`.
fn layer_dims(x: &FlexTensor, w: &FlexTensor) -> (usize, usize, usize) {
    let xd = x.layout().shape();
    let wd = w.layout().shape();
    assert!(
        xd.num_dims() == 2 && wd.num_dims() == 2 && xd[1] == wd[0],
        "dense: x {:?} and W {:?} do not chain",
        xd.to_vec(),
        wd.to_vec()
    );
    (xd[0], xd[1], wd[1])
}

fn flex_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    b: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    spec: DenseSpec,
) -> FlexForward {
    let dims = layer_dims(x, w);
    let (n, _, m) = dims;
    float_dispatch!(x.dtype(), |T| {
        let (xv, wv, bv) = (values::<T>(x), values::<T>(w), values::<T>(b));
        let (gv, betav) = (values::<T>(gamma), values::<T>(beta));
        let bias = spec.bias.then_some(&bv[..]);
        let bn = spec.bn_eps.map(|eps| (&gv[..], &betav[..], eps));
        let f = forward::<T>(&xv, &wv, bias, bn, dims, spec.act);
        let per_channel = |v: Vec<T>| {
            let len = v.len();
            tensor_from(v, vec![len])
        };
        let zlen = f.z.len();
        [
            tensor_from(f.a, vec![n, m]),
            tensor_from(f.pre, vec![n, m]),
            tensor_from(f.z, if zlen == 0 { vec![0] } else { vec![n, m] }),
            per_channel(f.mean),
            per_channel(f.var),
        ]
    })
}

/// What the autodiff node keeps: x, W, γ, a, z, mean, var.
type FlexSaved = [FlexTensor; 7];

fn flex_backward(
    saved: &FlexSaved,
    ga: &FlexTensor,
    spec: DenseSpec,
    want: Wanted,
) -> [Option<FlexTensor>; 5] {
    let [x, w, gamma, a, z, mean, var] = saved;
    let dims = layer_dims(x, w);
    let (n, k, m) = dims;
    float_dispatch!(x.dtype(), |T| {
        let (xv, wv, gv, av) = (
            values::<T>(x),
            values::<T>(w),
            values::<T>(gamma),
            values::<T>(a),
        );
        let (zv, mv, vv, gav) = (
            values::<T>(z),
            values::<T>(mean),
            values::<T>(var),
            values::<T>(ga),
        );
        let s = Saved {
            x: &xv,
            w: &wv,
            a: &av,
            z: &zv,
            gamma: &gv,
            mean: &mv,
            var: &vv,
        };
        let g = backward::<T>(&s, &gav, dims, spec, want);
        [
            g.dx.map(|v| tensor_from(v, vec![n, k])),
            g.dw.map(|v| tensor_from(v, vec![k, m])),
            g.db.map(|v| tensor_from(v, vec![m])),
            g.dgamma.map(|v| tensor_from(v, vec![m])),
            g.dbeta.map(|v| tensor_from(v, vec![m])),
        ]
    })
}

impl FusedDense for Flex {
    fn fused_dense(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        spec: DenseSpec,
    ) -> DenseTensors<Self> {
        let [a, pre, _z, mean, var] = flex_forward(&x, &weight, &bias, &gamma, &beta, spec);
        (a, pre, mean, var)
    }
}

#[derive(Debug)]
struct FusedDenseBackward {
    spec: DenseSpec,
}

impl Backward<Flex, 5> for FusedDenseBackward {
    type State = FlexSaved;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_node(ops, grads, |saved, ga, want| {
            flex_backward(&saved, &ga, self.spec, want)
        })
    }
}

impl<C: CheckpointStrategy> FusedDense for Autodiff<Flex, C> {
    fn fused_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: DenseSpec,
    ) -> DenseTensors<Self> {
        let [a, pre, z, mean, var] = flex_forward(
            x.primitive(),
            weight.primitive(),
            bias.primitive(),
            gamma.primitive(),
            beta.primitive(),
            spec,
        );
        // pre and the statistics leave the graph as constants.
        let constants = (
            FloatTensor::<Self>::new(pre),
            FloatTensor::<Self>::new(mean.clone()),
            FloatTensor::<Self>::new(var.clone()),
        );
        let prep = FusedDenseBackward { spec }
            .prepare::<C>([
                x.node(),
                weight.node(),
                bias.node(),
                gamma.node(),
                beta.node(),
            ])
            .compute_bound()
            .stateful();
        let output = match prep {
            OpsKind::Tracked(prep) => {
                let state = [
                    x.into_primitive(),
                    weight.into_primitive(),
                    gamma.into_primitive(),
                    a.clone(),
                    z,
                    mean,
                    var,
                ];
                prep.finish(state, a)
            }
            OpsKind::UnTracked(prep) => prep.finish(a),
        };
        (output, constants.0, constants.1, constants.2)
    }
}
