//! bn-exp on the GPU (cargo feature `gpu`, Burn's wgpu backend) against the CPU. Run with
//! `cargo test --profile gpu-test --features gpu --test gpu`; cargo builds this harness only with the
//! feature (`required-features` in Cargo.toml).
//! CI runs it on Mesa's software Vulkan driver (lavapipe); on a machine with a GPU it runs on
//! the GPU. Each test prints the adapter it ran on, and the first one fails unless the wgpu
//! backend is what ran, so a silent fallback to the CPU cannot pass.
//!
//! - every fused op: on the CPU its Flex kernel with its hand-written backward, on the GPU its
//!   reference body (Burn's own ops, differentiated by Burn); outputs and the gradient of every
//!   input under Σ upstream·output agree within float32 rounding (`CPU_GPU_TOL`);
//! - the paper's MLP with BN, through the real binary, 2,000 steps on the embedded MNIST on
//!   `--device gpu` and `--device cpu`: every evaluation within 0.1 points, losses within 1e-4
//!   relative.

// The helpers the suite's harness (tests/tests.rs) shares; this harness uses a few of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod numeric;

use bn_exp::backend::{self, DeviceKind};
use bn_exp::kernels::{self, Act, batch_norm_train_fused, conv3x3, cross_entropy, dense};
use burn::tensor::{DType, Device, Tensor, TensorData};
use numeric::{F32_TOL, flat, tensor};

/// Float32 on both sides, summed in different orders and, on the GPU, with different
/// formulas (the references). The suite holds float32 to `F32_TOL` of a float64 reference;
/// here neither side is that reference, so the two may differ by twice as much.
const CPU_GPU_TOL: f64 = 2.0 * F32_TOL;

fn gpu() -> Device {
    backend::train_device(DeviceKind::Gpu).expect("a wgpu adapter (CI installs lavapipe)")
}

fn cpu() -> Device {
    backend::train_device(DeviceKind::Cpu).unwrap()
}

