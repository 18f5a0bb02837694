//! The normalisation layers beside BatchNorm against independent references:
//! - float64 vectors from PyTorch (`tests/fixtures/norm_pytorch.json`, made and checked by
//!   `scripts/make_norm_reference_vectors.py`): Layer Norm, Group Norm (MLP and conv, G = 1 and
//!   G > 1, single examples), Batch Renorm (r, d and the running mean and std after each batch,
//!   clipped values included), Weight Norm (∂x, ∂v, ∂g, ∂b and the data-dependent init) and
//!   mean-only BN. Checked in float64 within 1e-10 and in float32 within 1e-5, relative to the
//!   largest reference value; Group and Layer Norm by both their fused path and their op-by-op
//!   reference;
//! - central finite differences in float64;
//! - closed forms: Group Norm with G = C is Instance Norm; Batch Renorm with r_max = 1 and
//!   d_max = 0 is BN; BN over statistics groups of k is BN applied to each group alone;
//! - each fast path against its reference body.

use bn_exp::norm::BatchRenorm;
use bn_exp::norm::{BatchNorm, BnMode, InferenceStats};
use bn_exp::norm::{GroupNorm, Norm};
use bn_exp::norm::{MeanOnlyBn, WeightNorm, init_from_outputs, unit_columns};
use bn_exp::tensor::tensor_to_f64;
use burn::module::Param;
use burn::tensor::{DType, Gradients, Tensor};
use serde_json::Value;

use crate::common;
use crate::numeric::{
    self, F32_TOL, F64_TOL, assert_close_at_scale, assert_close_within as assert_close,
    assert_gradient, device, f64_tensor, tensor,
};

const DTYPES: [(DType, f64); 2] = [(DType::F64, F64_TOL), (DType::F32, F32_TOL)];

fn fixture() -> Value {
    let path = common::repo().join("tests/fixtures/norm_pytorch.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the fixture parses")
}

fn cases(kind: &str) -> Vec<Value> {
    let all = fixture();
    let list = all["cases"][kind]
        .as_array()
        .expect("a list of cases")
        .clone();
    assert!(!list.is_empty(), "no {kind} cases");
    list
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list of numbers, got {v}"))
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a shape")
        .iter()
        .map(|x| x.as_u64().expect("a size") as usize)
        .collect()
}

fn param(values: &[f64], dtype: DType) -> Param<Tensor<1>> {
    Param::from_tensor(tensor(values, [values.len()], dtype, &device()))
}

/// A `[len]` tensor of `values` in `dtype`.
fn vector(values: &[f64], dtype: DType) -> Tensor<1> {
    tensor(values, [values.len()], dtype, &device())
}

/// Run `$body` with `$s` bound to `$shape` as a `[usize; 2]` or `[usize; 4]` array, so the body
/// is compiled for both input ranks.
macro_rules! at_rank {
    ($shape:expr, $s:ident => $body:expr) => {
        match $shape[..] {
            [a, b] => {
                let $s = [a, b];
                $body
            }
            [a, b, c, d] => {
                let $s = [a, b, c, d];
                $body
            }
            ref other => panic!("unexpected shape {other:?}"),
        }
    };
}

/// The layers checked against PyTorch batch after batch, Batch Renorm and mean-only BN, which
/// share no trait in bn-exp: their output in `mode`.
trait BatchLayer {
    fn output<const D: usize>(&self, x: Tensor<D>, mode: BnMode) -> Tensor<D>;
}

impl BatchLayer for BatchRenorm {
    fn output<const D: usize>(&self, x: Tensor<D>, mode: BnMode) -> Tensor<D> {
        self.forward_with_stats(x, mode).unwrap().0
    }
}

impl BatchLayer for MeanOnlyBn {
    fn output<const D: usize>(&self, x: Tensor<D>, mode: BnMode) -> Tensor<D> {
        self.forward_with_stats(x, mode).unwrap().0
    }
}

