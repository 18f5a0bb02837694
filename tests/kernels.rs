//! The fused training kernels against their references, in float64. Every fast op in
//! `bn_exp::kernels` has a reference body written with Burn's own ops (`kernels::reference`,
//! the trait default any backend but Flex runs); each test below holds the fast op to it, all
//! outputs and the gradient of every differentiable input under the loss Σ upstream·output
//! (upstream on every output, so an output detached on one side only shows in the gradients):
//! - `sigmoid`: output and ∂x, into both saturated tails;
//! - training-mode BN, `[N, C]` and `[N, C, H, W]`: output, batch mean, biased variance, ∂x, ∂γ,
//!   ∂β;
//! - `dense` (linear + optional BN + activation): a, pre, mean, variance and all five gradients,
//!   for every activation, with and without bias and BN;
//! - `conv3x3`: output and ∂x, ∂W, ∂b, on odd, non-square images and a batch that spans several
//!   of the kernel's parallel chunks, with and without bias; `conv1x1` the same, and on wide maps;
//! - `max_pool2x2_then`: output and ∂x for every activation, including odd sizes;
//! - `concat_channels`: output, ∂a and ∂b for every pair of activations, on parts of unequal
//!   channels;
//! - `cross_entropy`: loss and ∂logits (and no ∂targets), for one-hot and soft targets and
//!   logits large enough to overflow a naive softmax;
//! - conv, max-pool, the concatenation and BN again on inputs wide enough for their vectorised
//!   loops, and in child processes under each SIMD build this CPU has (`BN_EXP_SIMD`), the
//!   float32 results with the same bits in every build.
//!
//! Besides the references:
//! - max-pooling before g against Burn's g before `max_pool2d` (the order the CNN is defined in);
//! - `dense` against central finite differences, as a check that does not lean on Burn;
//! - `cross_entropy` against its closed form for logits 1000 apart;
//! - `dense` with BN, the path the MLP trains with, against PyTorch's BatchNorm1d vectors
//!   (`tests/fixtures/batch_norm_pytorch.json`): output, ∂x, ∂γ, ∂β and, through
//!   `BatchNorm::absorb_batch`, the running statistics after each batch.
//!
//! Tolerance: `F64_TOL`, 1e-10 relative to the largest reference value (float64; the two sides sum in
//! different orders). The MLP's float32 path runs the same code and is exercised by the training
//! tests; float32 results differ from these by rounding only.

use bn_exp::kernels::{
    self, Act, DenseOutput, FusedOutput, batch_norm_train_fused, concat_channels, conv1x1, conv3x3,
    conv3x3_stride2, cross_entropy, dense, max_pool2x2, max_pool2x2_then, max_pool3x3_stride2,
};
use bn_exp::norm::{BatchNorm, BatchStats, BnMode};
use bn_exp::tensor::tensor_to_f64;
use burn::tensor::activation::{relu, sigmoid, tanh};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::numeric::{assert_close, device, f64_tensor, flat, values};
use crate::reference;

/// A float64 input of an op under test: it takes gradients. Upstream weights and targets, which
/// take none, are plain [`f64_tensor`]s.
fn input<const D: usize>(v: &[f64], shape: [usize; D]) -> Tensor<D> {
    f64_tensor(v, shape).require_grad()
}

/// Σ upstream·out, with upstream drawn from `seed`: one output's term of a test loss.
fn weighted<const D: usize>(out: Tensor<D>, seed: u64) -> Tensor<1> {
    let dims = out.dims();
    (out * f64_tensor(&values(dims.iter().product(), seed), dims)).sum()
}

/// One output or gradient of an op: its shape and values.
#[derive(Debug, PartialEq)]
struct Part {
    dims: Vec<usize>,
    values: Vec<f64>,
}

fn part<const D: usize>(t: Tensor<D>) -> Part {
    Part {
        dims: t.dims().to_vec(),
        values: flat(t),
    }
}

/// The gradient of `t` in `grads`, or zeros of its shape when it took no part in the loss.
fn grad_part<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients) -> Part {
    t.grad(grads).map(part).unwrap_or_else(|| Part {
        dims: t.dims().to_vec(),
        values: vec![0.0; t.dims().iter().product()],
    })
}

/// Checks each named part of a fast result against the reference's: same shape, values within
/// `F64_TOL`.
fn assert_parts_close(what: &str, names: &[&str], got: &[Part], want: &[Part]) {
    assert_eq!(
        (got.len(), want.len()),
        (names.len(), names.len()),
        "{what}: parts"
    );
    for (name, (g, w)) in names.iter().zip(got.iter().zip(want)) {
        let what = format!("{what} {name}");
        assert_eq!(g.dims, w.dims, "{what}: shape");
        assert_close(&what, &g.values, &w.values);
    }
}

