//! The network's fast paths against its op-by-op reference (`Net::forward_reference`), on whole
//! nets in float64, within 1e-10 relative to the largest reference value:
//! - the MLP's inference with BN folded into W and b, for every placement, activation and kind
//!   of fixed statistics, logits and traced pre-activations;
//! - the MLP's fused training layers, logits and the gradients of every parameter;
//! - the CNN's max-pool-before-g, in training and inference, logits and every gradient;
//! - the Inception's g applied as each stage concatenates, the same: and in float32 with the
//!   same bits, for the g it is taken for (ReLU, the sigmoid), as the studies train.
//!
//! Every parameter and BN statistic is perturbed away from its initial value first, so that
//! γ ≠ 1, β ≠ 0 and the running statistics are not (0, 1): a folding that dropped any of them
//! would still agree on a freshly built net.

use bn_exp::config::{Config, config_from_value};
use bn_exp::model::{Mode, Net, Pass, Trace};
use bn_exp::norm::InferenceStats;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Tensor};
use serde_json::{Value, json};

use crate::numeric::{self, assert_close, device, f64_tensor, flat, values};

const ACTIVATIONS: [&str; 3] = ["sigmoid", "relu", "tanh"];

/// Casts every float parameter and buffer to f64 and moves it off its initial value:
/// x · (1 + 0.5·u) + 0.2·v with u, v in [-1, 1), which keeps variances positive.
struct PerturbToF64 {
    seed: u64,
}

impl ModuleMapper for PerturbToF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.seed += 2;
        let seed = self.seed;
        param.map(|t| {
            let shape: [usize; D] = t.dims();
            let n = shape.iter().product();
            let t = t.cast(DType::F64).detach();
            let scale: Vec<f64> = values(n, seed).iter().map(|u| 1.0 + 0.5 * u).collect();
            let shift: Vec<f64> = values(n, seed + 1).iter().map(|v| 0.2 * v).collect();
            let (scale, shift) = (f64_tensor(&scale, shape), f64_tensor(&shift, shape));
            (t * scale + shift).require_grad()
        })
    }
}

/// A small MLP on MNIST or CNN on CIFAR-10 with two hidden `widths` (units or channels), and
/// the normalisation object `norm` under the config key `key`.
fn net_config(arch: &str, widths: [usize; 2], activation: &str, key: &str, norm: Value) -> Config {
    let (dataset, model) = match arch {
        "mlp" => (
            "mnist",
            json!({"arch": "mlp", "hidden": widths, "activation": activation, "init": "xavier"}),
        ),
        _ => (
            "cifar10",
            json!({"arch": "cnn", "channels": widths, "activation": activation, "init": "he"}),
        ),
    };
    let mut config = json!({
        "dataset": dataset, "model": model, "seed": 5, "batch_size": 6, "probe": {"batch_size": 6}
    });
    config[key] = norm;
    config_from_value(config).unwrap()
}

/// A net with BN at `placement`.
fn config(arch: &str, placement: &str, activation: &str) -> Config {
    let widths = if arch == "mlp" { [7, 5] } else { [3, 4] };
    net_config(
        arch,
        widths,
        activation,
        "bn",
        json!({"placement": placement}),
    )
}

fn net(config: &Config) -> Net {
    config
        .build_net(&device())
        .map(&mut PerturbToF64 { seed: 11 })
}

fn input(config: &Config, n: usize) -> Tensor<2> {
    let features = match config.dataset {
        bn_exp::data::Dataset::Mnist => 784,
        bn_exp::data::Dataset::Cifar10 => 3 * 32 * 32,
    };
    f64_tensor(&values(n * features, 3), [n, features])
}

