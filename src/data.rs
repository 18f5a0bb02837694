//! TEMPORARY minimal loader (replaced by the data layer).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cli::DatasetName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Mnist,
    Cifar10,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    #[default]
    Scale,
    Binarize,
    Standardize,
}

pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Split {
    pub fn feature_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

pub struct LoadedData {
    pub train: Split,
    pub test: Split,
    pub classes: Vec<String>,
    pub dataset: Dataset,
    pub preprocess: Preprocess,
    pub channel_mean: Vec<f32>,
    pub channel_std: Vec<f32>,
}

fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut out)?;
    Ok(out)
}

fn mnist_split(dir: &Path, prefix: &str) -> Result<Split> {
    let img = gunzip(&dir.join(format!("mnist/{prefix}-images-idx3-ubyte.gz")))?;
    let lab = gunzip(&dir.join(format!("mnist/{prefix}-labels-idx1-ubyte.gz")))?;
    let len = lab.len() - 8;
    Ok(Split {
        images: img[16..].iter().map(|&p| p as f32 / 255.0).collect(),
        labels: lab[8..].to_vec(),
        len,
        channels: 1,
        height: 28,
        width: 28,
    })
}

fn cifar_split(dir: &Path, files: &[&str]) -> Result<Split> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = std::fs::read(dir.join("cifar-10-batches-bin").join(f))?;
        for rec in bytes.chunks(3073) {
            labels.push(rec[0]);
            images.extend(rec[1..].iter().map(|&p| p as f32 / 255.0));
        }
    }
    Ok(Split {
        len: labels.len(),
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
    })
}

pub fn load(dir: &Path, dataset: Dataset, preprocess: Preprocess) -> Result<LoadedData> {
    let (train, test) = match dataset {
        Dataset::Mnist => (mnist_split(dir, "train")?, mnist_split(dir, "t10k")?),
        Dataset::Cifar10 => (
            cifar_split(
                dir,
                &[
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ],
            )?,
            cifar_split(dir, &["test_batch.bin"])?,
        ),
    };
    Ok(LoadedData {
        train,
        test,
        classes: (0..10).map(|i| i.to_string()).collect(),
        dataset,
        preprocess,
        channel_mean: vec![],
        channel_std: vec![],
    })
}

/// Entry point of `bn-exp data verify`.
pub fn verify_command(_dir: &Path) -> Result<ExitCode> {
    bail!("`bn-exp data verify` is not built yet")
}

/// Entry point of `bn-exp data info`.
pub fn info_command(_dir: &Path, _dataset: DatasetName) -> Result<ExitCode> {
    bail!("`bn-exp data info` is not built yet")
}
