//! The training-mode BatchNorm as one fused CPU kernel with a hand-written backward.
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
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};

/// Fused BN training forward: returns (output, batch mean, biased batch variance).
#[backend_extension(Autodiff, Flex)]
pub trait FusedBatchNorm: Backend {
    fn fused_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
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
    let (output, mean, variance) = <Dispatch as FusedBatchNorm>::fused_batch_norm_train(
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

/// A float the kernels run in.
trait Real: Copy + bytemuck::Pod + burn::tensor::Element {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
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

/// Per-channel sums over N and the inner positions, accumulated in f64.
fn channel_sums<T: Real>(
    x: &[T],
    n: usize,
    c: usize,
    inner: usize,
    mut f: impl FnMut(usize, T) -> f64,
) -> Vec<f64> {
    let mut sums = vec![0.0f64; c];
    if inner == 1 {
        // [N, C]: walk rows, channels contiguous.
        for i in 0..n {
            let row = &x[i * c..(i + 1) * c];
            for (ch, &v) in row.iter().enumerate() {
                sums[ch] += f(ch, v);
            }
        }
    } else {
        for i in 0..n {
            for (ch, sum) in sums.iter_mut().enumerate() {
                let start = (i * c + ch) * inner;
                let mut s = 0.0f64;
                for &v in &x[start..start + inner] {
                    s += f(ch, v);
                }
                *sum += s;
            }
        }
    }
    sums
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
    let mean: Vec<f64> = channel_sums(x, n, c, inner, |_, v| v.to_f64())
        .into_iter()
        .map(|s| s / m)
        .collect();
    let var: Vec<f64> = channel_sums(x, n, c, inner, |ch, v| {
        let d = v.to_f64() - mean[ch];
        d * d
    })
    .into_iter()
    .map(|s| s / m)
    .collect();
    // y = scale·x + shift, scale = γ/√(σ²+ε), shift = β − scale·μ
    let scale: Vec<f64> = (0..c)
        .map(|ch| gamma[ch].to_f64() / (var[ch] + eps).sqrt())
        .collect();
    let shift: Vec<f64> = (0..c)
        .map(|ch| beta[ch].to_f64() - scale[ch] * mean[ch])
        .collect();
    let mut y = vec![T::from_f64(0.0); x.len()];
    for i in 0..n {
        for ch in 0..c {
            let (s, b) = (scale[ch], shift[ch]);
            let start = (i * c + ch) * inner;
            for (out, &v) in y[start..start + inner]
                .iter_mut()
                .zip(&x[start..start + inner])
            {
                *out = T::from_f64(s * v.to_f64() + b);
            }
        }
    }
    (
        y,
        mean.into_iter().map(T::from_f64).collect(),
        var.into_iter().map(T::from_f64).collect(),
    )
}

/// Backward: (∂x, ∂γ, ∂β) from the upstream gradient `g`.
#[allow(clippy::too_many_arguments)]
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
    let mean: Vec<f64> = mean.iter().map(|v| v.to_f64()).collect();
    let mut dbeta = vec![0.0f64; c];
    let mut dgamma = vec![0.0f64; c];
    for i in 0..n {
        for ch in 0..c {
            let start = (i * c + ch) * inner;
            let (mu, is) = (mean[ch], inv_std[ch]);
            let (mut sb, mut sg) = (0.0f64, 0.0f64);
            for (&gv, &xv) in g[start..start + inner].iter().zip(&x[start..start + inner]) {
                let gv = gv.to_f64();
                sb += gv;
                sg += gv * (xv.to_f64() - mu) * is;
            }
            dbeta[ch] += sb;
            dgamma[ch] += sg;
        }
    }
    let mut dx = vec![T::from_f64(0.0); x.len()];
    for i in 0..n {
        for ch in 0..c {
            let start = (i * c + ch) * inner;
            let (mu, is) = (mean[ch], inv_std[ch]);
            let k = gamma[ch].to_f64() * is;
            let (mb, mg) = (dbeta[ch] / m, dgamma[ch] / m);
            for ((out, &gv), &xv) in dx[start..start + inner]
                .iter_mut()
                .zip(&g[start..start + inner])
                .zip(&x[start..start + inner])
            {
                let xhat = (xv.to_f64() - mu) * is;
                *out = T::from_f64(k * (gv.to_f64() - mb - xhat * mg));
            }
        }
    }
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
    let c = dims[1];
    macro_rules! run {
        ($t:ty) => {{
            let (y, mean, var) =
                forward::<$t>(&values(x), &values(gamma), &values(beta), &dims, eps);
            (
                tensor_from(y, dims.clone()),
                tensor_from(mean, vec![c]),
                tensor_from(var, vec![c]),
            )
        }};
    }
    match x.dtype() {
        DType::F64 => run!(f64),
        DType::F32 => run!(f32),
        other => {
            let cast = |t: &FlexTensor| {
                FlexTensor::from_data(t.clone().into_data().convert_dtype(DType::F32))
            };
            let (y, mean, var) = flex_forward(&cast(x), &cast(gamma), &cast(beta), eps);
            let back = |t: FlexTensor| FlexTensor::from_data(t.into_data().convert_dtype(other));
            (back(y), back(mean), back(var))
        }
    }
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
    let c = dims[1];
    macro_rules! run {
        ($t:ty) => {{
            let (dx, dgamma, dbeta) = backward::<$t>(
                &values(x),
                &values(g),
                &values(gamma),
                &values(mean),
                &values(var),
                &dims,
                eps,
            );
            (
                tensor_from(dx, dims.clone()),
                tensor_from(dgamma, vec![c]),
                tensor_from(dbeta, vec![c]),
            )
        }};
    }
    match x.dtype() {
        DType::F64 => run!(f64),
        _ => {
            let cast = |t: &FlexTensor| {
                FlexTensor::from_data(t.clone().into_data().convert_dtype(DType::F32))
            };
            let dtype = x.dtype();
            let (dx, dgamma, dbeta) = if dtype == DType::F32 {
                run!(f32)
            } else {
                flex_backward(
                    &cast(x),
                    &cast(g),
                    &cast(gamma),
                    &cast(mean),
                    &cast(var),
                    eps,
                )
            };
            let back = |t: FlexTensor| {
                if dtype == DType::F32 {
                    t
                } else {
                    FlexTensor::from_data(t.into_data().convert_dtype(dtype))
                }
            };
            (back(dx), back(dgamma), back(dbeta))
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