/// A training step of `layer` on the batch `x` of `case` in `dtype`. On the `first` batch, the
/// one the fixture holds gradients for, its output and ∂x of Σ y·upstream are held to the case's
/// within `tol`, and the gradients are returned to check the layer's own.
fn train_step(
    layer: &impl BatchLayer,
    case: &Value,
    x: &[f64],
    first: bool,
    dtype: DType,
    tol: f64,
    what: &dyn Fn(&str) -> String,
) -> Option<Gradients> {
    let mode = BnMode::Train {
        update_running: true,
    };
    let up = floats(&case["upstream"]);
    at_rank!(dims(&case["shape"]), s => {
        let xt = tensor(x, s, dtype, &device()).require_grad();
        let y = layer.output(xt.clone(), mode);
        first.then(|| {
            let grads = y.clone().mul(tensor(&up, s, dtype, &device())).sum().backward();
            let dx = tensor_to_f64(xt.grad(&grads).unwrap());
            assert_close(&what("y"), &tensor_to_f64(y), &floats(&case["y_train"]), tol);
            assert_close(&what("dx"), &dx, &floats(&case["dx"]), tol);
            grads
        })
    })
}

/// `layer`'s inference with its moving averages on `case`'s `eval_x` against the case's
/// `y_eval`.
fn assert_y_eval(
    layer: &impl BatchLayer,
    case: &Value,
    name: &str,
    shape: &[usize],
    dtype: DType,
    tol: f64,
) {
    let eval = floats(&case["eval_x"]);
    let y_eval = at_rank!(shape, s => {
        let x = tensor(&eval, s, dtype, &device());
        tensor_to_f64(layer.output(x, BnMode::Inference(InferenceStats::Moving)))
    });
    let what = format!("{name} {dtype:?} y_eval");
    assert_close(&what, &y_eval, &floats(&case["y_eval"]), tol);
}

/// Output and the gradients of sum(y·upstream) w.r.t. x and the layer's γ and β.
struct Grads {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

/// Group Norm with the case's γ and β, by `fast` or reference path.
fn group_norm_grads(case: &Value, groups: usize, dtype: DType, fast: bool) -> Grads {
    let shape = dims(&case["shape"]);
    let c = shape[1];
    let mut gn = GroupNorm::new(c, groups, case["eps"].as_f64().unwrap(), &device());
    gn = gn.with_affine(
        vector(&floats(&case["gamma"]), dtype),
        vector(&floats(&case["beta"]), dtype),
    );
    let x = floats(&case["x"]);
    let up = floats(&case["upstream"]);
    at_rank!(shape, s => {
        let xt = tensor(&x, s, dtype, &device()).require_grad();
        let y = if fast {
            gn.forward(xt.clone()).unwrap()
        } else {
            gn.forward_reference(xt.clone()).unwrap()
        };
        let grads = y.clone().mul(tensor(&up, s, dtype, &device())).sum().backward();
        Grads {
            y: tensor_to_f64(y),
            dx: tensor_to_f64(xt.grad(&grads).unwrap()),
            dgamma: tensor_to_f64(gn.gamma().grad(&grads).unwrap()),
            dbeta: tensor_to_f64(gn.beta().grad(&grads).unwrap()),
        }
    })
}

/// Both paths, fused and op by op, in both dtypes. The op-by-op path once missed float64's 1e-10
/// by 3e-8 where 1/M is inexact in float32 (M = 7, 18: the single-example cases), through a
/// float32 constant in Burn's backward of `var_mean_bias` (see `GroupNorm::forward_reference`).
fn check_group_norm_case(case: &Value, groups: usize) {
    let name = case["name"].as_str().unwrap();
    for (dtype, tol) in DTYPES {
        for fast in [true, false] {
            let g = group_norm_grads(case, groups, dtype, fast);
            let what = |f: &str| format!("{name} {dtype:?} fast={fast} {f}");
            assert_close(&what("y"), &g.y, &floats(&case["y"]), tol);
            let dx = floats(&case["dx"]);
            let terms = floats(&case["upstream"])
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            let scale = dx.iter().fold(terms, |m, v| m.max(v.abs()));
            assert_close_at_scale(&what("dx"), &g.dx, &dx, tol, scale);
            assert_close(&what("dgamma"), &g.dgamma, &floats(&case["dgamma"]), tol);
            assert_close(&what("dbeta"), &g.dbeta, &floats(&case["dbeta"]), tol);
        }
    }
}

/// Whether a case normalises a single example (N = 1).
fn single_example(case: &Value) -> bool {
    dims(&case["shape"])[0] == 1
}

#[test]
fn layer_norm_matches_pytorch() {
    let cases = cases("layer_norm");
    assert!(cases.iter().any(single_example), "no single-example case");
    for case in cases {
        check_group_norm_case(&case, 1);
    }
}

#[test]
fn group_norm_matches_pytorch_for_mlp_and_conv_inputs() {
    let cases = cases("group_norm");
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.iter().any(|n| n.contains("mlp")) && names.iter().any(|n| n.contains("conv")));
    // One example in 2 groups of 2 channels, as an MLP layer and as conv maps.
    let small = |c: &&Value| single_example(c) && c["groups"] == 2 && dims(&c["shape"])[1] == 4;
    assert_eq!(
        cases.iter().filter(small).count(),
        2,
        "the single-example cases"
    );
    for case in &cases {
        check_group_norm_case(case, case["groups"].as_u64().unwrap() as usize);
    }
}