#[test]
fn sigmoid_matches_its_reference() {
    // Odd sizes; |x| up to 40, where σ saturates on both sides.
    let shape = [7, 3, 5];
    let n: usize = shape.iter().product();
    let xs: Vec<f64> = values(n, 51).iter().map(|v| 40.0 * v).collect();
    let run = |fast: bool| -> [Part; 2] {
        let x = input(&xs, shape);
        let op = if fast {
            kernels::sigmoid
        } else {
            kernels::reference::sigmoid
        };
        let y = op(x.clone());
        let grads = weighted(y.clone(), 52).backward();
        [part(y), part(x.grad(&grads).expect("dx"))]
    };
    assert_parts_close("sigmoid", &["output", "dx"], &run(true), &run(false));
}

/// (y, mean, variance, ∂x, ∂γ, ∂β) of training-mode BN through `kernels::batch_norm_train_fused`
/// (`fast`) or `kernels::reference::batch_norm_train`, under the loss Σ u·y + Σ u₁·mean +
/// Σ u₂·variance.
fn batch_norm_case<const D: usize>(fast: bool, shape: [usize; D]) -> [Part; 6] {
    let c = shape[1];
    let n: usize = shape.iter().product();
    // Shifted and scaled, so that neither μ_B is 0 nor σ²_B 1.
    let xs: Vec<f64> = values(n, 41).iter().map(|v| 3.0 * v + 0.5).collect();
    let gammas: Vec<f64> = values(c, 42).iter().map(|g| g + 1.5).collect();
    let (x, gamma, beta) = (
        input(&xs, shape),
        input(&gammas, [c]),
        input(&values(c, 43), [c]),
    );
    let op: fn(Tensor<D>, Tensor<1>, Tensor<1>, f64) -> FusedOutput<D> = if fast {
        batch_norm_train_fused
    } else {
        kernels::reference::batch_norm_train
    };
    let out = op(x.clone(), gamma.clone(), beta.clone(), EPS);
    let loss = weighted(out.output.clone(), 44)
        + weighted(out.mean.clone(), 45)
        + weighted(out.variance.clone(), 46);
    let grads = loss.backward();
    [
        part(out.output),
        part(out.mean),
        part(out.variance),
        part(x.grad(&grads).expect("dx")),
        part(gamma.grad(&grads).expect("dgamma")),
        part(beta.grad(&grads).expect("dbeta")),
    ]
}

#[test]
fn batch_norm_train_matches_its_reference_for_both_ranks() {
    const PARTS: [&str; 6] = ["output", "mean", "variance", "dx", "dgamma", "dbeta"];
    // The MLP's [N, C] and the CNN's [N, C, H, W], odd sizes.
    let (got, want) = (
        batch_norm_case(true, [9, 13]),
        batch_norm_case(false, [9, 13]),
    );
    assert_parts_close("BN [9, 13]", &PARTS, &got, &want);
    let shape = [3, 5, 7, 6];
    let (got, want) = (batch_norm_case(true, shape), batch_norm_case(false, shape));
    assert_parts_close("BN [3, 5, 7, 6]", &PARTS, &got, &want);
}

/// The inputs of one dense-layer case.
struct DenseCase {
    n: usize,
    k: usize,
    m: usize,
    x: Vec<f64>,
    w: Vec<f64>,
    b: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    upstream: Vec<f64>,
}

impl DenseCase {
    fn new(n: usize, k: usize, m: usize) -> Self {
        Self {
            n,
            k,
            m,
            x: values(n * k, 1),
            w: values(k * m, 2),
            b: values(m, 3),
            gamma: values(m, 4).iter().map(|g| g + 1.5).collect(),
            beta: values(m, 5),
            upstream: values(n * m, 6),
        }
    }
}

/// (a, pre, mean, variance, ∂x, ∂W, ∂b, ∂γ, ∂β) of one dense layer under the loss
/// Σ upstream·a + Σ u₁·pre + Σ u₂·mean + Σ u₃·variance.
type DenseResult = [Part; 9];

const DENSE_PARTS: [&str; 9] = [
    "output", "pre", "mean", "variance", "dx", "dW", "db", "dgamma", "dbeta",
];

const EPS: f64 = 1e-5;

/// The layer through `kernels::dense` (`fast`) or `kernels::reference::dense`.
fn dense_case(c: &DenseCase, fast: bool, bias: bool, bn: bool, act: Act) -> DenseResult {
    let (x, w) = (input(&c.x, [c.n, c.k]), input(&c.w, [c.k, c.m]));
    let (b, g, be) = (
        input(&c.b, [c.m]),
        input(&c.gamma, [c.m]),
        input(&c.beta, [c.m]),
    );
    let op = if fast {
        dense
    } else {
        kernels::reference::dense
    };
    let out: DenseOutput = op(
        x.clone(),
        w.clone(),
        bias.then(|| b.clone()),
        bn.then(|| (g.clone(), be.clone(), EPS)),
        act,
    );
    let loss = (out.output.clone() * f64_tensor(&c.upstream, [c.n, c.m])).sum()
        + weighted(out.pre.clone(), 7)
        + weighted(out.mean.clone(), 8)
        + weighted(out.variance.clone(), 9);
    let grads = loss.backward();
    [
        part(out.output),
        part(out.pre),
        part(out.mean),
        part(out.variance),
        grad_part(&x, &grads),
        grad_part(&w, &grads),
        grad_part(&b, &grads),
        grad_part(&g, &grads),
        grad_part(&be, &grads),
    ]
}

