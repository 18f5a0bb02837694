//! The PyTorch BatchNorm reference vectors (`tests/fixtures/batch_norm_pytorch.json`, float64,
//! remade by `scripts/make_reference_vectors.py`; its `doc` field says what each case holds).
//! Tensors are flattened row-major `(N, C[, H, W])`.

use serde::Deserialize;

#[derive(Deserialize)]
pub struct Reference {
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Stats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

#[derive(Deserialize)]
pub struct Population {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub y_eval: Vec<f64>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub shape: Vec<usize>,
    pub eps: f64,
    pub momentum: f64,
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub batches: Vec<Vec<f64>>,
    pub upstream: Vec<f64>,
    pub y_train: Vec<f64>,
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
    pub running_after_each_batch: Vec<Stats>,
    pub running_init: Stats,
    pub eval_x: Vec<f64>,
    pub y_eval_running: Vec<f64>,
    pub population: Population,
}

pub fn reference() -> Reference {
    let path = crate::common::repo().join("tests/fixtures/batch_norm_pytorch.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON parses")
}