#[test]
fn group_norm_with_one_group_per_channel_is_instance_norm() {
    // Instance norm by hand: each (example, channel) standardised over its H·W values.
    let (n, c, h, w) = (3, 4, 3, 2);
    let x = numeric::values(n * c * h * w, 7);
    let eps = 1e-5;
    let mut want = vec![0.0; x.len()];
    for plane in 0..n * c {
        let v = &x[plane * h * w..(plane + 1) * h * w];
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / v.len() as f64;
        for (i, a) in v.iter().enumerate() {
            want[plane * h * w + i] = (a - mean) / (var + eps).sqrt();
        }
    }
    let mut gn = GroupNorm::new(c, c, eps, &device());
    gn = gn.with_affine(
        vector(&vec![1.0; c], DType::F64),
        vector(&vec![0.0; c], DType::F64),
    );
    let got = tensor_to_f64(gn.forward(f64_tensor(&x, [n, c, h, w])).unwrap());
    assert_close("instance norm", &got, &want, F64_TOL);
}

#[test]
fn group_norm_gradients_match_finite_differences() {
    for (shape, groups) in [(vec![4, 6], 2), (vec![2, 6, 3, 3], 3)] {
        let c = shape[1];
        let len: usize = shape.iter().product();
        let x = numeric::values(len, 11);
        let up = numeric::values(len, 12);
        let mut gn = GroupNorm::new(c, groups, 1e-5, &device());
        gn = gn.with_affine(
            vector(&numeric::values(c, 13), DType::F64),
            vector(&numeric::values(c, 14), DType::F64),
        );
        let loss = |x: &[f64]| -> f64 {
            at_rank!(shape, s => {
                let y = gn.forward(f64_tensor(x, s)).unwrap();
                tensor_to_f64(y).iter().zip(&up).map(|(a, b)| a * b).sum()
            })
        };
        let analytic = at_rank!(shape, s => {
            let xt = f64_tensor(&x, s).require_grad();
            let y = gn.forward(xt.clone()).unwrap();
            let grads = y.mul(f64_tensor(&up, s)).sum().backward();
            tensor_to_f64(xt.grad(&grads).unwrap())
        });
        assert_gradient(&format!("group norm {shape:?} dx"), &analytic, &x, loss);
    }
}

// ---------------------------------------------------------------------------------------------
// Batch Renormalization

fn renorm_layer(case: &Value, dtype: DType) -> BatchRenorm {
    let c = dims(&case["shape"])[1];
    let mut brn = BatchRenorm::new(
        c,
        case["eps"].as_f64().unwrap(),
        case["momentum"].as_f64().unwrap(),
        Default::default(),
        1,
        &device(),
    );
    brn = brn.with_affine(
        vector(&floats(&case["gamma"]), dtype),
        vector(&floats(&case["beta"]), dtype),
    );
    brn = brn.with_running(
        vector(&floats(&case["running_mean_init"]), dtype),
        vector(&floats(&case["running_std_init"]), dtype),
    );
    brn.set_limits(
        case["r_max"].as_f64().unwrap(),
        case["d_max"].as_f64().unwrap(),
    );
    brn
}