/// Deterministic values in [-1, 1) (the float64 tests' generator), as float32.
fn values(n: usize, seed: u64) -> Vec<f32> {
    numeric::values(n, seed)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// A float32 input of an op under test on `device`: it takes gradients.
fn input<const D: usize>(v: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    tensor(v, shape, DType::F32, device).require_grad()
}

/// Σ upstream·out, upstream drawn from `seed`.
fn weighted<const D: usize>(out: Tensor<D>, seed: u64, device: &Device) -> Tensor<1> {
    let dims = out.dims();
    let n = dims.iter().product();
    (out * tensor(&values(n, seed), dims, DType::F32, device)).sum()
}

fn grad<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f64> {
    t.grad(grads).map(flat).unwrap_or_default()
}

/// Each named part of the GPU's result within `CPU_GPU_TOL` of the CPU's, relative to the
/// largest CPU value of that part, or to 1 when that is smaller: the inputs are O(1), so a
/// part that is zero but for rounding (a bias's gradient under BN, which cancels the bias) is
/// held to float32 rounding of O(1) values, not to its own noise.
fn assert_agree(what: &str, names: &[&str], cpu: &[Vec<f64>], gpu: &[Vec<f64>]) {
    assert_eq!(cpu.len(), names.len(), "{what}: parts");
    for ((name, c), g) in names.iter().zip(cpu).zip(gpu) {
        assert!(!c.is_empty(), "{what} {name}: no values");
        let scale = c.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        numeric::assert_close_at_scale(&format!("{what} {name}"), g, c, CPU_GPU_TOL, scale);
    }
}

/// One op's outputs and gradients on `device`.
type Case = fn(&Device) -> Vec<Vec<f64>>;

fn sigmoid_case(d: &Device) -> Vec<Vec<f64>> {
    let xs: Vec<f32> = values(7 * 3 * 5, 51).iter().map(|v| 12.0 * v).collect();
    let x = input(&xs, [7, 3, 5], d);
    let y = kernels::sigmoid(x.clone());
    let grads = weighted(y.clone(), 52, d).backward();
    vec![flat(y), grad(&x, &grads)]
}

fn batch_norm_case<const D: usize>(shape: [usize; D], d: &Device) -> Vec<Vec<f64>> {
    let c = shape[1];
    let n = shape.iter().product();
    let xs: Vec<f32> = values(n, 41).iter().map(|v| 3.0 * v + 0.5).collect();
    let gammas: Vec<f32> = values(c, 42).iter().map(|g| g + 1.5).collect();
    let (x, gamma, beta) = (
        input(&xs, shape, d),
        input(&gammas, [c], d),
        input(&values(c, 43), [c], d),
    );
    let out = batch_norm_train_fused(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let loss = weighted(out.output.clone(), 44, d)
        + weighted(out.mean.clone(), 45, d)
        + weighted(out.variance.clone(), 46, d);
    let grads = loss.backward();
    vec![
        flat(out.output),
        flat(out.mean),
        flat(out.variance),
        grad(&x, &grads),
        grad(&gamma, &grads),
        grad(&beta, &grads),
    ]
}

fn dense_case(d: &Device, bias: bool, bn: bool, act: Act) -> Vec<Vec<f64>> {
    let (n, k, m) = (60, 33, 17);
    let x = input(&values(n * k, 1), [n, k], d);
    let w = input(
        &values(k * m, 2).iter().map(|v| 0.3 * v).collect::<Vec<_>>(),
        [k, m],
        d,
    );
    let b = input(&values(m, 3), [m], d);
    let g = input(
        &values(m, 4).iter().map(|v| v + 1.5).collect::<Vec<_>>(),
        [m],
        d,
    );
    let be = input(&values(m, 5), [m], d);
    let out = dense(
        x.clone(),
        w.clone(),
        bias.then(|| b.clone()),
        bn.then(|| (g.clone(), be.clone(), 1e-5)),
        act,
    );
    let loss = weighted(out.output.clone(), 6, d) + weighted(out.pre.clone(), 7, d);
    let grads = loss.backward();
    let mut parts = vec![
        flat(out.output),
        flat(out.pre),
        grad(&x, &grads),
        grad(&w, &grads),
    ];
    if bias {
        parts.push(grad(&b, &grads));
    }
    if bn {
        parts.push(flat(out.mean));
        parts.push(flat(out.variance));
        parts.push(grad(&g, &grads));
        parts.push(grad(&be, &grads));
    }
    parts
}

fn conv_case(d: &Device) -> Vec<Vec<f64>> {
    conv_case_with(conv3x3, d)
}

/// The downsample modules' convolution (3×3, stride 2, no padding) on an odd-sided image.
fn conv_stride2_case(d: &Device) -> Vec<Vec<f64>> {
    conv_case_with(kernels::conv3x3_stride2, d)
}

fn conv_case_with(
    conv: fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>,
    d: &Device,
) -> Vec<Vec<f64>> {
    let (n, c, h, w, co) = (5, 3, 6, 7, 4);
    let x = input(&values(n * c * h * w, 11), [n, c, h, w], d);
    let wt = input(&values(co * c * 9, 12), [co, c, 3, 3], d);
    let b = input(&values(co, 13), [co], d);
    let out = conv(x.clone(), wt.clone(), Some(b.clone()));
    let grads = weighted(out.clone(), 14, d).backward();
    vec![
        flat(out),
        grad(&x, &grads),
        grad(&wt, &grads),
        grad(&b, &grads),
    ]
}

fn pool_case(d: &Device) -> Vec<Vec<f64>> {
    let x = input(&values(4 * 3 * 6 * 8, 21), [4, 3, 6, 8], d);
    let out = kernels::max_pool2x2_then(x.clone(), Act::Relu);
    let grads = weighted(out.clone(), 22, d).backward();
    vec![flat(out), grad(&x, &grads)]
}

/// The downsample modules' max-pool: overlapping 3×3 windows with stride 2.
fn pool3_case(d: &Device) -> Vec<Vec<f64>> {
    let x = input(&values(4 * 3 * 7 * 8, 23), [4, 3, 7, 8], d);
    let out = kernels::max_pool3x3_stride2(x.clone());
    let grads = weighted(out.clone(), 24, d).backward();
    vec![flat(out), grad(&x, &grads)]
}

/// An Inception stage's end: ReLU of a conv module's part, a max-pool's part as it is, joined
/// along the channels.
fn concat_case(d: &Device) -> Vec<Vec<f64>> {
    let a = input(&values(3 * 2 * 5 * 6, 41), [3, 2, 5, 6], d);
    let b = input(&values(3 * 4 * 5 * 6, 42), [3, 4, 5, 6], d);
    let out = kernels::concat_channels(a.clone(), b.clone(), [Act::Relu, Act::Identity]);
    let grads = weighted(out.clone(), 43, d).backward();
    vec![flat(out), grad(&a, &grads), grad(&b, &grads)]
}

fn loss_case(d: &Device) -> Vec<Vec<f64>> {
    let (n, c) = (9, 10);
    let z: Vec<f32> = values(n * c, 31).iter().map(|v| 8.0 * v).collect();
    let mut y = vec![0f32; n * c];
    for i in 0..n {
        y[i * c + (i * 7) % c] = 1.0;
    }
    let logits = input(&z, [n, c], d);
    let loss = cross_entropy(logits.clone(), tensor(&y, [n, c], DType::F32, d));
    let grads = (loss.clone() * 0.75).sum().backward();
    vec![flat(loss), grad(&logits, &grads)]
}

fn weight_norm_case(d: &Device) -> Vec<Vec<f64>> {
    let (rows, cols) = (37, 11);
    let v = input(&values(rows * cols, 61), [rows, cols], d);
    let g = input(
        &values(cols, 62).iter().map(|g| g + 1.5).collect::<Vec<_>>(),
        [cols],
        d,
    );
    let w = kernels::weight_norm_columns(v.clone(), g.clone());
    let grads = weighted(w.clone(), 63, d).backward();
    vec![flat(w), grad(&v, &grads), grad(&g, &grads)]
}

fn center_case(d: &Device) -> Vec<Vec<f64>> {
    let (n, c) = (30, 7);
    let xs: Vec<f32> = values(n * c, 71).iter().map(|v| 2.0 * v + 0.7).collect();
    let x = input(&xs, [n, c], d);
    let beta = input(&values(c, 72), [c], d);
    let (y, mean) = kernels::center_columns(x.clone(), beta.clone());
    let grads = (weighted(y.clone(), 73, d) + weighted(mean.clone(), 74, d)).backward();
    vec![flat(y), flat(mean), grad(&x, &grads), grad(&beta, &grads)]
}

#[test]
fn the_gpu_is_wgpu_and_says_which_adapter_it_is() {
    let name = backend::device_name(DeviceKind::Gpu).expect("a wgpu adapter");
    // What a tensor made for the GPU really lives on, read from Burn's device, not our flag.
    let t = Tensor::<1>::from_data(TensorData::new(vec![1f32, 2.0], [2]), &gpu());
    let on = backend::backend_of(&t.device());
    println!("gpu tests ran on: {on}, {name}");
    assert_eq!(on, "wgpu");
    assert_eq!(backend::backend_of(&cpu()), "flex");
    assert!(!name.is_empty(), "the adapter has no name");
}

#[test]
fn every_fused_op_on_the_gpu_matches_its_cpu_kernel() {
    let cases: [(&str, &[&str], Case); 11] = [
        ("sigmoid", &["y", "dx"], sigmoid_case),
        (
            "batch norm [N, C]",
            &["y", "mean", "var", "dx", "dgamma", "dbeta"],
            |d| batch_norm_case([60, 7], d),
        ),
        (
            "batch norm [N, C, H, W]",
            &["y", "mean", "var", "dx", "dgamma", "dbeta"],
            |d| batch_norm_case([6, 4, 5, 3], d),
        ),
        ("conv3x3", &["y", "dx", "dW", "db"], conv_case),
        (
            "conv3x3 stride 2",
            &["y", "dx", "dW", "db"],
            conv_stride2_case,
        ),
        ("max-pool then ReLU", &["y", "dx"], pool_case),
        ("max-pool 3x3 stride 2", &["y", "dx"], pool3_case),
        ("concatenation with ReLU", &["y", "da", "db"], concat_case),
        ("cross-entropy", &["loss", "dlogits"], loss_case),
        ("weight norm", &["w", "dv", "dg"], weight_norm_case),
        ("mean-only BN", &["y", "mean", "dx", "dbeta"], center_case),
    ];
    for (what, names, case) in cases {
        assert_agree(what, names, &case(&cpu()), &case(&gpu()));
    }
    for (bias, bn, act) in [
        (false, true, Act::Sigmoid),
        (true, false, Act::Relu),
        (true, false, Act::Tanh),
        (true, true, Act::Identity),
    ] {
        let mut names = vec!["output", "pre", "dx", "dW"];
        if bias {
            names.push("db");
        }
        if bn {
            names.extend(["mean", "var", "dgamma", "dbeta"]);
        }
        assert_agree(
            &format!("dense bias={bias} bn={bn} {act:?}"),
            &names,
            &dense_case(&cpu(), bias, bn, act),
            &dense_case(&gpu(), bias, bn, act),
        );
    }
}

/// The paper's MLP with BN for 2,000 steps, on each device, through the binary.
#[test]
fn the_paper_mlp_with_bn_trains_on_the_gpu_as_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let train = |device: &str| {
        let out = dir.path().join(device);
        let config = common::repo().join("configs/mnist_mlp_sigmoid_bn.json");
        let o = common::train_on_embedded(&config, &out)
            .arg("--quiet")
            .args(["--set", "steps=2000", "--set", "eval_every=500"])
            .args(["--set", "checkpoint_every=0", "--device", device])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let (on_cpu, on_gpu) = (train("cpu"), train("gpu"));
    let summary = |run: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
    };
    let gpu_summary = summary(&on_gpu);
    println!(
        "gpu tests ran on: {}, {}",
        gpu_summary["backend"].as_str().unwrap_or("?"),
        gpu_summary["device"].as_str().unwrap_or("?")
    );
    // The summary's backend is read from the device the run trained on (backend::backend_of).
    assert_eq!(gpu_summary["backend"], "wgpu");
    assert_eq!(summary(&on_cpu)["backend"], "flex");
    let (cpu_rows, gpu_rows) = (
        common::metrics_without_timing(&on_cpu),
        common::metrics_without_timing(&on_gpu),
    );
    assert_eq!(cpu_rows.len(), 5, "evaluations at 0, 500, ..., 2000");
    assert_eq!(cpu_rows.len(), gpu_rows.len());
    for (c, g) in cpu_rows.iter().zip(&gpu_rows) {
        let step = &c["step"];
        let (ca, ga) = (
            c["test_acc"].as_f64().unwrap(),
            g["test_acc"].as_f64().unwrap(),
        );
        println!("step {step}: test accuracy CPU {ca:.4}, GPU {ga:.4}");
        assert!(
            (ca - ga).abs() <= 0.001,
            "step {step}: CPU {ca}, GPU {ga} (more than 0.1 points apart)"
        );
        let (cl, gl) = (
            c["test_loss"].as_f64().unwrap(),
            g["test_loss"].as_f64().unwrap(),
        );
        assert!(
            (cl - gl).abs() <= 1e-4 * cl.abs(),
            "step {step}: test loss CPU {cl}, GPU {gl}"
        );
    }
    let (cf, gf) = (
        summary(&on_cpu)["final_test_acc"].as_f64().unwrap(),
        gpu_summary["final_test_acc"].as_f64().unwrap(),
    );
    assert!((cf - gf).abs() <= 0.001, "final: CPU {cf}, GPU {gf}");
}
