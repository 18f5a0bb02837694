//! `bn-exp bench`'s own numbers: the FLOPs it divides by, the peak it compares with, and the
//! busy process of `--contended`, which must not outlive the bench. (What the numbers come out
//! at is measured by `bench`, never asserted here: this machine is shared.)

use std::fs;

use crate::common::{bn_exp, stderr};

/// The command lines of the processes of this build's binary that are `bench --busy` (another
/// checkout's tests, running at the same time, have a binary of their own).
fn busy_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let ours = words.first().map(String::as_str) == Some(env!("CARGO_BIN_EXE_bn-exp"));
        if ours && words.iter().any(|w| w == "--busy") {
            found.push(words.join(" "));
        }
    }
    found
}

#[test]
fn bench_reports_flops_peak_and_the_slowdown_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = bn_exp()
        .args([
            "bench",
            "--only",
            "mlp",
            "--reps",
            "3",
            "--contended",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();

    // The paper's MLP, 784-100-100-100-10 at batch 60: 2 FLOPs per multiply-add, and a training
    // step is three products of the forward pass's size.
    let macs = 784 * 100 + 100 * 100 + 100 * 100 + 100 * 10;
    let step = &report["steps"][0];
    assert_eq!(
        step["flops_per_step"].as_f64(),
        Some((3 * 2 * macs * 60) as f64)
    );

    let one = report["peak_gflops_one_core"].as_f64().unwrap();
    let all = report["peak_gflops"].as_f64().unwrap();
    assert!(one > 0.0 && all > 0.0, "peaks {one}, {all}");

    let c = &report["contended"][0];
    assert_eq!(c["workload"], "mlp");
    let (one_us, default_us) = (
        c["one_thread_us"].as_f64().unwrap(),
        c["default_us"].as_f64().unwrap(),
    );
    assert!(one_us > 0.0 && default_us > 0.0);
    assert!((c["slowdown"].as_f64().unwrap() - default_us / one_us).abs() < 1e-12);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("under load") && text.contains("slowdown"),
        "{text}"
    );
    assert!(
        text.contains("GFLOP/s") && text.contains("% peak"),
        "{text}"
    );

    // The busy process is killed with its measurement.
    assert!(busy_processes().is_empty(), "{:?}", busy_processes());
}

#[test]
fn contended_is_refused_on_the_gpu() {
    let o = bn_exp()
        .args(["bench", "--only", "mlp", "--contended", "--device", "gpu"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--contended"), "{}", stderr(&o));
}