#[test]
fn dense_matches_its_reference_for_every_activation_bias_and_bn() {
    // K = 37 and M = 13 are not multiples of any SIMD width; N = 9 rows.
    let case = DenseCase::new(9, 37, 13);
    for act in [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh] {
        for bias in [false, true] {
            for bn in [false, true] {
                let got = dense_case(&case, true, bias, bn, act);
                let want = dense_case(&case, false, bias, bn, act);
                let what = format!("{act:?} bias={bias} bn={bn}");
                assert_parts_close(&what, &DENSE_PARTS, &got, &want);
            }
        }
    }
}

#[test]
fn dense_layer_big_enough_to_split_its_products_matches_its_reference() {
    // 64·256·128 = 2.1·10⁶ multiply-adds: above the size from which a product is computed as
    // two halves (one on bn-exp's helper thread when more than one thread is allowed). The
    // forward and ∂x split their output columns, ∂W its rows. The split itself is checked bit
    // for bit against one thread in src/kernels/gemm.rs.
    let case = DenseCase::new(64, 256, 128);
    let got = dense_case(&case, true, true, true, Act::Sigmoid);
    let want = dense_case(&case, false, true, true, Act::Sigmoid);
    assert_parts_close("split product", &DENSE_PARTS, &got, &want);
}

#[test]
fn dense_gradients_match_central_finite_differences() {
    // Sigmoid with BN: every part of the backward is on the path.
    let case = DenseCase::new(6, 5, 4);
    // The loss's other terms weigh detached outputs (pre, mean, variance), which carry no
    // gradient: the analytic gradients are those of Σ upstream·a alone.
    let loss = |c: &DenseCase| -> f64 {
        let out = dense_case(c, true, true, true, Act::Sigmoid);
        out[0]
            .values
            .iter()
            .zip(&c.upstream)
            .map(|(o, u)| o * u)
            .sum()
    };
    let analytic = dense_case(&case, true, true, true, Act::Sigmoid);
    let h = 1e-6;
    // (which input, its values' accessor) for x, W, γ, β; b has no effect under BN (∂b = 0).
    type Field = fn(&mut DenseCase) -> &mut Vec<f64>;
    let fields: [(usize, Field); 4] = [
        (4, |c| &mut c.x),
        (5, |c| &mut c.w),
        (7, |c| &mut c.gamma),
        (8, |c| &mut c.beta),
    ];
    for (part, field) in fields {
        let len = field(&mut DenseCase::new(6, 5, 4)).len();
        let numeric: Vec<f64> = (0..len)
            .map(|i| {
                let mut plus = DenseCase::new(6, 5, 4);
                field(&mut plus)[i] += h;
                let mut minus = DenseCase::new(6, 5, 4);
                field(&mut minus)[i] -= h;
                (loss(&plus) - loss(&minus)) / (2.0 * h)
            })
            .collect();
        let got = &analytic[part].values;
        let scale = numeric.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, (g, n)) in got.iter().zip(&numeric).enumerate() {
            // Central differences with h = 1e-6 in float64 are good to about 1e-8 here.
            assert!(
                (g - n).abs() / scale < 1e-7,
                "{}[{i}]: analytic {g}, finite difference {n}",
                DENSE_PARTS[part]
            );
        }
    }
    assert!(
        analytic[6].values.iter().all(|v| v.abs() < 1e-12),
        "∂b under BN must be 0"
    );
}

/// Output and gradients of Σ upstream·conv(x) for x, W, b, through `kernels::conv3x3` (`fast`)
/// or `kernels::reference::conv3x3`.
fn conv_case(fast: bool, bias: bool) -> [Part; 4] {
    conv_case_of(fast, bias, (11, 3, 5, 7, 4))
}

/// [`conv_case`] for (N, C, H, W, C_out).
fn conv_case_of(fast: bool, bias: bool, dims: (usize, usize, usize, usize, usize)) -> [Part; 4] {
    conv_case_k(fast, bias, dims, 3)
}

/// [`conv_case_of`] with a k×k kernel, k 3 or 1 (`kernels::conv1x1` and its reference).
fn conv_case_k(
    fast: bool,
    bias: bool,
    dims: (usize, usize, usize, usize, usize),
    k: usize,
) -> [Part; 4] {
    conv_case_strided(fast, bias, dims, (k, 1))
}