#[test]
fn batch_renorm_matches_pytorch_batch_after_batch() {
    for case in cases("batch_renorm") {
        let name = case["name"].as_str().unwrap();
        let shape = dims(&case["shape"]);
        let batches = case["batches"].as_array().unwrap();
        let per_batch = case["per_batch"].as_array().unwrap();
        let mut clipped = 0;
        for (dtype, tol) in DTYPES {
            let brn = renorm_layer(&case, dtype);
            for (i, (batch, want)) in batches.iter().zip(per_batch).enumerate() {
                let what = |f: &str| format!("{name} {dtype:?} batch {i} {f}");
                let step = train_step(&brn, &case, &floats(batch), i == 0, dtype, tol, &what);
                if let Some(grads) = step {
                    let dgamma = tensor_to_f64(brn.gamma().grad(&grads).unwrap());
                    assert_close(&what("dgamma"), &dgamma, &floats(&case["dgamma"]), tol);
                    let dbeta = tensor_to_f64(brn.beta().grad(&grads).unwrap());
                    assert_close(&what("dbeta"), &dbeta, &floats(&case["dbeta"]), tol);
                }
                let correction = brn.last_correction();
                let (r_max, d_max) = brn.limits();
                clipped += correction
                    .r
                    .iter()
                    .filter(|r| (*r - r_max).abs() < 1e-12 || (*r - 1.0 / r_max).abs() < 1e-12)
                    .count();
                clipped += correction
                    .d
                    .iter()
                    .filter(|d| (d.abs() - d_max).abs() < 1e-12)
                    .count();
                assert_close(&what("r"), &correction.r, &floats(&want["r"]), tol);
                assert_close(&what("d"), &correction.d, &floats(&want["d"]), tol);
                let mean = tensor_to_f64(brn.running_mean());
                let std = tensor_to_f64(brn.running_std());
                assert_close(
                    &what("running mean"),
                    &mean,
                    &floats(&want["running_mean"]),
                    tol,
                );
                assert_close(
                    &what("running std"),
                    &std,
                    &floats(&want["running_std"]),
                    tol,
                );
            }
            assert_y_eval(&brn, &case, name, &shape, dtype, tol);
        }
        assert!(
            clipped > 0,
            "{name}: no r or d was clipped, so clipping went untested"
        );
    }
}

#[test]
fn batch_renorm_with_r_max_1_and_d_max_0_is_batch_norm() {
    for shape in [vec![6, 5], vec![4, 3, 2, 2]] {
        let c = shape[1];
        let len: usize = shape.iter().product();
        let x: Vec<f64> = numeric::values(len, 21)
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect();
        let up = numeric::values(len, 22);
        let gamma = numeric::values(c, 23);
        let beta = numeric::values(c, 24);
        let mode = BnMode::Train {
            update_running: true,
        };
        let mut brn = BatchRenorm::new(c, 1e-5, 0.1, Default::default(), 1, &device());
        brn = brn.with_affine(vector(&gamma, DType::F64), vector(&beta, DType::F64));
        brn = brn.with_running(
            vector(&vec![0.0; c], DType::F64),
            vector(&vec![1.0; c], DType::F64),
        );
        brn.set_limits(1.0, 0.0);
        let mut bn = BatchNorm::new(c, 1e-5, 0.1, &device());
        bn = bn.with_affine(vector(&gamma, DType::F64), vector(&beta, DType::F64));
        bn = bn.with_running(
            vector(&vec![0.0; c], DType::F64),
            vector(&vec![1.0; c], DType::F64),
        );
        at_rank!(shape, s => {
            let xa = f64_tensor(&x, s).require_grad();
            let xb = f64_tensor(&x, s).require_grad();
            let (ya, _) = brn.forward_with_stats(xa.clone(), mode).unwrap();
            let (yb, _) = bn.forward_with_stats(xb.clone(), mode).unwrap();
            let ga = ya.clone().mul(f64_tensor(&up, s)).sum().backward();
            let gb = yb.clone().mul(f64_tensor(&up, s)).sum().backward();
            assert_close("y", &tensor_to_f64(ya), &tensor_to_f64(yb), F64_TOL);
            assert_close(
                "dx",
                &tensor_to_f64(xa.grad(&ga).unwrap()),
                &tensor_to_f64(xb.grad(&gb).unwrap()),
                F64_TOL,
            );
            assert_close(
                "dgamma",
                &tensor_to_f64(brn.gamma().grad(&ga).unwrap()),
                &tensor_to_f64(bn.gamma().grad(&gb).unwrap()),
                F64_TOL,
            );
        });
        // The moving averages differ by design: a std (with ε) against an unbiased variance.
        let std = tensor_to_f64(brn.running_std());
        let var = tensor_to_f64(bn.running_var());
        let m = (len / c) as f64;
        for (s, v) in std.iter().zip(&var) {
            // var_running = 0.9 + 0.1·m/(m−1)·σ²_B; std_running = 0.9 + 0.1·√(σ²_B + ε).
            let biased = (v - 0.9) / 0.1 * (m - 1.0) / m;
            let want = 0.9 + 0.1 * (biased + 1e-5).sqrt();
            assert!((s - want).abs() < 1e-10, "running std {s}, expected {want}");
        }
    }
}

