//! bn-exp's BatchNorm against independent references:
//! - vectors computed by PyTorch's own BatchNorm1d/2d in float64
//!   (`tests/fixtures/batch_norm_pytorch.json`, remade by `scripts/make_reference_vectors.py`),
//!   checked in float32 and float64;
//! - central finite differences of ∂x, ∂γ, ∂β in float64, for both input ranks;
//! - closed forms: constant input gives β, two samples give ±γ·d/√(d²+ε) + β, inference is the
//!   affine map of Algorithm 2;
//! - the switch between training and inference, and the errors.

use bn_exp::norm::{BatchNorm, BatchStats, BnError, BnMode, InferenceStats, PopulationAccumulator};
use bn_exp::tensor::tensor_to_f64;
use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};

use crate::numeric::{
    F32_TOL, F64_TOL, assert_close_at_scale, assert_close_within as assert_close, assert_gradient,
    device, tensor,
};
use crate::reference::{Case, reference};

/// A BatchNorm with given γ, β, running statistics, all of `dtype`.
fn layer(case: &Case, dtype: DType, device: &Device) -> BatchNorm {
    let c = case.gamma.len();
    let mut bn = BatchNorm::new(c, case.eps, case.momentum, device);
    bn = bn.with_affine(
        tensor(&case.gamma, [c], dtype, device),
        tensor(&case.beta, [c], dtype, device),
    );
    bn.with_running(
        tensor(&case.running_init.mean, [c], dtype, device),
        tensor(&case.running_init.var, [c], dtype, device),
    )
}

/// Forward of `x` (flat, with `shape` of rank 2 or 4): output and, in training, batch stats.
fn forward_any(
    bn: &BatchNorm,
    x: &[f64],
    shape: &[usize],
    dtype: DType,
    device: &Device,
    mode: BnMode,
) -> (Vec<f64>, Option<BatchStats>) {
    fn at_rank<const D: usize>(
        bn: &BatchNorm,
        x: &[f64],
        shape: [usize; D],
        dtype: DType,
        device: &Device,
        mode: BnMode,
    ) -> (Vec<f64>, Option<BatchStats>) {
        let (y, stats) = bn
            .forward_with_stats(tensor(x, shape, dtype, device), mode)
            .unwrap();
        (tensor_to_f64(y), stats)
    }
    match *shape {
        [n, c] => at_rank(bn, x, [n, c], dtype, device, mode),
        [n, c, h, w] => at_rank(bn, x, [n, c, h, w], dtype, device, mode),
        _ => panic!("unexpected shape {shape:?}"),
    }
}

