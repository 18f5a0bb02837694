//! The fused training kernels against independent references, in float64:
//! - `dense` (linear + optional BN + activation) against the same layer built from Burn's own
//!   tensor ops (matmul, broadcast add, the BN formula written out, Burn's activations), values
//!   and all five gradients, for every activation, with and without bias and BN;
//! - `conv3x3` against Burn's `conv2d` (stride 1, padding 1), output and ∂x, ∂W, ∂b, on odd,
//!   non-square images and a batch that spans several of the kernel's parallel chunks;
//! - `max_pool2x2` against Burn's `max_pool2d`, output and ∂x, including odd sizes;
//! - `cross_entropy` against Burn's `cross_entropy_with_logits`, loss and ∂logits, for one-hot
//!   and soft targets and logits large enough to overflow a naive softmax;
//! - `dense` against central finite differences, as a check that does not lean on Burn;
//! - `dense` with BN, the path the MLP trains with, against PyTorch's BatchNorm1d vectors
//!   (`tests/fixtures/batch_norm_pytorch.json`): output, ∂x, ∂γ, ∂β and, through
//!   `BatchNorm::absorb_batch`, the running statistics after each batch.
//!
//! Tolerance: 1e-10 relative to the largest reference value (float64; the two sides sum in
//! different orders). The MLP's float32 path runs the same code and is exercised by the training
//! tests; float32 results differ from these by rounding only.

mod reference;

use bn_exp::kernels::{Act, conv3x3, cross_entropy, dense, max_pool2x2, max_pool2x2_then};
use bn_exp::norm::batch::{BatchNorm, BnMode, tensor_to_f64};
use burn::module::RunningState;
use burn::tensor::activation::{relu, sigmoid, tanh};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};

const TOL: f64 = 1e-10;

fn device() -> Device {
    Device::flex().autodiff()
}

/// Deterministic values in [-1, 1) from a seed (a simple LCG; no test depends on their law).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize>(v: &[f64], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), shape),
        TensorCreationOptions::new(device()).with_dtype(DType::F64),
    )
    .require_grad()
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert_dtype(DType::F64)
        .try_to_vec::<f64>()
        .expect("f64 values")
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / scale;
        assert!(
            err <= TOL,
            "{what}[{i}]: got {g}, reference {w} (relative error {err:.2e} > {TOL:.0e})"
        );
    }
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

/// (output, ∂x, ∂W, ∂b, ∂γ, ∂β) of one dense layer under the loss Σ upstream·output.
type DenseResult = [Vec<f64>; 6];

const EPS: f64 = 1e-5;

/// The layer through `bn_exp::kernels::dense`.
fn dense_fused(c: &DenseCase, bias: bool, bn: bool, act: Act) -> DenseResult {
    let (x, w) = (tensor(&c.x, [c.n, c.k]), tensor(&c.w, [c.k, c.m]));
    let (b, g, be) = (
        tensor(&c.b, [c.m]),
        tensor(&c.gamma, [c.m]),
        tensor(&c.beta, [c.m]),
    );
    let out = dense(
        x.clone(),
        w.clone(),
        bias.then(|| b.clone()),
        bn.then(|| (g.clone(), be.clone(), EPS)),
        act,
    )
    .output;
    dense_gradients(out, c, (&x, &w), [&b, &g, &be])
}

/// The same layer from Burn's ops: x·W + b, BN written out with the biased batch variance, act.
fn dense_reference(c: &DenseCase, bias: bool, bn: bool, act: Act) -> DenseResult {
    let (x, w) = (tensor(&c.x, [c.n, c.k]), tensor(&c.w, [c.k, c.m]));
    let (b, g, be) = (
        tensor(&c.b, [c.m]),
        tensor(&c.gamma, [c.m]),
        tensor(&c.beta, [c.m]),
    );
    let mut z = x.clone().matmul(w.clone());
    if bias {
        z = z + b.clone().unsqueeze::<2>();
    }
    if bn {
        let mean = z.clone().mean_dim(0);
        let centred = z - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(0);
        z = centred / (var + EPS).sqrt() * g.clone().unsqueeze::<2>() + be.clone().unsqueeze::<2>();
    }
    let out = match act {
        Act::Identity => z,
        Act::Sigmoid => sigmoid(z),
        Act::Relu => relu(z),
        Act::Tanh => tanh(z),
    };
    dense_gradients(out, c, (&x, &w), [&b, &g, &be])
}