/// [`conv_case_k`] with (kernel, stride): (3, 2) is `kernels::conv3x3_stride2`.
fn conv_case_strided(
    fast: bool,
    bias: bool,
    (n, c, h, w, co): (usize, usize, usize, usize, usize),
    (k, stride): (usize, usize),
) -> [Part; 4] {
    let x = input(&values(n * c * h * w, 11), [n, c, h, w]);
    let wt = input(&values(co * c * k * k, 12), [co, c, k, k]);
    let b = input(&values(co, 13), [co]);
    let op = match (k, stride, fast) {
        (3, 2, true) => conv3x3_stride2,
        (3, 2, false) => kernels::reference::conv3x3_stride2,
        (3, _, true) => conv3x3,
        (3, _, false) => kernels::reference::conv3x3,
        (_, _, true) => conv1x1,
        (_, _, false) => kernels::reference::conv1x1,
    };
    let out = op(x.clone(), wt.clone(), bias.then(|| b.clone()));
    let grads = weighted(out.clone(), 14).backward();
    [
        part(out),
        part(x.grad(&grads).expect("dx")),
        part(wt.grad(&grads).expect("dW")),
        grad_part(&b, &grads),
    ]
}

/// The stride-1 3×3 convolution, on a batch that spans several parallel tasks, and on maps of
/// one or two rows or columns, where each shifted row of the column matrix is mostly padding.
#[test]
fn conv3x3_matches_its_reference_with_and_without_bias() {
    for bias in [true, false] {
        let got = conv_case(true, bias);
        let want = conv_case(false, bias);
        let what = format!("conv3x3 bias={bias}");
        assert_parts_close(&what, &["output", "dx", "dW", "db"], &got, &want);
        for dims in [
            (2, 2, 1, 5, 3),
            (2, 2, 4, 1, 3),
            (1, 3, 2, 2, 2),
            (1, 1, 1, 1, 1),
        ] {
            let got = conv_case_of(true, bias, dims);
            let want = conv_case_of(false, bias, dims);
            let what = format!("conv3x3 {dims:?} bias={bias}");
            assert_parts_close(&what, &["output", "dx", "dW", "db"], &got, &want);
        }
    }
}

/// The 1×1 convolution (no column matrix; ∂x written by the product) on a batch that spans
/// several parallel tasks, odd and wide maps.
#[test]
fn conv1x1_matches_its_reference_with_and_without_bias() {
    for bias in [true, false] {
        for dims in [(11, 3, 5, 7, 4), (3, 6, 6, 37, 5), (9, 3, 16, 16, 4)] {
            let got = conv_case_k(true, bias, dims, 1);
            let want = conv_case_k(false, bias, dims, 1);
            let what = format!("conv1x1 {dims:?} bias={bias}");
            assert_parts_close(&what, &["output", "dx", "dW", "db"], &got, &want);
        }
    }
}

/// The downsample modules' 3×3 stride-2 convolution without padding, on odd and even sides
/// (the last row and column read or left out), the smallest image it takes, and a batch that
/// spans several parallel tasks.
#[test]
fn conv3x3_stride2_matches_its_reference_with_and_without_bias() {
    for bias in [true, false] {
        for dims in [
            (11, 3, 7, 9, 4),
            (2, 5, 8, 6, 3),
            (3, 2, 3, 3, 2),
            (2, 3, 15, 33, 5),
        ] {
            let got = conv_case_strided(true, bias, dims, (3, 2));
            let want = conv_case_strided(false, bias, dims, (3, 2));
            assert_eq!(
                got[0].dims[2..],
                [(dims.2 - 3) / 2 + 1, (dims.3 - 3) / 2 + 1]
            );
            let what = format!("conv3x3_stride2 {dims:?} bias={bias}");
            assert_parts_close(&what, &["output", "dx", "dW", "db"], &got, &want);
        }
    }
}

/// An image smaller than the kernel is refused by the one shape check of the fast op and its
/// reference, naming the shapes, rather than indexing out of bounds.
#[test]
fn conv3x3_stride2_refuses_an_image_under_3x3_in_both_paths() {
    for fast in [true, false] {
        let caught =
            std::panic::catch_unwind(|| conv_case_strided(fast, true, (1, 2, 2, 5, 3), (3, 2)));
        let message = caught.expect_err("a 2x5 image must be refused");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            text.contains("do not fit") && text.contains("[1, 2, 2, 5]"),
            "fast={fast}: {text}"
        );
    }
}

/// Output and ∂x of Σ upstream·pool(x) through `kernels::max_pool2x2_then` (`fast`) or
/// `kernels::reference::max_pool2x2_then`.
fn pool_case(fast: bool, shape: [usize; 4], act: Act) -> [Part; 2] {
    let n: usize = shape.iter().product();
    let x = input(&values(n, 21), shape);
    let op = if fast {
        max_pool2x2_then
    } else {
        kernels::reference::max_pool2x2_then
    };
    output_and_dx(op(x.clone(), act), &x, 22)
}