/// Output and autodiff gradients (∂x, ∂γ, ∂β) of the loss sum(BN(x)·upstream).
struct Gradients {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn forward_backward_any(
    bn: &BatchNorm,
    x: &[f64],
    upstream: &[f64],
    shape: &[usize],
    dtype: DType,
    device: &Device,
    mode: BnMode,
) -> Gradients {
    fn at_rank<const D: usize>(
        bn: &BatchNorm,
        x: &[f64],
        upstream: &[f64],
        shape: [usize; D],
        dtype: DType,
        device: &Device,
        mode: BnMode,
    ) -> Gradients {
        let x = tensor(x, shape, dtype, device).require_grad();
        let y = bn.forward(x.clone(), mode).unwrap();
        let grads = (y.clone() * tensor(upstream, shape, dtype, device))
            .sum()
            .backward();
        Gradients {
            y: tensor_to_f64(y),
            dx: tensor_to_f64(x.grad(&grads).unwrap()),
            dgamma: tensor_to_f64(bn.gamma().grad(&grads).unwrap()),
            dbeta: tensor_to_f64(bn.beta().grad(&grads).unwrap()),
        }
    }
    match *shape {
        [n, c] => at_rank(bn, x, upstream, [n, c], dtype, device, mode),
        [n, c, h, w] => at_rank(bn, x, upstream, [n, c, h, w], dtype, device, mode),
        _ => panic!("unexpected shape {shape:?}"),
    }
}

/// Run one reference case end to end at `dtype`, with relative tolerance `rtol`.
fn check_case(case: &Case, dtype: DType, rtol: f64) {
    let device = device();
    let what = |s: &str| format!("{} {:?} {s}", case.name, dtype);
    let bn = layer(case, dtype, &device);
    let train = BnMode::Train {
        update_running: true,
    };

    // Training forward and backward on batch 0.
    let Gradients {
        y,
        dx,
        dgamma,
        dbeta,
    } = forward_backward_any(
        &bn,
        &case.batches[0],
        &case.upstream,
        &case.shape,
        dtype,
        &device,
        train,
    );
    assert_close(&what("y_train"), &y, &case.y_train, rtol);
    // ∂ℓ/∂x = γ/σ·(g − mean(g) − x̂·mean(g·x̂)) subtracts terms of size γ/σ·|g|. With m = 2,
    // x̂ = ±1 up to ε and they cancel to a residue 1e-3 of their size, which float32 cannot
    // resolve to 1e-5 of itself. So ∂x is judged relative to the larger of its own magnitude and
    // the size of those terms (float64 above is held to 1e-10 of its own magnitude).
    let dx_scale = case
        .dx
        .iter()
        .fold(1e-3f64, |m, v| m.max(v.abs()))
        .max(cancelling_term_scale(case));
    assert_close_at_scale(&what("dx"), &dx, &case.dx, rtol, dx_scale);
    assert_close(&what("dgamma"), &dgamma, &case.dgamma, rtol);
    assert_close(&what("dbeta"), &dbeta, &case.dbeta, rtol);

    // Running statistics after each training batch (batch 0 already seen), and the population
    // accumulator fed from the same batches.
    let mut population = PopulationAccumulator::default();
    for (b, expected) in case.running_after_each_batch.iter().enumerate() {
        let stats = forward_stats(&bn, case, b, dtype, &device);
        population.add(&stats);
        assert_close(
            &what(&format!("running mean after batch {b}")),
            &tensor_to_f64(bn.running_mean()),
            &expected.mean,
            rtol,
        );
        assert_close(
            &what(&format!("running var after batch {b}")),
            &tensor_to_f64(bn.running_var()),
            &expected.var,
            rtol,
        );
    }

    // Inference with the moving averages (on the inference device, as evaluation runs).
    let eval = bn.valid();
    let y_eval = infer(&eval, case, dtype, InferenceStats::Moving);
    assert_close(&what("y_eval_running"), &y_eval, &case.y_eval_running, rtol);

    // Algorithm 2's population statistics and the inference they give.
    let (mean, var) = population.finish().unwrap();
    assert_close(&what("population mean"), &mean, &case.population.mean, rtol);
    assert_close(&what("population var"), &var, &case.population.var, rtol);
    let c = case.gamma.len();
    eval.set_population(
        tensor(&mean, [c], dtype, &Device::flex()),
        tensor(&var, [c], dtype, &Device::flex()),
    );
    let y_pop = infer(&eval, case, dtype, InferenceStats::Population);
    assert_close(
        &what("population y_eval"),
        &y_pop,
        &case.population.y_eval,
        rtol,
    );
}

/// max over channels of |γ_c|/√(σ²_c + ε) · max|upstream|: the size of the terms in ∂ℓ/∂x.
fn cancelling_term_scale(case: &Case) -> f64 {
    let c = case.gamma.len();
    let inner: usize = case.shape[2..].iter().product();
    let n = case.shape[0];
    let g_max = case.upstream.iter().fold(0f64, |m, v| m.max(v.abs()));
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| (0..inner).map(move |j| (i * c + ch) * inner + j))
                .map(|k| case.batches[0][k])
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            case.gamma[ch].abs() / (var + case.eps).sqrt() * g_max
        })
        .fold(0f64, f64::max)
}

/// Training-mode forward of reference batch `b` (updating running statistics), returning its stats.
fn forward_stats(
    bn: &BatchNorm,
    case: &Case,
    b: usize,
    dtype: DType,
    device: &Device,
) -> BatchStats {
    let mode = BnMode::Train {
        update_running: b > 0, // batch 0 already updated them in the gradient pass
    };
    forward_any(bn, &case.batches[b], &case.shape, dtype, device, mode)
        .1
        .expect("training mode returns statistics")
}

fn infer(bn: &BatchNorm, case: &Case, dtype: DType, stats: InferenceStats) -> Vec<f64> {
    let mut shape = case.shape.clone();
    shape[0] = case.eval_x.len() / shape[1..].iter().product::<usize>();
    let mode = BnMode::Inference(stats);
    forward_any(bn, &case.eval_x, &shape, dtype, &Device::flex(), mode).0
}

#[test]
fn matches_pytorch_in_float32_within_1e5_relative() {
    for case in &reference().cases {
        check_case(case, DType::F32, F32_TOL);
    }
}

#[test]
fn matches_pytorch_in_float64_within_1e10_relative() {
    for case in &reference().cases {
        check_case(case, DType::F64, F64_TOL);
    }
}

/// A float64 layer with given γ and β.
fn layer_f64(gamma: &[f64], beta: &[f64], device: &Device) -> BatchNorm {
    let c = gamma.len();
    let mut bn = BatchNorm::new(c, 1e-5, 0.1, device);
    bn = bn.with_affine(
        tensor(gamma, [c], DType::F64, device),
        tensor(beta, [c], DType::F64, device),
    );
    bn
}

const NO_UPDATE: BnMode = BnMode::Train {
    update_running: false,
};