/// Logits and traced pre-activations of one pass, fast or reference.
fn pass(net: &Net, x: Tensor<2>, mode: Mode, reference: bool) -> (Vec<f64>, Vec<Vec<f32>>) {
    let mut trace = Trace::default();
    let logits = if reference {
        net.forward_reference(x, Pass::traced(mode, &mut trace))
    } else {
        net.forward(x, Pass::traced(mode, &mut trace))
    }
    .unwrap();
    let pre = trace
        .pre_activations
        .into_iter()
        .map(|p| p.values)
        .collect();
    (flat(logits), pre)
}

/// Every parameter's gradient under the loss Σ upstream · logits, in module order.
fn gradients(net: &Net, x: Tensor<2>, mode: Mode, reference: bool) -> (Vec<f64>, Vec<Vec<f64>>) {
    let logits = if reference {
        net.forward_reference(x, Pass::untraced(mode))
    } else {
        net.forward(x, Pass::untraced(mode))
    }
    .unwrap();
    let [n, k] = logits.dims();
    // In the logits' own float: float64 here, float32 for the bit-for-bit checks.
    let upstream = f64_tensor(&values(n * k, 9), [n, k]).cast(logits.dtype());
    let out = flat(logits.clone());
    let grads = (logits * upstream).sum().backward();
    struct Collect<'a> {
        grads: &'a burn::tensor::Gradients,
        out: Vec<Vec<f64>>,
    }
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = param.val().grad(self.grads) {
                self.out.push(flat(g));
            }
        }
    }
    let mut collect = Collect {
        grads: &grads,
        out: Vec::new(),
    };
    net.visit(&mut collect);
    (out, collect.out)
}

fn train_mode() -> Mode {
    Mode::Train {
        update_running: false,
        dropout_seed: None,
        noise_seed: None,
    }
}

