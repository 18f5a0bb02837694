//! bn-exp's integration tests, as one test binary: each file beside this one is a module of it,
//! so a test's name starts with its file's (`batch_norm::constant_input_gives_beta`), and
//! `cargo test --release --test tests batch_norm::` runs one file's tests. The GPU tests
//! (`gpu.rs`, cargo feature `gpu`) are a harness of their own; see docs/testing.md.
//!
//! The tests of every module run on the threads of one process: none may change what the
//! process shares (its environment, current folder, thread pools or signal handlers). A test
//! that needs another environment gives it to the child process it starts, and each test works
//! in a temporary folder of its own.

// Helpers shared by the modules below.
mod common;
mod numeric;
mod reference;

mod architecture;
mod batch_norm;
mod bench;
mod cli;
mod compare;
mod data_errors;
mod data_real;
mod docs_tables;
mod emit;
mod fast_paths;
mod fetch_loopback;
mod fuzz;
mod inception;
mod kernels;
mod measures;
mod norm_layers;
mod plan;
mod plot;
mod reproduce;
mod run_lock;
mod slurm;
mod tensorboard;
mod train;

/// With `autotests = false`, a test file that nobody names here would never be compiled, and its
/// tests would silently stop running: this fails first.
#[test]
fn every_test_file_is_a_module_of_this_harness() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let harness = std::fs::read_to_string(dir.join("tests.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module = path.extension().is_some_and(|e| e == "rs")
            || (path.is_dir() && path.join("mod.rs").exists());
        // gpu.rs is a harness of its own (Cargo.toml's second [[test]]).
        if !is_module || name == "tests" || name == "gpu" {
            continue;
        }
        if !harness
            .lines()
            .any(|line| line.trim() == format!("mod {name};"))
        {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/tests.rs does not name: {missing:?}"
    );
}