/// Loss sum(BN(x) · u) in float64 for given x, γ, β (a fresh layer each time).
fn loss_f64(x: &[f64], shape: &[usize], gamma: &[f64], beta: &[f64], upstream: &[f64]) -> f64 {
    let device = Device::flex().autodiff();
    let bn = layer_f64(gamma, beta, &device);
    let (y, _) = forward_any(&bn, x, shape, DType::F64, &device, NO_UPDATE);
    y.iter().zip(upstream).map(|(a, b)| a * b).sum()
}

fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
    let mut r = bn_exp::rng::Rng::new(seed);
    (0..n).map(|_| r.normal() * 1.5 + 0.3).collect()
}

fn finite_difference_check(shape: &[usize]) {
    let n: usize = shape.iter().product();
    let c = shape[1];
    let x = pseudo_random(n, 1);
    let upstream = pseudo_random(n, 2);
    let gamma: Vec<f64> = pseudo_random(c, 3).iter().map(|g| g.abs() + 0.5).collect();
    let beta = pseudo_random(c, 4);

    // Analytic gradients from the autodiff node.
    let device = Device::flex().autodiff();
    let bn = layer_f64(&gamma, &beta, &device);
    let Gradients {
        dx, dgamma, dbeta, ..
    } = forward_backward_any(&bn, &x, &upstream, shape, DType::F64, &device, NO_UPDATE);

    let what = |d: &str| format!("{shape:?} {d} vs finite differences");
    assert_gradient(&what("dx"), &dx, &x, |v| {
        loss_f64(v, shape, &gamma, &beta, &upstream)
    });
    assert_gradient(&what("dgamma"), &dgamma, &gamma, |v| {
        loss_f64(&x, shape, v, &beta, &upstream)
    });
    assert_gradient(&what("dbeta"), &dbeta, &beta, |v| {
        loss_f64(&x, shape, &gamma, v, &upstream)
    });
}

#[test]
fn gradients_match_finite_differences_for_dense_inputs() {
    finite_difference_check(&[6, 3]);
}

#[test]
fn gradients_match_finite_differences_for_conv_inputs() {
    finite_difference_check(&[3, 2, 2, 3]);
}

#[test]
fn constant_input_gives_beta() {
    let device = Device::flex();
    let mut bn = BatchNorm::new(2, 1e-5, 0.1, &device);
    bn = bn.with_affine(
        Tensor::from_floats([2.0, -3.0], &device),
        Tensor::from_floats([0.25, -0.5], &device),
    );
    let x = Tensor::<2>::from_floats([[7.0, -1.0], [7.0, -1.0], [7.0, -1.0]], &device);
    let y = tensor_to_f64(
        bn.forward(
            x,
            BnMode::Train {
                update_running: false,
            },
        )
        .unwrap(),
    );
    assert_eq!(y, vec![0.25, -0.5, 0.25, -0.5, 0.25, -0.5]);
}

#[test]
fn two_samples_give_plus_minus_gamma_plus_beta() {
    // x = μ ± d: x̂ = ±d/√(d² + ε) exactly, so y = β ± γ·d/√(d² + ε).
    let device = Device::flex();
    let eps = 1e-5;
    let mut bn = BatchNorm::new(1, eps, 0.1, &device);
    bn = bn.with_affine(
        Tensor::from_floats([1.5], &device),
        Tensor::from_floats([0.5], &device),
    );
    let (mu, d) = (3.0f64, 0.002f64);
    let x = tensor(&[mu + d, mu - d], [2, 1], DType::F64, &device);
    let bn64 = {
        let mut b = bn.clone();
        b = b.with_affine(
            tensor(&[1.5], [1], DType::F64, &device),
            tensor(&[0.5], [1], DType::F64, &device),
        );
        b
    };
    let y = tensor_to_f64(
        bn64.forward(
            x,
            BnMode::Train {
                update_running: false,
            },
        )
        .unwrap(),
    );
    let s = d / (d * d + eps).sqrt(); // 0.5345..., far from 1: ε matters at this scale
    assert!((y[0] - (0.5 + 1.5 * s)).abs() < 1e-12, "{y:?}");
    assert!((y[1] - (0.5 - 1.5 * s)).abs() < 1e-12, "{y:?}");
    // With a large gap, ε is negligible and the outputs are ±γ + β.
    let x = Tensor::<2>::from_floats([[10.0], [-10.0]], &device);
    let y = tensor_to_f64(
        bn.forward(
            x,
            BnMode::Train {
                update_running: false,
            },
        )
        .unwrap(),
    );
    assert!(
        (y[0] - 2.0).abs() < 1e-6 && (y[1] + 1.0).abs() < 1e-6,
        "{y:?}"
    );
}