/// The values of `out` and ∂x of Σ upstream·out, with upstream drawn from `seed`.
fn output_and_dx(out: Tensor<4>, x: &Tensor<4>, seed: u64) -> [Part; 2] {
    let grads = weighted(out.clone(), seed).backward();
    [part(out), part(x.grad(&grads).expect("dx"))]
}

#[test]
fn max_pool2x2_matches_its_reference_for_every_activation_including_odd_sizes() {
    for shape in [[2, 3, 6, 8], [3, 2, 5, 7]] {
        for act in [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh] {
            let got = pool_case(true, shape, act);
            let want = pool_case(false, shape, act);
            if act == Act::Identity {
                // Picking a maximum and routing the gradient to it involve no arithmetic.
                assert_eq!(got, want, "{shape:?} identity");
            } else {
                let what = format!("{shape:?} {act:?}");
                assert_parts_close(&what, &["output", "dx"], &got, &want);
            }
        }
    }
}

/// Output and ∂x of Σ upstream·pool(x) through `kernels::max_pool3x3_stride2` (`fast`) or its
/// reference, on `x`'s values.
fn pool3_case(fast: bool, x: &[f64], shape: [usize; 4]) -> [Part; 2] {
    let x = input(x, shape);
    let op = if fast {
        max_pool3x3_stride2
    } else {
        kernels::reference::max_pool3x3_stride2
    };
    output_and_dx(op(x.clone()), &x, 24)
}

/// The downsample modules' overlapping windows: odd and even sides, the smallest image, wide
/// rows, and inputs full of ties (values 0, 1, 2), where the winner must be the window's first
/// maximum in row-major order, as in Burn's max-pool, for ∂x to go to the same input.
#[test]
fn max_pool3x3_stride2_matches_its_reference_including_ties() {
    for shape in [[2, 3, 7, 9], [3, 2, 8, 6], [1, 1, 3, 3], [2, 2, 15, 37]] {
        let n: usize = shape.iter().product();
        let random = values(n, 25);
        let ties: Vec<f64> = (0..n).map(|i| ((i * 7 + i / 5) % 3) as f64).collect();
        for (what, x) in [("random", random), ("ties", ties)] {
            let (got, want) = (pool3_case(true, &x, shape), pool3_case(false, &x, shape));
            assert_eq!(
                got[0].dims[2..],
                [(shape[2] - 3) / 2 + 1, (shape[3] - 3) / 2 + 1]
            );
            let what = format!("max_pool3x3_stride2 {shape:?} {what}");
            // An input that wins several overlapping windows sums their gradients, in an order
            // that may differ from Burn's.
            assert_parts_close(&what, &["output", "dx"], &got, &want);
        }
    }
}

/// Output, ∂a and ∂b of Σ upstream·concat(a, b) through `kernels::concat_channels` (`fast`)
/// or its reference, for parts of `channels` on `[n, ·, h, w]` maps.
fn concat_case(
    fast: bool,
    [n, h, w]: [usize; 3],
    channels: [usize; 2],
    acts: [Act; 2],
) -> [Part; 3] {
    let [sa, sb] = channels.map(|c| [n, c, h, w]);
    let a = input(&values(n * channels[0] * h * w, 31), sa);
    let b = input(&values(n * channels[1] * h * w, 32), sb);
    let op = if fast {
        concat_channels
    } else {
        kernels::reference::concat_channels
    };
    let out = op(a.clone(), b.clone(), acts);
    let grads = weighted(out.clone(), 33).backward();
    [part(out), grad_part(&a, &grads), grad_part(&b, &grads)]
}

/// Every pair of nonlinearities, parts of unequal channels, an odd map, and a batch of several
/// images (one task each).
#[test]
fn concat_channels_matches_its_reference_for_every_pair_of_activations() {
    const ACTS: [Act; 4] = [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh];
    for act_a in ACTS {
        for act_b in ACTS {
            for (map, channels) in [([3, 5, 7], [2, 4]), ([2, 4, 37], [3, 1])] {
                let case = |fast| concat_case(fast, map, channels, [act_a, act_b]);
                let (got, want) = (case(true), case(false));
                assert_eq!(
                    got[0].dims,
                    [map[0], channels[0] + channels[1], map[1], map[2]]
                );
                let what = format!("concat {map:?} {channels:?} {act_a:?}/{act_b:?}");
                assert_parts_close(&what, &["output", "da", "db"], &got, &want);
            }
        }
    }
}

