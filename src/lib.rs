//! bn-exp: reproduce Ioffe & Szegedy (2015), *Batch Normalization*, on MNIST and CIFAR-10,
//! and test the claims made about it.
//!
//! The library holds everything but the command line: each command is a function that takes a
//! typed request and returns a typed outcome ([`train::train`], [`compare::compare`],
//! [`plot::make_plots`], [`data::verify_all`], [`fetch::fetch`], [`bench::bench`]). The binary
//! (`src/main.rs`, `src/cli.rs`) turns flags into requests, prints outcomes and picks exit codes.
//! `docs/architecture.md` maps the modules.

pub mod backend;
pub mod bench;
pub mod compare;
pub mod config;
pub mod data;
pub mod fetch;
pub mod groups;
pub mod kernels;
pub mod labels;
pub mod measures;
pub mod metrics;
pub mod model;
pub mod norm;
pub mod plot;
pub mod progress;
pub mod reproduce;
pub mod rng;
pub mod run;
pub mod tensor;
pub mod train;