#[test]
fn mlp_folded_inference_equals_op_by_op_inference() {
    for placement in ["none", "before", "after"] {
        for activation in ACTIVATIONS {
            let config = config("mlp", placement, activation);
            let net = net(&config);
            for stats in [InferenceStats::Moving, InferenceStats::Population] {
                let what = format!("{placement}/{activation}/{stats:?}");
                let mode = Mode::Infer(stats);
                let (fast, fast_pre) = pass(&net, input(&config, 6), mode, false);
                let (slow, slow_pre) = pass(&net, input(&config, 6), mode, true);
                assert_close(&format!("{what} logits"), &fast, &slow);
                assert_eq!(fast_pre.len(), 2, "{what}: one trace per hidden layer");
                for (layer, (f, s)) in fast_pre.iter().zip(&slow_pre).enumerate() {
                    // Traces are copied to the host as f32.
                    let f: Vec<f64> = f.iter().map(|&v| f64::from(v)).collect();
                    let s: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
                    let scale = s.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                    for (a, b) in f.iter().zip(&s) {
                        assert!(
                            (a - b).abs() / scale < 1e-6,
                            "{what} layer {layer} pre-activation {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn mlp_fused_training_layers_equal_op_by_op_training() {
    for placement in ["none", "before", "after"] {
        for activation in ACTIVATIONS {
            let what = format!("{placement}/{activation}");
            let config = config("mlp", placement, activation);
            let net = net(&config);
            let (fast, fast_grads) = gradients(&net, input(&config, 6), train_mode(), false);
            let (slow, slow_grads) = gradients(&net, input(&config, 6), train_mode(), true);
            assert_close(&format!("{what} logits"), &fast, &slow);
            assert_eq!(fast_grads.len(), slow_grads.len(), "{what}");
            assert!(
                fast_grads.len() >= 5,
                "{what}: {} gradients",
                fast_grads.len()
            );
            for (k, (f, s)) in fast_grads.iter().zip(&slow_grads).enumerate() {
                assert_close(&format!("{what} gradient {k}"), f, s);
            }
        }
    }
}

#[test]
fn cnn_pool_before_activation_equals_activation_then_pool_on_a_whole_net() {
    for placement in ["none", "before"] {
        for activation in ACTIVATIONS {
            let config = config("cnn", placement, activation);
            let net = net(&config);
            for mode in [train_mode(), Mode::Infer(InferenceStats::Moving)] {
                let what = format!("{placement}/{activation}/{mode:?}");
                let (fast, fast_pre) = pass(&net, input(&config, 3), mode, false);
                let (slow, slow_pre) = pass(&net, input(&config, 3), mode, true);
                assert_close(&format!("{what} logits"), &fast, &slow);
                assert_eq!(
                    fast_pre, slow_pre,
                    "{what}: pre-activations are the same values"
                );
            }
            let what = format!("{placement}/{activation}");
            let (_, fast_grads) = gradients(&net, input(&config, 3), train_mode(), false);
            let (_, slow_grads) = gradients(&net, input(&config, 3), train_mode(), true);
            assert_eq!(fast_grads.len(), slow_grads.len(), "{what}");
            for (k, (f, s)) in fast_grads.iter().zip(&slow_grads).enumerate() {
                assert_close(&format!("{what} gradient {k}"), f, s);
            }
        }
    }
}

/// A tiny Inception (width 0.05: 5 stem channels, 1 to 9 per module) with BN at `placement`
/// (or none) and `activation`.
fn inception_config(placement: &str, activation: &str) -> Config {
    let norm = match placement {
        "none" => json!({"kind": "none"}),
        _ => json!({"kind": "batch", "placement": placement}),
    };
    config_from_value(json!({
        "dataset": "cifar10", "seed": 5, "batch_size": 3, "probe": {"batch_size": 3},
        "model": {"arch": "inception", "width": 0.05, "activation": activation, "init": "he"},
        "norm": norm,
    }))
    .unwrap()
}

#[test]
fn inception_g_applied_while_concatenating_equals_g_then_cat_on_a_whole_net() {
    for placement in ["none", "before", "after"] {
        for activation in ACTIVATIONS {
            let config = inception_config(placement, activation);
            let what = format!("inception {placement}/{activation}");
            let net64 = net(&config);
            for mode in [train_mode(), Mode::Infer(InferenceStats::Moving)] {
                let (fast, fast_pre) = pass(&net64, input(&config, 2), mode, false);
                let (slow, slow_pre) = pass(&net64, input(&config, 2), mode, true);
                assert_close(&format!("{what} {mode:?} logits"), &fast, &slow);
                assert_eq!(fast_pre, slow_pre, "{what} {mode:?}: pre-activations");
            }
            let (_, fast_grads) = gradients(&net64, input(&config, 2), train_mode(), false);
            let (_, slow_grads) = gradients(&net64, input(&config, 2), train_mode(), true);
            assert_eq!(fast_grads.len(), slow_grads.len(), "{what}");
            for (k, (f, s)) in fast_grads.iter().zip(&slow_grads).enumerate() {
                assert_close(&format!("{what} gradient {k}"), f, s);
            }
            // Float32, as training runs: the fused path must not change a study's numbers.
            // With tanh and with normalisation after g both sides run op by op, so these cases
            // hold `Inception::forward` to its gate: taking the fused path for tanh changes the
            // bits, and for normalisation after g the function (the float64 checks above).
            let net32 = config.build_net(&device());
            let x32 = || input(&config, 2).cast(DType::F32);
            let fast = gradients(&net32, x32(), train_mode(), false);
            let slow = gradients(&net32, x32(), train_mode(), true);
            assert!(fast == slow, "{what}: float32 logits or gradients differ");
        }
    }
}

/// A net with normalisation `norm` (a config's `norm` object) and widths `G` divides.
fn norm_config(arch: &str, norm: Value, activation: &str) -> Config {
    let widths = if arch == "mlp" { [6, 4] } else { [4, 6] };
    net_config(arch, widths, activation, "norm", norm)
}

/// Every normalisation layer beside plain BN, as config `norm` objects.
fn other_norms(placement: &str) -> Vec<serde_json::Value> {
    vec![
        json!({"kind": "renorm", "placement": placement}),
        json!({"kind": "renorm", "placement": placement, "stats_batch": 2}),
        json!({"kind": "batch", "placement": placement, "stats_batch": 3}),
        json!({"kind": "layer", "placement": placement}),
        json!({"kind": "group", "placement": placement, "groups": 2}),
        json!({"kind": "weight", "placement": placement}),
        json!({"kind": "weight", "placement": placement, "mean_only": true}),
    ]
}

/// The net for `config`, perturbed, with Batch Renorm's limits ramped up (r_max and d_max
/// above 1 and 0), so that r and d do something.
fn ramped_net(config: &Config) -> Net {
    let net = net(config);
    net.begin_step(config.steps);
    net
}

#[test]
fn every_normalisation_layer_takes_the_same_fast_paths_as_its_reference() {
    for placement in ["before", "after"] {
        for norm in other_norms(placement) {
            let config = norm_config("mlp", norm.clone(), "sigmoid");
            let net = ramped_net(&config);
            let what = format!("mlp {norm}");
            let (fast, fast_grads) = gradients(&net, input(&config, 6), train_mode(), false);
            let (slow, slow_grads) = gradients(&net, input(&config, 6), train_mode(), true);
            assert_close(&format!("{what} training logits"), &fast, &slow);
            assert_eq!(fast_grads.len(), slow_grads.len(), "{what}");
            for (k, (f, s)) in fast_grads.iter().zip(&slow_grads).enumerate() {
                assert_close(&format!("{what} gradient {k}"), f, s);
            }
            for stats in [InferenceStats::Moving, InferenceStats::Population] {
                let mode = Mode::Infer(stats);
                let (fast, _) = pass(&net, input(&config, 6), mode, false);
                let (slow, _) = pass(&net, input(&config, 6), mode, true);
                assert_close(&format!("{what} {stats:?} logits"), &fast, &slow);
            }
        }
    }
    for norm in other_norms("before") {
        let config = norm_config("cnn", norm.clone(), "relu");
        let net = ramped_net(&config);
        let what = format!("cnn {norm}");
        for mode in [train_mode(), Mode::Infer(InferenceStats::Moving)] {
            let (fast, _) = pass(&net, input(&config, 4), mode, false);
            let (slow, _) = pass(&net, input(&config, 4), mode, true);
            assert_close(&format!("{what} {mode:?} logits"), &fast, &slow);
        }
        let (_, fast_grads) = gradients(&net, input(&config, 4), train_mode(), false);
        let (_, slow_grads) = gradients(&net, input(&config, 4), train_mode(), true);
        assert_eq!(fast_grads.len(), slow_grads.len(), "{what}");
        for (k, (f, s)) in fast_grads.iter().zip(&slow_grads).enumerate() {
            assert_close(&format!("{what} gradient {k}"), f, s);
        }
    }
}

/// Santurkar et al.'s noise breaks the fused dense op's seam (it sits between the
/// normalisation and g) and sits before the CNN's pooling: both paths must still compute the
/// reference's function, with the noise, and a net without noise must not see it.
#[test]
fn noisy_nets_take_the_same_fast_paths_as_their_reference() {
    let noisy = Mode::Train {
        update_running: false,
        dropout_seed: None,
        noise_seed: Some(41),
    };
    let cases = [
        (
            "mlp",
            json!({"kind": "batch", "placement": "before", "noise": true}),
            "sigmoid",
        ),
        (
            "mlp",
            json!({"kind": "batch", "placement": "after", "noise": true}),
            "sigmoid",
        ),
        ("mlp", json!({"kind": "none", "noise": true}), "sigmoid"),
        (
            "cnn",
            json!({"kind": "batch", "placement": "before", "noise": true}),
            "relu",
        ),
        ("cnn", json!({"kind": "none", "noise": true}), "relu"),
    ];
    for (arch, norm, activation) in cases {
        let what = format!("{arch} {norm}");
        let config = norm_config(arch, norm, activation);
        let net = net(&config);
        let n = if arch == "mlp" { 6 } else { 4 };
        let (fast, fast_grads) = gradients(&net, input(&config, n), noisy, false);
        let (slow, slow_grads) = gradients(&net, input(&config, n), noisy, true);
        assert_close(&format!("{what} logits"), &fast, &slow);
        for (k, (f, s)) in fast_grads.iter().zip(&slow_grads).enumerate() {
            assert_close(&format!("{what} gradient {k}"), f, s);
        }
        // The noise does something, changes with the seed, and is off without a seed.
        let (quiet, _) = pass(&net, input(&config, n), train_mode(), true);
        let other_seed = Mode::Train {
            update_running: false,
            dropout_seed: None,
            noise_seed: Some(42),
        };
        let (other, _) = pass(&net, input(&config, n), other_seed, true);
        let differs = |a: &[f64], b: &[f64]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-6);
        assert!(differs(&fast, &quiet), "{what}: the noise changed nothing");
        assert!(
            differs(&fast, &other),
            "{what}: two noise seeds gave one output"
        );
    }
}

/// The noise is s·a + m with the draws of `bn_exp::norm::noise::noise_values`: the first
/// hidden layer's traced pre-activation with noise equals that map applied to the same layer's
/// pre-activation without it (later layers see different inputs, so only the first compares).
#[test]
fn noise_scales_and_shifts_each_normalised_value_by_its_draws() {
    for (arch, n) in [("mlp", 6), ("cnn", 4)] {
        let act = if arch == "mlp" { "sigmoid" } else { "relu" };
        let config = norm_config(arch, json!({"kind": "batch", "noise": true}), act);
        let net = net(&config);
        let seed = 1234;
        let noisy = Mode::Train {
            update_running: false,
            dropout_seed: None,
            noise_seed: Some(seed),
        };
        let (_, with) = pass(&net, input(&config, n), noisy, true);
        let (_, without) = pass(&net, input(&config, n), train_mode(), true);
        let (scale, shift) =
            bn_exp::norm::noise_values(&config.norm.noise_params, seed, 0, without[0].len());
        let want: Vec<f64> = without[0]
            .iter()
            .zip(scale.iter().zip(&shift))
            .map(|(&a, (&s, &m))| f64::from(s) * f64::from(a) + f64::from(m))
            .collect();
        let got: Vec<f64> = with[0].iter().map(|&v| f64::from(v)).collect();
        numeric::assert_close_within(&format!("{arch} noisy layer 0"), &got, &want, 1e-6);
    }
}

#[test]
fn weight_norm_data_init_standardises_every_pre_activation_on_its_batch() {
    for (arch, norm) in [
        ("mlp", json!({"kind": "weight"})),
        ("mlp", json!({"kind": "weight", "mean_only": true})),
        ("cnn", json!({"kind": "weight"})),
    ] {
        let config = norm_config(arch, norm.clone(), "sigmoid");
        let n = if arch == "mlp" { 32 } else { 8 };
        let x = input(&config, n);
        let net = config
            .build_net(&device())
            .map(&mut PerturbToF64 { seed: 3 })
            .with_data_init(x.clone())
            .unwrap();
        let (_, pre) = pass(&net, x, train_mode(), true);
        for (layer, values) in pre.iter().enumerate() {
            let units = config.layers()[layer].width;
            let per_unit = values.len() / units;
            // Pre-activations are [N, C] or [N, C, H, W]: unit u's values, strided.
            let inner = per_unit / n;
            for u in 0..units {
                let vals: Vec<f64> = (0..n)
                    .flat_map(|i| {
                        let start = (i * units + u) * inner;
                        values[start..start + inner].iter().map(|&v| f64::from(v))
                    })
                    .collect();
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
                assert!(
                    mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                    "{arch} {norm} layer {layer} unit {u}: mean {mean}, variance {var}"
                );
            }
        }
    }
}
