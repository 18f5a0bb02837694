//! Santurkar et al.'s optimisation measures (`bn_exp::measures`) against closed forms:
//! - for a linear model with a quadratic loss, L(w) = ‖Xw − y‖²/(2n) with Hessian H = XᵀX/n,
//!   the loss along the gradient is L − η‖g‖² + η²·gᵀHg/2, the gradient change at step η is
//!   η‖Hg‖, and so the effective β-smoothness is ‖Hg‖/‖g‖: H's eigenvalue when g is one of its
//!   eigenvectors. All in float64, within 1e-9 relative.
//! - ICS as gradient change is exactly 0 for the first layer, and for every layer when the
//!   earlier layers' update is zero; for the last layer it equals the change computed by hand
//!   from a net whose hidden layers alone took the optimiser's step.

use anyhow::Result;
use bn_exp::config::{Config, config_from_value};
use bn_exp::kernels::cross_entropy;
use bn_exp::measures::{Probe, gradient, measure};
use bn_exp::model::{Mode, Net, Pass, WeightLayer};
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Tensor, TensorCreationOptions, TensorData};
use serde_json::json;

use crate::numeric::{device, f64_tensor, values};

/// The linear model x ↦ x·w.
#[derive(Module, Debug)]
struct Linear {
    w: Param<Tensor<2>>,
}