#[test]
fn pooling_then_activation_equals_activation_then_pooling() {
    // The CNN pools before g: same values and gradients as Burn's g followed by max_pool2d.
    let shape = [2, 3, 6, 8];
    let n: usize = shape.iter().product();
    for act in [Act::Sigmoid, Act::Relu, Act::Tanh] {
        let run = |fused: bool| -> [Part; 2] {
            let x = input(&values(n, 23), shape);
            let out = if fused {
                max_pool2x2_then(x.clone(), act)
            } else {
                let a = match act {
                    Act::Sigmoid => sigmoid(x.clone()),
                    Act::Relu => relu(x.clone()),
                    Act::Tanh => tanh(x.clone()),
                    Act::Identity => x.clone(),
                };
                max_pool2d(a, MaxPoolOptions::new([2, 2]))
            };
            output_and_dx(out, &x, 24)
        };
        let (got, want) = (run(true), run(false));
        assert_parts_close(&format!("{act:?}"), &["pooled", "dx"], &got, &want);
    }
}

#[test]
fn max_pool2x2_lets_a_nan_through() {
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, f32::NAN, 3.0, 2.0], [1, 1, 2, 2]),
        &Device::flex(),
    );
    let y: Vec<f32> = max_pool2x2(x).into_data().try_to_vec().unwrap();
    assert!(
        y[0].is_nan(),
        "max of a window with a NaN must be NaN, got {y:?}"
    );
}

/// Loss and ∂logits through `kernels::cross_entropy` (`fast`) or
/// `kernels::reference::cross_entropy`; asserts that the targets get no gradient.
fn loss_case(fast: bool, logits: &[f64], targets: &[f64], n: usize, c: usize) -> [Part; 2] {
    let z = input(logits, [n, c]);
    let y = input(targets, [n, c]);
    let op = if fast {
        cross_entropy
    } else {
        kernels::reference::cross_entropy
    };
    let loss = op(z.clone(), y.clone());
    // A weight on the loss, so the upstream gradient is not 1.
    let grads = (loss.clone() * 0.75).sum().backward();
    assert!(
        y.grad(&grads).is_none(),
        "fast={fast}: targets took a gradient"
    );
    [part(loss), part(z.grad(&grads).expect("dlogits"))]
}

#[test]
fn cross_entropy_matches_its_reference_for_one_hot_and_soft_targets() {
    let (n, c) = (7, 10);
    let logits: Vec<f64> = values(n * c, 31).iter().map(|v| v * 6.0).collect();
    let one_hot: Vec<f64> = (0..n * c)
        .map(|i| if i % c == (i / c * 3) % c { 1.0 } else { 0.0 })
        .collect();
    let soft: Vec<f64> = values(n * c, 32).iter().map(|v| (v + 1.0) / 20.0).collect();
    for (name, targets) in [("one-hot", &one_hot), ("soft", &soft)] {
        let got = loss_case(true, &logits, targets, n, c);
        let want = loss_case(false, &logits, targets, n, c);
        assert_parts_close(name, &["loss", "dlogits"], &got, &want);
    }
}

#[test]
fn cross_entropy_is_finite_for_huge_logits_and_matches_the_closed_form() {
    // Logits 1000 apart: the loss of the right class is 0, of the wrong one 1000.
    let logits = [1000.0, 0.0, 0.0, 1000.0];
    let targets = [1.0, 0.0, 1.0, 0.0];
    let [loss, grad] = loss_case(true, &logits, &targets, 2, 2);
    assert_close("loss", &loss.values, &[500.0]);
    // ∂/∂z = 0.75 · (softmax − y) / 2
    assert_close("dlogits", &grad.values, &[0.0, 0.0, -0.375, 0.375]);
}