/// Output values and the gradients of Σ upstream·out (zeros for inputs that took no part).
fn dense_gradients(
    out: Tensor<2>,
    c: &DenseCase,
    (x, w): (&Tensor<2>, &Tensor<2>),
    vectors: [&Tensor<1>; 3],
) -> DenseResult {
    let upstream = Tensor::<2>::from_data(
        TensorData::new(c.upstream.clone(), [c.n, c.m]),
        TensorCreationOptions::new(device()).with_dtype(DType::F64),
    );
    let grads = (out.clone() * upstream).sum().backward();
    let or_zeros = |g: Option<Vec<f64>>, len: usize| g.unwrap_or_else(|| vec![0.0; len]);
    let [b, g, be] = vectors.map(|t| or_zeros(t.grad(&grads).map(flat), c.m));
    [
        flat(out),
        or_zeros(x.grad(&grads).map(flat), c.n * c.k),
        or_zeros(w.grad(&grads).map(flat), c.k * c.m),
        b,
        g,
        be,
    ]
}

const PARTS: [&str; 6] = ["output", "dx", "dW", "db", "dgamma", "dbeta"];

#[test]
fn dense_matches_burns_ops_for_every_activation_bias_and_bn() {
    // K = 37 and M = 13 are not multiples of any SIMD width; N = 9 rows.
    let case = DenseCase::new(9, 37, 13);
    for act in [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh] {
        for bias in [false, true] {
            for bn in [false, true] {
                let got = dense_fused(&case, bias, bn, act);
                let want = dense_reference(&case, bias, bn, act);
                for (part, (g, w)) in PARTS.iter().zip(got.iter().zip(&want)) {
                    assert_close(&format!("{act:?} bias={bias} bn={bn} {part}"), g, w);
                }
            }
        }
    }
}

#[test]
fn dense_products_split_over_two_threads_give_the_same_result() {
    // 64·256·128 = 2.1·10⁶ multiply-adds: above the size from which a product is split between
    // the caller and bn-exp's helper thread (when rayon may use more than one thread). The
    // forward and ∂x split their output columns, ∂W its rows.
    let case = DenseCase::new(64, 256, 128);
    let got = dense_fused(&case, true, true, Act::Sigmoid);
    let want = dense_reference(&case, true, true, Act::Sigmoid);
    for (part, (g, w)) in PARTS.iter().zip(got.iter().zip(&want)) {
        assert_close(&format!("split product {part}"), g, w);
    }
}

#[test]
fn dense_gradients_match_central_finite_differences() {
    // Sigmoid with BN: every part of the backward is on the path.
    let case = DenseCase::new(6, 5, 4);
    let loss = |c: &DenseCase| -> f64 {
        let out = dense_fused(c, true, true, Act::Sigmoid);
        out[0].iter().zip(&c.upstream).map(|(o, u)| o * u).sum()
    };
    let analytic = dense_fused(&case, true, true, Act::Sigmoid);
    let h = 1e-6;
    // (which input, its values' accessor) for x, W, γ, β; b has no effect under BN (∂b = 0).
    type Field = fn(&mut DenseCase) -> &mut Vec<f64>;
    let fields: [(usize, Field); 4] = [
        (1, |c| &mut c.x),
        (2, |c| &mut c.w),
        (4, |c| &mut c.gamma),
        (5, |c| &mut c.beta),
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
        let got = &analytic[part];
        let scale = numeric.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, (g, n)) in got.iter().zip(&numeric).enumerate() {
            // Central differences with h = 1e-6 in float64 are good to about 1e-8 here.
            assert!(
                (g - n).abs() / scale < 1e-7,
                "{}[{i}]: analytic {g}, finite difference {n}",
                PARTS[part]
            );
        }
    }
    assert!(
        analytic[3].iter().all(|v| v.abs() < 1e-12),
        "∂b under BN must be 0"
    );
}

