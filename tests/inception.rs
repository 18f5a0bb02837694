//! Zhang et al.'s small Inception (`model.arch = "inception"`): its gradient against central
//! differences in float64, and short runs on the small CIFAR-format set through the binary
//! (training, the same bytes on one thread and two, and an exact resume).

use std::path::Path;
use std::process::Output;

use bn_exp::config::{Config, config_from_value};
use bn_exp::model::{Mode, Pass};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Tensor};
use serde_json::{Value, json};

use crate::common::{self, SmallCifar, bn_exp, repo, stderr};
use crate::numeric::{assert_gradient, device, f64_tensor, flat, values};

/// A tiny Inception (width 0.05: 5 stem channels, 1 to 9 per module) on CIFAR-10's 32×32
/// images, with `norm` as its normalisation and the smooth `activation`.
fn tiny(norm: Value, activation: &str) -> Config {
    config_from_value(json!({
        "dataset": "cifar10", "seed": 3, "batch_size": 3, "probe": {"batch_size": 3},
        "model": {"arch": "inception", "width": 0.05, "activation": activation, "init": "he"},
        "norm": norm,
    }))
    .unwrap()
}

/// Every float parameter cast to f64, leaving its values as they are.
struct ToF64;

impl ModuleMapper for ToF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(DType::F64).detach().require_grad())
    }
}

/// ∂(Σ upstream · logits)/∂x at 48 coordinates of the input, by autodiff and by central
/// differences, through every op of the net: the stem, the 1×1 and 3×3 modules and their
/// concatenation, both downsample modules (stride-2 conv beside the 3×3/2 max-pool), global
/// average pooling and the classifier.
#[test]
fn the_gradient_through_every_op_matches_central_differences() {
    for (norm, activation) in [
        (json!({"kind": "batch", "placement": "before"}), "tanh"),
        (json!({"kind": "none"}), "sigmoid"),
    ] {
        let config = tiny(norm.clone(), activation);
        let net = config.build_net(&device()).map(&mut ToF64);
        let (n, features) = (2, 3 * 32 * 32);
        let x0 = values(n * features, 7);
        let upstream = f64_tensor(&values(n * 10, 8), [n, 10]);
        let mode = Mode::PROBE;
        let loss_at = |x: &[f64], grad: bool| {
            let mut t = f64_tensor(x, [n, features]);
            if grad {
                t = t.require_grad();
            }
            let logits = net.forward(t.clone(), Pass::untraced(mode)).unwrap();
            ((logits * upstream.clone()).sum(), t)
        };
        let (loss, x) = loss_at(&x0, true);
        let grads = loss.backward();
        let analytic = flat(x.grad(&grads).unwrap());
        // 48 coordinates spread over both images and every channel.
        let picked: Vec<usize> = (0..48).map(|i| (i * 127 + 5) % (n * features)).collect();
        let at: Vec<f64> = picked.iter().map(|&i| x0[i]).collect();
        let want: Vec<f64> = picked.iter().map(|&i| analytic[i]).collect();
        assert_gradient(&format!("{norm} {activation}: ∂x"), &want, &at, |moved| {
            let mut x = x0.clone();
            for (&i, &v) in picked.iter().zip(moved) {
                x[i] = v;
            }
            flat(loss_at(&x, false).0)[0]
        });
    }
}

/// `bn-exp train` of a small Inception (width 0.125) on the small CIFAR-format set, 40 steps,
/// on `threads` threads, with extra flags.
fn train_small(set: &SmallCifar, out: &Path, threads: &str, extra: &[&str]) -> Output {
    let mut command = bn_exp();
    command
        .args(["train", "--quiet", "--config"])
        .arg(repo().join("configs/cifar10_inception_relu_bn.json"))
        .arg("--data-dir")
        .arg(&set.data_dir)
        .arg("--out")
        .arg(out)
        .env(bn_exp::data::CATALOGUE_ENV, &set.catalogue_path)
        .env("RAYON_NUM_THREADS", threads)
        .args(common::set_flags(&[
            "model.width=0.125",
            "batch_size=20",
            "steps=40",
            "eval_every=20",
            "eval_batch_size=30",
            "checkpoint_every=20",
            "probe.batch_size=20",
            "norm.population_batches=2",
        ]))
        .args(extra);
    command.output().unwrap()
}

fn metrics_lines(run: &Path) -> Vec<Value> {
    common::metrics_without_timing(run)
}

#[test]
fn a_small_inception_trains_the_same_on_one_thread_and_two_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let set = common::write_small_cifar(&dir.path().join("cifar"));
    let one = dir.path().join("one");
    let o = train_small(&set, &one, "1", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["metrics.jsonl", "activations.jsonl", "summary.json"] {
        assert!(one.join(file).is_file(), "no {file}");
    }
    let metrics = metrics_lines(&one);
    let steps: Vec<u64> = metrics
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 20, 40]);
    let loss = |m: &Value| m["test_loss"].as_f64().unwrap();
    assert!(metrics.iter().all(|m| loss(m).is_finite()), "{metrics:?}");
    // 19 conv modules, each a probed layer with its BN.
    let activations = std::fs::read_to_string(one.join("activations.jsonl")).unwrap();
    let first: Value = serde_json::from_str(activations.lines().next().unwrap()).unwrap();
    assert_eq!(first["layers"].as_array().unwrap().len(), 19);

    // Two threads: the same bytes.
    let two = dir.path().join("two");
    let o = train_small(&set, &two, "2", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(metrics_lines(&two), metrics, "2 threads against 1");

    // Stopped at step 20, then resumed on two threads: the same bytes.
    let resumed = dir.path().join("resumed");
    let o = train_small(&set, &resumed, "1", &["--stop-after", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train_small(&set, &resumed, "2", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(metrics_lines(&resumed), metrics, "resumed against straight");

    // Its curves are the paper's Figure 2, not the MLP's Figure 1(a).
    let o = bn_exp()
        .args(["plot", "--study"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("plots"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let index = std::fs::read_to_string(dir.path().join("plots/index.md")).unwrap();
    assert!(index.contains("Figure 2: test accuracy"), "{index}");
    assert!(!index.contains("Figure 1(a)"), "{index}");
}