/// The dense op with W = I and no bias is BN alone (x·I = x exactly in float64), so PyTorch's
/// BatchNorm1d vectors check the fused layer's BN: its output, its three gradients, and the
/// batch statistics it hands to the running averages.
#[test]
fn dense_training_bn_matches_pytorch_batch_norm_vectors() {
    let cases: Vec<reference::Case> = reference::reference()
        .cases
        .into_iter()
        .filter(|c| c.shape.len() == 2)
        .collect();
    assert_eq!(cases.len(), 2, "the MLP-shaped cases: 60x100 and 2x4");
    for case in &cases {
        let (n, c) = (case.shape[0], case.shape[1]);
        let identity: Vec<f64> = (0..c * c)
            .map(|i| if i / c == i % c { 1.0 } else { 0.0 })
            .collect();
        let x = input(&case.batches[0], [n, c]);
        let (gamma, beta) = (input(&case.gamma, [c]), input(&case.beta, [c]));
        let out = dense(
            x.clone(),
            input(&identity, [c, c]),
            None,
            Some((gamma.clone(), beta.clone(), case.eps)),
            Act::Identity,
        );
        let upstream = input(&case.upstream, [n, c]);
        let grads = (out.output.clone() * upstream).sum().backward();
        let what = |part: &str| format!("{} {part}", case.name);
        assert_close(&what("output"), &flat(out.output.clone()), &case.y_train);
        assert_close(&what("dx"), &flat(x.grad(&grads).unwrap()), &case.dx);
        assert_close(
            &what("dgamma"),
            &flat(gamma.grad(&grads).unwrap()),
            &case.dgamma,
        );
        assert_close(
            &what("dbeta"),
            &flat(beta.grad(&grads).unwrap()),
            &case.dbeta,
        );

        // The running averages the MLP's training step keeps, batch after batch.
        let device = device();
        let mut bn = BatchNorm::new(c, case.eps, case.momentum, &device);
        assert_eq!(
            (
                tensor_to_f64(bn.running_mean()),
                tensor_to_f64(bn.running_var())
            ),
            (
                case.running_init.mean.clone(),
                case.running_init.var.clone()
            ),
            "bn-exp and PyTorch start the running averages at the same (0, 1)"
        );
        // The same start in float64, where the running averages are kept in that dtype.
        bn = bn.with_running(
            input(&case.running_init.mean, [c]).detach(),
            input(&case.running_init.var, [c]).detach(),
        );
        for (k, batch) in case.batches.iter().enumerate() {
            let out = dense(
                input(batch, [n, c]),
                input(&identity, [c, c]),
                None,
                Some((gamma.clone(), beta.clone(), case.eps)),
                Act::Identity,
            );
            let count = bn.check_train_batch(&[n, c]).unwrap();
            let stats = BatchStats {
                mean: out.mean,
                biased_var: out.variance,
                count,
            };
            bn.absorb_batch(
                stats,
                BnMode::Train {
                    update_running: true,
                },
            );
            let want = &case.running_after_each_batch[k];
            let got_mean = tensor_to_f64(bn.running_mean());
            let got_var = tensor_to_f64(bn.running_var());
            assert_close(
                &what(&format!("running mean after batch {k}")),
                &got_mean,
                &want.mean,
            );
            assert_close(
                &what(&format!("running var after batch {k}")),
                &got_var,
                &want.var,
            );
        }
    }
}

/// (w, ∂v, ∂g) of Weight Norm's w = g·v/‖v‖ per column, fast or reference.
fn weight_norm_case(fast: bool, rows: usize, cols: usize) -> [Part; 3] {
    let v = input(&values(rows * cols, 61), [rows, cols]);
    let g = input(
        &values(cols, 62).iter().map(|g| g + 1.5).collect::<Vec<_>>(),
        [cols],
    );
    let op = if fast {
        kernels::weight_norm_columns
    } else {
        kernels::reference::weight_norm_columns
    };
    let w = op(v.clone(), g.clone());
    let grads = weighted(w.clone(), 63).backward();
    [part(w), grad_part(&v, &grads), grad_part(&g, &grads)]
}

#[test]
fn weight_norm_columns_matches_its_reference() {
    // The paper's first layer, and a tall odd one.
    for (rows, cols) in [(784, 100), (7, 3)] {
        assert_parts_close(
            &format!("weight norm {rows}x{cols}"),
            &["w", "dv", "dg"],
            &weight_norm_case(true, rows, cols),
            &weight_norm_case(false, rows, cols),
        );
    }
}

/// (y, μ_B, ∂x, ∂β) of mean-only BN, fast or reference.
fn center_case(fast: bool, n: usize, c: usize) -> [Part; 4] {
    let xs: Vec<f64> = values(n * c, 71).iter().map(|v| 2.0 * v + 0.7).collect();
    let x = input(&xs, [n, c]);
    let beta = input(&values(c, 72), [c]);
    let op = if fast {
        kernels::center_columns
    } else {
        kernels::reference::center_columns
    };
    let (y, mean) = op(x.clone(), beta.clone());
    let grads = (weighted(y.clone(), 73) + weighted(mean.clone(), 74)).backward();
    [
        part(y),
        part(mean),
        grad_part(&x, &grads),
        grad_part(&beta, &grads),
    ]
}

#[test]
fn center_columns_matches_its_reference() {
    for (n, c) in [(60, 100), (2, 3)] {
        assert_parts_close(
            &format!("mean-only BN {n}x{c}"),
            &["y", "mean", "dx", "dbeta"],
            &center_case(true, n, c),
            &center_case(false, n, c),
        );
    }
}