/// Output and gradients of Σ upstream·conv(x) for x, W, b.
fn conv_case(fused: bool, bias: bool) -> [Vec<f64>; 4] {
    let (n, c, h, w, co) = (11, 3, 5, 7, 4);
    let x = tensor(&values(n * c * h * w, 11), [n, c, h, w]);
    let wt = tensor(&values(co * c * 9, 12), [co, c, 3, 3]);
    let b = tensor(&values(co, 13), [co]);
    let out = if fused {
        conv3x3(x.clone(), wt.clone(), bias.then(|| b.clone()))
    } else {
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        conv2d(x.clone(), wt.clone(), bias.then(|| b.clone()), options)
    };
    let upstream = Tensor::<4>::from_data(
        TensorData::new(values(n * co * h * w, 14), [n, co, h, w]),
        TensorCreationOptions::new(device()).with_dtype(DType::F64),
    );
    let grads = (out.clone() * upstream).sum().backward();
    let db = b.grad(&grads).map(flat).unwrap_or_else(|| vec![0.0; co]);
    [
        flat(out),
        flat(x.grad(&grads).expect("dx")),
        flat(wt.grad(&grads).expect("dW")),
        db,
    ]
}

#[test]
fn conv3x3_matches_burns_conv2d_with_padding_one() {
    for bias in [true, false] {
        let got = conv_case(true, bias);
        let want = conv_case(false, bias);
        for (part, (g, w)) in ["output", "dx", "dW", "db"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(&format!("conv3x3 bias={bias} {part}"), g, w);
        }
    }
}

fn pool_case(fused: bool, shape: [usize; 4]) -> [Vec<f64>; 2] {
    let n: usize = shape.iter().product();
    let x = tensor(&values(n, 21), shape);
    let out = if fused {
        max_pool2x2(x.clone())
    } else {
        max_pool2d(x.clone(), MaxPoolOptions::new([2, 2]))
    };
    output_and_dx(out, &x, 22)
}

/// The values of `out` and ∂x of Σ upstream·out, with upstream drawn from `seed`.
fn output_and_dx(out: Tensor<4>, x: &Tensor<4>, seed: u64) -> [Vec<f64>; 2] {
    let dims = out.dims();
    let upstream = Tensor::<4>::from_data(
        TensorData::new(values(dims.iter().product(), seed), dims),
        TensorCreationOptions::new(device()).with_dtype(DType::F64),
    );
    let grads = (out.clone() * upstream).sum().backward();
    [flat(out), flat(x.grad(&grads).expect("dx"))]
}

#[test]
fn max_pool2x2_matches_burns_max_pool2d_including_odd_sizes() {
    for shape in [[2, 3, 6, 8], [3, 2, 5, 7]] {
        let got = pool_case(true, shape);
        let want = pool_case(false, shape);
        assert_eq!(got[0], want[0], "{shape:?} output");
        assert_eq!(got[1], want[1], "{shape:?} dx");
    }
}