#[test]
fn inference_equals_the_affine_map_of_algorithm_2() {
    let device = Device::flex().autodiff();
    let bn = BatchNorm::new(3, 1e-3, 0.3, &device);
    // Move γ, β and the running statistics away from their initial values.
    let mut bn = bn;
    bn = bn.with_affine(
        Tensor::from_floats([0.5, 2.0, -1.0], &device),
        Tensor::from_floats([0.1, -0.2, 0.3], &device),
    );
    for seed in 0..4 {
        let x = tensor(&pseudo_random(24, seed), [8, 3], DType::F32, &device);
        bn.forward(
            x,
            BnMode::Train {
                update_running: true,
            },
        )
        .unwrap();
    }
    let eval = bn.valid();
    let x = tensor(&pseudo_random(30, 9), [10, 3], DType::F32, &Device::flex());
    let y = tensor_to_f64(
        eval.forward(x.clone(), BnMode::Inference(InferenceStats::Moving))
            .unwrap(),
    );
    let (scale, shift) = eval.inference_affine(InferenceStats::Moving);
    let (scale, shift) = (tensor_to_f64(scale), tensor_to_f64(shift));
    let (mean, var) = eval.inference_stats(InferenceStats::Moving);
    let (mean, var) = (tensor_to_f64(mean), tensor_to_f64(var));
    let xs = tensor_to_f64(x);
    for (i, (&xi, &yi)) in xs.iter().zip(&y).enumerate() {
        let c = i % 3;
        let affine = scale[c] * xi + shift[c];
        assert!((yi - affine).abs() < 1e-5, "affine {i}: {yi} vs {affine}");
        // And the same map written from the statistics, independently of inference_affine.
        let gamma = [0.5, 2.0, -1.0][c];
        let beta = [0.1, -0.2, 0.3][c];
        let direct = gamma * (xi - mean[c]) / (var[c] + 1e-3).sqrt() + beta;
        assert!((yi - direct).abs() < 1e-5, "direct {i}: {yi} vs {direct}");
    }
}

#[test]
fn evaluation_leaves_running_statistics_untouched() {
    let device = Device::flex().autodiff();
    let bn = BatchNorm::new(4, 1e-5, 0.1, &device);
    bn.forward(
        tensor(&pseudo_random(32, 1), [8, 4], DType::F32, &device),
        BnMode::Train {
            update_running: true,
        },
    )
    .unwrap();
    let before = (
        tensor_to_f64(bn.running_mean()),
        tensor_to_f64(bn.running_var()),
    );
    let x = tensor(&pseudo_random(32, 2), [8, 4], DType::F32, &device);
    for mode in [
        BnMode::Inference(InferenceStats::Moving),
        BnMode::Inference(InferenceStats::Batch),
        BnMode::Inference(InferenceStats::Population),
        BnMode::Train {
            update_running: false,
        },
    ] {
        bn.forward(x.clone(), mode).unwrap();
        bn.valid().forward(x.clone().inner(), mode).unwrap();
    }
    let after = (
        tensor_to_f64(bn.running_mean()),
        tensor_to_f64(bn.running_var()),
    );
    assert_eq!(before, after);
    // And a training step does change them (the check above can fail).
    bn.forward(
        x,
        BnMode::Train {
            update_running: true,
        },
    )
    .unwrap();
    assert_ne!(before.0, tensor_to_f64(bn.running_mean()));
}

#[test]
fn bad_inputs_are_errors_not_panics_or_nans() {
    let device = Device::flex();
    let bn = BatchNorm::new(3, 1e-5, 0.1, &device);
    let train = BnMode::Train {
        update_running: true,
    };
    let wrong = Tensor::<2>::zeros([4, 5], &device);
    assert_eq!(
        bn.forward(wrong, train).unwrap_err(),
        BnError::Channels {
            expected: 3,
            got: 5
        }
    );
    let single = Tensor::<2>::ones([1, 3], &device);
    let err = bn.forward(single.clone(), train).unwrap_err();
    assert!(matches!(err, BnError::SingleValue { .. }));
    assert!(err.to_string().contains("more than one value per channel"));
    let single_pixel = Tensor::<4>::ones([1, 3, 1, 1], &device);
    assert!(matches!(
        bn.forward(single_pixel, train).unwrap_err(),
        BnError::SingleValue { .. }
    ));
    // A single image with several positions per channel is a valid conv batch.
    assert!(
        bn.forward(Tensor::<4>::ones([1, 3, 2, 2], &device), train)
            .is_ok()
    );
    // Inference with one sample is fine: it uses fixed statistics.
    let y = tensor_to_f64(
        bn.forward(single, BnMode::Inference(InferenceStats::Moving))
            .unwrap(),
    );
    assert!(y.iter().all(|v| v.is_finite()));
    assert_eq!(
        bn.forward(Tensor::<3>::zeros([2, 3, 4], &device), train)
            .unwrap_err(),
        BnError::Rank(3)
    );
}