/// The CNN's kernels on inputs wide enough for their vectorised loops (rows of 32 and more
/// values, runs longer than the 16 lanes of the sums, with a remainder), against the
/// references: conv (with and without bias), max-pool then each g, the concatenation with g,
/// and BN on `[N, C, H, W]`.
fn wide_cases_match_their_references() {
    for bias in [true, false] {
        let case = |fast| conv_case_of(fast, bias, (3, 3, 6, 37, 5));
        let what = format!("wide conv3x3 bias={bias}");
        assert_parts_close(
            &what,
            &["output", "dx", "dW", "db"],
            &case(true),
            &case(false),
        );
    }
    for act in [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh] {
        for shape in [[2, 3, 8, 66], [1, 2, 7, 35]] {
            let (got, want) = (pool_case(true, shape, act), pool_case(false, shape, act));
            let what = format!("wide max-pool {shape:?} {act:?}");
            assert_parts_close(&what, &["output", "dx"], &got, &want);
        }
    }
    for acts in [[Act::Relu, Act::Identity], [Act::Sigmoid, Act::Tanh]] {
        let case = |fast| concat_case(fast, [2, 5, 41], [3, 2], acts);
        let what = format!("wide concat {acts:?}");
        assert_parts_close(&what, &["output", "da", "db"], &case(true), &case(false));
    }
    const PARTS: [&str; 6] = ["output", "mean", "variance", "dx", "dgamma", "dbeta"];
    let shape = [3, 4, 9, 41];
    let (got, want) = (batch_norm_case(true, shape), batch_norm_case(false, shape));
    assert_parts_close("wide BN", &PARTS, &got, &want);
}

#[test]
fn kernels_on_wide_inputs_match_their_references() {
    wide_cases_match_their_references();
}

/// The float32 outputs and gradients of the CNN's fast kernels on wide inputs, as one line of
/// bits: what every SIMD build must reproduce exactly.
fn f32_kernel_bits() -> String {
    let f32_input = |v: Vec<f64>, shape: [usize; 4]| {
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        Tensor::<4>::from_data(TensorData::new(v, shape), &device()).require_grad()
    };
    let (n, c, h, w, co) = (4, 3, 6, 37, 5);
    let x = f32_input(values(n * c * h * w, 61), [n, c, h, w]);
    let wt = f32_input(values(co * c * 9, 62), [co, c, 3, 3]);
    let b = Tensor::<1>::from_data(
        TensorData::new(values(co, 63).iter().map(|&v| v as f32).collect(), [co]),
        &device(),
    )
    .require_grad();
    let z = conv3x3(x.clone(), wt.clone(), Some(b.clone()));
    let gamma = Tensor::<1>::from_data(TensorData::new(vec![1.5f32; co], [co]), &device());
    let beta = Tensor::<1>::from_data(TensorData::new(vec![0.25f32; co], [co]), &device());
    let bn = batch_norm_train_fused(z.clone(), gamma, beta, EPS);
    let y = max_pool2x2_then(bn.output.clone(), Act::Relu);
    let joined = concat_channels(z.clone(), bn.output, [Act::Sigmoid, Act::Relu]);
    let upstream = |dims: [usize; 4], seed| {
        let v: Vec<f32> = values(dims.iter().product(), seed)
            .iter()
            .map(|&v| v as f32)
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, dims), &device())
    };
    let loss = (y.clone() * upstream(y.dims(), 64)).sum()
        + (z.clone() * upstream(z.dims(), 65)).sum()
        + (joined.clone() * upstream(joined.dims(), 66)).sum();
    let grads = loss.backward();
    let mut all: Vec<f32> = Vec::new();
    for t in [
        y,
        z,
        joined,
        x.grad(&grads).unwrap(),
        wt.grad(&grads).unwrap(),
    ] {
        all.extend(t.into_data().try_to_vec::<f32>().unwrap());
    }
    all.extend(
        b.grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
    );
    let hash = all.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3)
    });
    format!("{} values, bits {hash:016x}", all.len())
}

#[test]
fn f32_kernel_bits_of_this_build() {
    // Printed for `every_simd_build_matches_the_references_with_the_same_bits`.
    println!("f32 kernel bits: {}", f32_kernel_bits());
}

/// Runs the test `name` of this binary in a child process with the SIMD builds capped at
/// `cap`, and returns its output; fails if it fails or runs no test.
fn run_capped(name: &str, cap: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(kernels::SIMD_CAP_VAR, cap)
        .output()
        .expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} under {}={cap}:\n{text}\n{}",
        kernels::SIMD_CAP_VAR,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Every build of the `simd_fn!` loops this CPU runs (baseline, AVX2, AVX-512), each in a child
/// process capped to it: the float64 kernels within 1e-10 of the references on wide inputs,
/// and the float32 kernels with the same bits as this process's build.
#[test]
fn every_simd_build_matches_the_references_with_the_same_bits() {
    use kernels::SimdLevel;
    let here = f32_kernel_bits();
    let detected = kernels::detected_simd_level();
    for (level, cap) in [
        (SimdLevel::Baseline, "baseline"),
        (SimdLevel::Avx2, "avx2"),
        (SimdLevel::Avx512, "avx512"),
    ] {
        if level > detected {
            continue;
        }
        run_capped(
            "kernels::kernels_on_wide_inputs_match_their_references",
            cap,
        );
        let text = run_capped("kernels::f32_kernel_bits_of_this_build", cap);
        assert!(
            text.contains(&format!("f32 kernel bits: {here}")),
            "the {cap} build computed other float32 bits than {here}:\n{text}"
        );
    }
}