#[test]
fn batch_renorm_gradient_treats_clipped_r_and_d_as_constants() {
    // With every r and d at a clip bound, the layer is locally BN scaled by r_max and shifted by
    // ±d_max, so finite differences of the forward function see the same constants the
    // backward pass uses.
    let (n, c) = (6, 4);
    let x: Vec<f64> = numeric::values(n * c, 31)
        .iter()
        .map(|v| 5.0 * v + 7.0)
        .collect();
    let up = numeric::values(n * c, 32);
    let mut brn = BatchRenorm::new(c, 1e-5, 0.1, Default::default(), 1, &device());
    brn = brn.with_affine(
        vector(&vec![1.0; c], DType::F64),
        vector(&vec![0.0; c], DType::F64),
    );
    brn = brn.with_running(
        vector(&vec![0.0; c], DType::F64),
        vector(&vec![0.01; c], DType::F64),
    );
    brn.set_limits(2.0, 0.5);
    let mode = BnMode::Train {
        update_running: false,
    };
    let loss = |x: &[f64]| -> f64 {
        let (y, _) = brn.forward_with_stats(f64_tensor(x, [n, c]), mode).unwrap();
        tensor_to_f64(y).iter().zip(&up).map(|(a, b)| a * b).sum()
    };
    let xt = f64_tensor(&x, [n, c]).require_grad();
    let (y, _) = brn.forward_with_stats(xt.clone(), mode).unwrap();
    let correction = brn.last_correction();
    assert!(correction.r.iter().all(|&r| r == 2.0), "{:?}", correction.r);
    assert!(correction.d.iter().all(|&d| d == 0.5), "{:?}", correction.d);
    let grads = y.mul(f64_tensor(&up, [n, c])).sum().backward();
    let analytic = tensor_to_f64(xt.grad(&grads).unwrap());
    assert_gradient("clipped renorm dx", &analytic, &x, loss);
}

// ---------------------------------------------------------------------------------------------
// Statistics batches smaller than the training batch

