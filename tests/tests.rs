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

mod batch_norm;
mod compare;
mod data_errors;
mod data_real;
mod fast_paths;
mod fetch_loopback;
mod fuzz;
mod kernels;
mod measures;
mod norm_layers;
mod plot;
mod reproduce;
mod run_lock;
mod slurm;
mod train;