#[test]
fn pooling_then_activation_equals_activation_then_pooling() {
    // The CNN pools before g: same values and gradients as Burn's g followed by max_pool2d.
    let shape = [2, 3, 6, 8];
    let n: usize = shape.iter().product();
    for act in [Act::Sigmoid, Act::Relu, Act::Tanh] {
        let run = |fused: bool| -> [Vec<f64>; 2] {
            let x = tensor(&values(n, 23), shape);
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
        assert_close(&format!("{act:?} pooled"), &got[0], &want[0]);
        assert_close(&format!("{act:?} dx"), &got[1], &want[1]);
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

fn loss_case(fused: bool, logits: &[f64], targets: &[f64], n: usize, c: usize) -> [Vec<f64>; 2] {
    let z = tensor(logits, [n, c]);
    let y = Tensor::<2>::from_data(
        TensorData::new(targets.to_vec(), [n, c]),
        TensorCreationOptions::new(device()).with_dtype(DType::F64),
    );
    let loss = if fused {
        cross_entropy(z.clone(), y)
    } else {
        cross_entropy_with_logits(z.clone(), y)
    };
    // A weight on the loss, so the upstream gradient is not 1.
    let grads = (loss.clone() * 0.75).sum().backward();
    [flat(loss), flat(z.grad(&grads).expect("dlogits"))]
}

#[test]
fn cross_entropy_matches_burns_for_one_hot_and_soft_targets() {
    let (n, c) = (7, 10);
    let logits: Vec<f64> = values(n * c, 31).iter().map(|v| v * 6.0).collect();
    let one_hot: Vec<f64> = (0..n * c)
        .map(|i| if i % c == (i / c * 3) % c { 1.0 } else { 0.0 })
        .collect();
    let soft: Vec<f64> = values(n * c, 32).iter().map(|v| (v + 1.0) / 20.0).collect();
    for (name, targets) in [("one-hot", &one_hot), ("soft", &soft)] {
        let got = loss_case(true, &logits, targets, n, c);
        let want = loss_case(false, &logits, targets, n, c);
        assert_close(&format!("{name} loss"), &got[0], &want[0]);
        assert_close(&format!("{name} dlogits"), &got[1], &want[1]);
    }
}

#[test]
fn cross_entropy_is_finite_for_huge_logits_and_matches_the_closed_form() {
    // Logits 1000 apart: the loss of the right class is 0, of the wrong one 1000.
    let logits = [1000.0, 0.0, 0.0, 1000.0];
    let targets = [1.0, 0.0, 1.0, 0.0];
    let [loss, grad] = loss_case(true, &logits, &targets, 2, 2);
    assert_close("loss", &loss, &[500.0]);
    // ∂/∂z = 0.75 · (softmax − y) / 2
    assert_close("dlogits", &grad, &[0.0, 0.0, -0.375, 0.375]);
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
        let x = tensor(&case.batches[0], [n, c]);
        let (gamma, beta) = (tensor(&case.gamma, [c]), tensor(&case.beta, [c]));
        let out = dense(
            x.clone(),
            tensor(&identity, [c, c]),
            None,
            Some((gamma.clone(), beta.clone(), case.eps)),
            Act::Identity,
        );
        let upstream = tensor(&case.upstream, [n, c]);
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
                tensor_to_f64(bn.running_mean.value_sync()),
                tensor_to_f64(bn.running_var.value_sync())
            ),
            (
                case.running_init.mean.clone(),
                case.running_init.var.clone()
            ),
            "bn-exp and PyTorch start the running averages at the same (0, 1)"
        );
        // The same start in float64, where the running averages are kept in that dtype.
        let f64_state = |v: &[f64]| RunningState::new(tensor(v, [c]).detach());
        bn.running_mean = f64_state(&case.running_init.mean);
        bn.running_var = f64_state(&case.running_init.var);
        for (k, batch) in case.batches.iter().enumerate() {
            let out = dense(
                tensor(batch, [n, c]),
                tensor(&identity, [c, c]),
                None,
                Some((gamma.clone(), beta.clone(), case.eps)),
                Act::Identity,
            );
            let count = bn.check_train_batch(&[n, c]).unwrap();
            bn.absorb_batch(
                out.mean,
                out.variance,
                count,
                BnMode::Train {
                    update_running: true,
                },
            );
            let want = &case.running_after_each_batch[k];
            let got_mean = tensor_to_f64(bn.running_mean.value_sync());
            let got_var = tensor_to_f64(bn.running_var.value_sync());
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