#[test]
fn bn_over_statistics_groups_is_bn_on_each_group_alone() {
    for (shape, k) in [
        (vec![12, 5], 4usize),
        (vec![6, 3, 2, 2], 2),
        (vec![10, 3], 4),
    ] {
        let (n, c) = (shape[0], shape[1]);
        let per_example: usize = shape[1..].iter().product();
        let x: Vec<f64> = numeric::values(n * per_example, 41)
            .iter()
            .map(|v| 2.0 * v + 0.5)
            .collect();
        let up = numeric::values(n * per_example, 42);
        let gamma = numeric::values(c, 43);
        let beta = numeric::values(c, 44);
        let mode = BnMode::Train {
            update_running: false,
        };
        let make = |k: Option<usize>| {
            let mut bn = BatchNorm::new(c, 1e-5, 0.1, &device()).with_stats_batch(k);
            bn = bn.with_affine(vector(&gamma, DType::F64), vector(&beta, DType::F64));
            bn
        };
        let grouped = make(Some(k));
        let whole = make(None);
        // The groups as the split documents them: k at a time, the rest (with the last group
        // when only one example would remain) as one group.
        let rest = n % k;
        let head = if rest == 1 { n - rest - k } else { n - rest };
        let mut bounds: Vec<(usize, usize)> = (0..head / k).map(|g| (g * k, g * k + k)).collect();
        if head < n {
            bounds.push((head, n));
        }
        at_rank!(shape, s => {
            let xt = f64_tensor(&x, s).require_grad();
            let (y, _) = grouped.forward_with_stats(xt.clone(), mode).unwrap();
            let grads = y.clone().mul(f64_tensor(&up, s)).sum().backward();
            let y = tensor_to_f64(y);
            let dx = tensor_to_f64(xt.grad(&grads).unwrap());
            let dgamma = tensor_to_f64(grouped.gamma().grad(&grads).unwrap());
            let mut dgamma_want = vec![0.0; c];
            for &(a, b) in &bounds {
                let rows = a * per_example..b * per_example;
                let mut sub = s;
                sub[0] = b - a;
                let xs = f64_tensor(&x[rows.clone()], sub).require_grad();
                let (ys, _) = whole.forward_with_stats(xs.clone(), mode).unwrap();
                let gs = ys.clone().mul(f64_tensor(&up[rows.clone()], sub)).sum().backward();
                assert_close(&format!("{shape:?} k={k} y rows {a}..{b}"), &y[rows.clone()], &tensor_to_f64(ys), F64_TOL);
                assert_close(
                    &format!("{shape:?} k={k} dx rows {a}..{b}"),
                    &dx[rows],
                    &tensor_to_f64(xs.grad(&gs).unwrap()),
                    F64_TOL,
                );
                for (acc, g) in dgamma_want.iter_mut().zip(tensor_to_f64(whole.gamma().grad(&gs).unwrap())) {
                    *acc += g;
                }
            }
            assert_close(&format!("{shape:?} k={k} dgamma"), &dgamma, &dgamma_want, F64_TOL);
        });
    }
}

#[test]
fn statistics_groups_feed_the_running_averages_their_mean_statistics() {
    // Two groups of 2 with known means 1 and 3 (and biased variances 1 and 4): the running mean
    // absorbs their average 2, the running variance 2/(2−1)·(1 + 4)/2 = 5.
    let x = [0.0, 2.0, 1.0, 5.0];
    let mut bn = BatchNorm::new(1, 1e-5, 1.0, &device()).with_stats_batch(Some(2));
    bn = bn.with_affine(vector(&[1.0], DType::F64), vector(&[0.0], DType::F64));
    bn = bn.with_running(vector(&[0.0], DType::F64), vector(&[1.0], DType::F64));
    bn.forward_with_stats(
        f64_tensor(&x, [4, 1]),
        BnMode::Train {
            update_running: true,
        },
    )
    .unwrap();
    assert_close(
        "running mean",
        &tensor_to_f64(bn.running_mean()),
        &[2.0],
        1e-12,
    );
    assert_close(
        "running var",
        &tensor_to_f64(bn.running_var()),
        &[5.0],
        1e-12,
    );
}

// ---------------------------------------------------------------------------------------------
// Weight Normalization and mean-only BN

/// PyTorch's `[out, in]` weight as Burn's `[in, out]`.
fn transpose(v: &[f64], out: usize, inp: usize) -> Vec<f64> {
    let mut t = vec![0.0; v.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = v[o * inp + i];
        }
    }
    t
}