/// A least-squares problem: `x` is n×d (row-major), `y` has n values.
struct Quadratic {
    n: usize,
    d: usize,
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Quadratic {
    fn loss(&self, model: &Linear) -> Result<Tensor<1>> {
        let x = f64_tensor(&self.x, [self.n, self.d]);
        let y = f64_tensor(&self.y, [self.n, 1]);
        let r = x.matmul(model.w.val()) - y;
        // 1/(2n) as an f64 tensor: a scalar op's backward would round it to f32.
        let half_mean = f64_tensor(&[1.0 / (2.0 * self.n as f64)], [1]);
        Ok((r.clone() * r).sum() * half_mean)
    }

    /// X·w.
    fn x_times(&self, w: &[f64]) -> Vec<f64> {
        (0..self.n)
            .map(|i| (0..self.d).map(|j| self.x[i * self.d + j] * w[j]).sum())
            .collect()
    }

    /// Xᵀr/n.
    fn xt_times_over_n(&self, r: &[f64]) -> Vec<f64> {
        (0..self.d)
            .map(|j| {
                (0..self.n)
                    .map(|i| self.x[i * self.d + j] * r[i])
                    .sum::<f64>()
                    / self.n as f64
            })
            .collect()
    }

    fn residual(&self, w: &[f64]) -> Vec<f64> {
        let xw = self.x_times(w);
        xw.iter().zip(&self.y).map(|(xw, y)| xw - y).collect()
    }

    fn loss_at(&self, w: &[f64]) -> f64 {
        self.residual(w).iter().map(|r| r * r).sum::<f64>() / (2.0 * self.n as f64)
    }

    /// Xᵀr/n.
    fn gradient_at(&self, w: &[f64]) -> Vec<f64> {
        self.xt_times_over_n(&self.residual(w))
    }

    /// H·v with H = XᵀX/n.
    fn hessian_times(&self, v: &[f64]) -> Vec<f64> {
        self.xt_times_over_n(&self.x_times(v))
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn close(what: &str, got: f64, want: f64) {
    close_at(what, got, want, want.abs());
}

/// Within 1e-9 of `scale` (at least 1e-12).
fn close_at(what: &str, got: f64, want: f64, scale: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * scale.max(1e-12),
        "{what}: got {got}, closed form {want}"
    );
}

fn linear(w: &[f64]) -> Linear {
    Linear {
        w: Param::from_tensor(f64_tensor(w, [w.len(), 1]).require_grad()),
    }
}

/// Every landscape measure of `problem` at `w`, checked against its closed form; returns β.
fn check_landscape(problem: &Quadratic, w: &[f64], lr: f64) -> f64 {
    let model = linear(w);
    let layers = [WeightLayer {
        name: "w".into(),
        weight: model.w.id,
        params: vec![model.w.id],
    }];
    let optimizer = SgdConfig::new().init();
    let multiples = [0.5, 1.0, 2.0, 4.0];
    let probe = Probe {
        optimizer: &optimizer,
        lr,
        layers: &layers,
        lr_multiples: &multiples,
    };
    let record = measure(&model, &|m: &Linear| problem.loss(m), &probe, 7).unwrap();
    let g = problem.gradient_at(w);
    let hg = problem.hessian_times(&g);
    let (l0, gg, ghg) = (problem.loss_at(w), dot(&g, &g), dot(&g, &hg));
    close("loss", record.loss.unwrap(), l0);
    close("gradient norm", record.grad_norm.unwrap(), gg.sqrt());
    for (k, &eta) in record.step_sizes.iter().enumerate() {
        close("step size", eta, multiples[k] * lr);
        // Relative to L(w): at η = 1/λ along an eigenvector the loss is exactly 0.
        close_at(
            &format!("L(w − {eta}·g)"),
            record.losses[k].unwrap(),
            l0 - eta * gg + 0.5 * eta * eta * ghg,
            l0,
        );
        close(
            &format!("gradient change at {eta}"),
            record.grad_change[k].unwrap(),
            eta * norm(&hg),
        );
    }
    let beta = record.beta_smoothness.unwrap();
    close("β-smoothness", beta, norm(&hg) / gg.sqrt());
    // One layer: nothing comes before it, so it sees no shift at all.
    assert_eq!(record.ics[0].l2, Some(0.0));
    beta
}

#[test]
fn beta_smoothness_of_a_quadratic_is_the_hessian_along_the_gradient() {
    // X diagonal: H = diag(λ) with λ = (5, 2, 0.5). Starting from the minimum shifted along an
    // eigenvector, the gradient is that eigenvector and β is its eigenvalue.
    let lambda = [5.0, 2.0, 0.5];
    let n = 3;
    let x: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if i == j {
                (n as f64 * lambda[i]).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    let w_star = [0.3, -1.0, 2.0];
    let y: Vec<f64> = (0..n).map(|i| x[i * n + i] * w_star[i]).collect();
    let problem = Quadratic { n, d: n, x, y };
    for (axis, &eigenvalue) in lambda.iter().enumerate() {
        let mut w = w_star;
        w[axis] += 0.7;
        let beta = check_landscape(&problem, &w, 0.1);
        close(&format!("β along eigenvector {axis}"), beta, eigenvalue);
    }
    // Along the largest eigenvalue's eigenvector β is H's largest eigenvalue.
    let mut w = w_star;
    w[0] -= 1.3;
    close(
        "β along the top eigenvector",
        check_landscape(&problem, &w, 0.05),
        5.0,
    );
}

#[test]
fn landscape_measures_of_a_general_quadratic_match_their_closed_forms() {
    let (n, d) = (12, 5);
    let problem = Quadratic {
        n,
        d,
        x: values(n * d, 3),
        y: values(n, 4),
    };
    let w = values(d, 5);
    let beta = check_landscape(&problem, &w, 0.3);
    // ‖Hg‖/‖g‖ lies between H's extreme eigenvalues; here simply positive and finite.
    assert!(beta > 0.0 && beta.is_finite());
}

/// The smoke-sized MLP with BN, momentum and weight decay, so that the optimiser's actual
/// update differs from −lr·g.
fn small_config() -> Config {
    config_from_value(json!({
        "dataset": "mnist", "seed": 3, "batch_size": 8,
        "model": {"arch": "mlp", "hidden": [6, 5], "activation": "sigmoid", "init": "xavier"},
        "norm": {"kind": "batch"},
        "optim": {"lr": 0.5, "momentum": 0.9, "weight_decay": 0.01}
    }))
    .unwrap()
}

fn batch() -> (Tensor<2>, Tensor<2>) {
    let x = Tensor::<2>::from_data(
        TensorData::new(
            values(8 * 784, 9)
                .iter()
                .map(|v| *v as f32)
                .collect::<Vec<_>>(),
            [8, 784],
        ),
        &device(),
    );
    let mut y = vec![0f32; 80];
    for i in 0..8 {
        y[i * 10 + (i * 3) % 10] = 1.0;
    }
    (x, Tensor::from_data(TensorData::new(y, [8, 10]), &device()))
}

fn probe_loss(x: &Tensor<2>, y: &Tensor<2>) -> impl Fn(&Net) -> Result<Tensor<1>> {
    let (x, y) = (x.clone(), y.clone());
    move |net: &Net| {
        let mode = Mode::Train {
            update_running: false,
            dropout_seed: None,
            noise_seed: None,
        };
        Ok(cross_entropy(
            net.forward(x.clone(), Pass::untraced(mode))?,
            y.clone(),
        ))
    }
}

#[test]
fn ics_is_zero_for_the_first_layer_and_without_an_earlier_update() {
    let config = small_config();
    let net = config.build_net(&device());
    let (x, y) = batch();
    let loss = probe_loss(&x, &y);
    let layers = net.weight_layers();
    assert_eq!(
        layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["hidden 0", "hidden 1", "output"]
    );
    let optimizer = bn_exp::train::build_optimizer(&config);
    let multiples = [1.0];
    let at = |lr: f64| {
        let probe = Probe {
            optimizer: &optimizer,
            lr,
            layers: &layers,
            lr_multiples: &multiples,
        };
        measure(&net, &loss, &probe, 0).unwrap()
    };
    let moving = at(0.5);
    assert_eq!(moving.ics[0].l2, Some(0.0), "first layer");
    assert!(
        (moving.ics[0].cosine.unwrap() - 1.0).abs() < 1e-12,
        "first layer"
    );
    for later in &moving.ics[1..] {
        assert!(
            later.l2.unwrap() > 1e-6 && later.cosine.unwrap() < 1.0,
            "{}: an earlier layer moved, so its gradient must change: {later:?}",
            later.name
        );
    }
    // With a zero learning rate (and no momentum yet) no layer moves: no shift anywhere.
    let still = at(0.0);
    for layer in &still.ics {
        assert_eq!(layer.l2, Some(0.0), "{}", layer.name);
        assert_eq!(layer.relative, Some(0.0), "{}", layer.name);
    }
}

#[test]
fn ics_of_the_last_layer_matches_a_hand_built_shifted_net() {
    let config = small_config();
    let mut net = config.build_net(&device());
    let (x, y) = batch();
    let loss = probe_loss(&x, &y);
    // One real step first, so that the optimiser carries momentum into the measured update.
    let mut optimizer = bn_exp::train::build_optimizer(&config);
    let g = gradient(&net, &loss).unwrap();
    net = optimizer.step(0.5, net, g.params);
    let layers = net.weight_layers();
    let probe = Probe {
        optimizer: &optimizer,
        lr: 0.5,
        layers: &layers,
        lr_multiples: &[1.0],
    };
    let record = measure(&net, &loss, &probe, 1).unwrap();

    // By hand: every hidden layer (and its BN) takes the real update, the output layer not.
    let before = gradient(&net, &loss).unwrap();
    let stepped = optimizer.clone().step(
        0.5,
        net.clone(),
        GradientsParams::from_grads(loss(&net).unwrap().backward(), &net),
    );
    let output = layers
        .last()
        .expect("the output layer is the last weight layer");
    let shifted = with_params_of(stepped, &net, &output.params);
    let after = gradient(&shifted, &loss).unwrap();
    let id = output.weight;
    let (a, b) = (before.of(id).unwrap(), after.of(id).unwrap());
    let want = a
        .iter()
        .zip(b)
        .map(|(p, q)| (p - q).powi(2))
        .sum::<f64>()
        .sqrt();
    let got = record.ics[2].l2.unwrap();
    assert!(
        want > 1e-6,
        "the hidden layers' step must shift the output layer"
    );
    assert!(
        (got - want).abs() <= 1e-6 * want,
        "output layer ICS {got}, by hand {want}"
    );
    // The measures left the optimiser's state alone: a second measure gives the same record.
    assert_eq!(measure(&net, &loss, &probe, 1).unwrap(), record);
}

/// `net` with the parameters named by `ids` taken from `from` (same architecture): the output
/// layer put back to where it was before a step, say.
fn with_params_of(net: Net, from: &Net, ids: &[burn::module::ParamId]) -> Net {
    use burn::module::{ModuleMapper, ModuleVisitor, ParamId};
    use std::collections::HashMap;
    struct Collect<'a>(&'a [ParamId], HashMap<ParamId, TensorData>);
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.contains(&param.id) {
                self.1.insert(param.id, param.val().into_data());
            }
        }
    }
    struct Put(HashMap<ParamId, TensorData>);
    impl ModuleMapper for Put {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.0.remove(&param.id) {
                Some(data) => param.map(|t| {
                    let like = TensorCreationOptions::new(t.device()).with_dtype(t.dtype());
                    Tensor::from_data(data, like).require_grad()
                }),
                None => param,
            }
        }
    }
    let mut collect = Collect(ids, HashMap::new());
    from.visit(&mut collect);
    let mut put = Put(collect.1);
    let shifted = net.map(&mut put);
    assert!(put.0.is_empty(), "every named parameter was put back");
    shifted
}
