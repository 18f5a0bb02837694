//! bn-exp: reproduce Ioffe & Szegedy (2015), *Batch Normalization*, on MNIST and CIFAR-10,
//! and test the claims made about it.
//!
//! The library holds everything; `src/main.rs` is a thin shell around [`cli::run`].

pub mod backend;
pub mod batch_norm;
pub mod bench;
pub mod cli;
pub mod compare;
pub mod config;
pub mod data;
pub mod fetch;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod rng;
pub mod train;