#[test]
fn weight_norm_matches_pytorch_including_the_layout_and_the_data_init() {
    for case in cases("weight_norm") {
        let name = case["name"].as_str().unwrap();
        let [n, inp] = dims(&case["x_shape"])[..] else {
            panic!()
        };
        let [out, inp_v] = dims(&case["v_shape"])[..] else {
            panic!()
        };
        assert_eq!(inp, inp_v);
        let v = transpose(&floats(&case["v"]), out, inp);
        let x = floats(&case["x"]);
        for (dtype, tol) in DTYPES {
            let what = |f: &str| format!("{name} {dtype:?} {f}");
            let wn = WeightNorm::new(out, false, 0.1, &device());
            let wn = wn.with_g(vector(&floats(&case["g"]), dtype));
            let norm = Norm::Weight(wn);
            let vt = Param::from_tensor(tensor(&v, [inp, out], dtype, &device()));
            let b = param(&floats(&case["b"]), dtype);
            let xt = tensor(&x, [n, inp], dtype, &device()).require_grad();
            let y = xt
                .clone()
                .matmul(norm.linear_weight(vt.val()))
                .add(b.val().unsqueeze::<2>());
            let up = tensor(&floats(&case["upstream"]), [n, out], dtype, &device());
            let grads = y.clone().mul(up).sum().backward();
            assert_close(&what("y"), &tensor_to_f64(y), &floats(&case["y"]), tol);
            assert_close(
                &what("dx"),
                &tensor_to_f64(xt.grad(&grads).unwrap()),
                &floats(&case["dx"]),
                tol,
            );
            let dv = tensor_to_f64(vt.grad(&grads).unwrap());
            assert_close(
                &what("dv"),
                &dv,
                &transpose(&floats(&case["dv"]), out, inp),
                tol,
            );
            let Norm::Weight(wn) = &norm else {
                unreachable!()
            };
            assert_close(
                &what("dg"),
                &tensor_to_f64(wn.g().grad(&grads).unwrap()),
                &floats(&case["dg"]),
                tol,
            );
            assert_close(
                &what("db"),
                &tensor_to_f64(b.grad(&grads).unwrap()),
                &floats(&case["db"]),
                tol,
            );

            // The data-dependent init: t = x·v/‖v‖, g = 1/σ(t), b = −μ(t)/σ(t).
            let t = tensor(&x, [n, inp], dtype, &device()).matmul(unit_columns(tensor(
                &v,
                [inp, out],
                dtype,
                &device(),
            )));
            let (g0, b0) = init_from_outputs(t.swap_dims(0, 1));
            assert_close(
                &what("init g"),
                &tensor_to_f64(g0),
                &floats(&case["init"]["g"]),
                tol,
            );
            assert_close(
                &what("init b"),
                &tensor_to_f64(b0),
                &floats(&case["init"]["b"]),
                tol,
            );
        }
    }
}

#[test]
fn weight_norm_gradient_in_v_matches_finite_differences() {
    let (n, inp, out) = (5, 4, 3);
    let x = numeric::values(n * inp, 51);
    let v = numeric::values(inp * out, 52);
    let up = numeric::values(n * out, 53);
    let mut wn = WeightNorm::new(out, false, 0.1, &device());
    wn = wn.with_g(vector(&numeric::values(out, 54), DType::F64));
    let loss = |v: &[f64]| -> f64 {
        let w = wn.linear_weight(f64_tensor(v, [inp, out]));
        let y = f64_tensor(&x, [n, inp]).matmul(w);
        tensor_to_f64(y).iter().zip(&up).map(|(a, b)| a * b).sum()
    };
    let vt = f64_tensor(&v, [inp, out]).require_grad();
    let y = f64_tensor(&x, [n, inp]).matmul(wn.linear_weight(vt.clone()));
    let grads = y.mul(f64_tensor(&up, [n, out])).sum().backward();
    let analytic = tensor_to_f64(vt.grad(&grads).unwrap());
    assert_gradient("weight norm dv", &analytic, &v, loss);
}

#[test]
fn mean_only_bn_matches_pytorch_batch_after_batch() {
    for case in cases("mean_only_bn") {
        let name = case["name"].as_str().unwrap();
        let shape = dims(&case["shape"]);
        let c = shape[1];
        let after = case["running_mean_after_each_batch"].as_array().unwrap();
        for (dtype, tol) in DTYPES {
            let bn = MeanOnlyBn::new(c, case["momentum"].as_f64().unwrap(), &device()).with_state(
                vector(&floats(&case["beta"]), dtype),
                vector(&floats(&case["running_init"]), dtype),
            );
            for (i, batch) in case["batches"].as_array().unwrap().iter().enumerate() {
                let what = |f: &str| format!("{name} {dtype:?} batch {i} {f}");
                let step = train_step(&bn, &case, &floats(batch), i == 0, dtype, tol, &what);
                if let Some(grads) = step {
                    let dbeta = tensor_to_f64(bn.beta().grad(&grads).unwrap());
                    assert_close(&what("dbeta"), &dbeta, &floats(&case["dbeta"]), tol);
                }
                let running = tensor_to_f64(bn.running_mean());
                assert_close(&what("running mean"), &running, &floats(&after[i]), tol);
            }
            assert_y_eval(&bn, &case, name, &shape, dtype, tol);
        }
    }
}
