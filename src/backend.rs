//! The one place that chooses Burn's backend and device.
//!
//! # The CPU (the default)
//!
//! bn-exp runs on Burn's `flex` backend: pure Rust, builds offline, and measured here at about
//! 1.3 ms per step of the paper's MLP and 0.22 s per step of the CIFAR CNN before the fused
//! kernels, against 1.5 ms and 7 s for `ndarray`, whose convolution is unusable for the CNN
//! (see `docs/performance.md`). Every fused kernel in `crate::kernels` is a Flex kernel.
//!
//! # The GPU (cargo feature `gpu`, `--device gpu`)
//!
//! Burn's `wgpu` backend, on whichever API the machine offers (Vulkan, Metal or DX12). It needs
//! no LLVM at build time, unlike Burn's `cuda` and `cpu` backends, whose build scripts download
//! an LLVM bundle and fail offline. Each fused op's trait has a default body written with
//! Burn's own ops (its reference); `crate::kernels` lists `Cube` (every cubecl runtime, wgpu
//! among them) in each `#[backend_extension]` and gives it empty impls, so on the GPU every
//! fused op runs its reference and autodiff differentiates it op by op. No new kernels.
//!
//! The adapter is wgpu's default choice (a discrete GPU first; `CUBECL_WGPU_DEFAULT_DEVICE`
//! overrides it). On a machine without a GPU, Mesa's software Vulkan driver (lavapipe) is an
//! adapter too, which is how CI runs the GPU path: [`device_name`] says which one ran, so a
//! run cannot pass for a GPU run on the CPU unnoticed.

use anyhow::Result;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// Where a run computes: the `device` config key and the `--device` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Burn's `flex` backend with bn-exp's fused kernels.
    #[default]
    Cpu,
    /// Burn's `wgpu` backend (needs the `gpu` cargo feature).
    Gpu,
}

impl DeviceKind {
    /// The backend's name, as every run's summary and every bench figure records it.
    pub fn backend_name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "flex",
            DeviceKind::Gpu => "wgpu",
        }
    }
}

/// The device for inference and data (no autodiff). Errors, with what to do, when the GPU is
/// asked for but this build has no `gpu` feature or the machine has no adapter.
pub fn device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        DeviceKind::Gpu => gpu::device(),
    }
}

/// Which backend a device (or a tensor's device) really is: "flex", "wgpu", or "other".
/// Every run's summary records this of the device it trained on, so a run asked for the GPU
/// that computed elsewhere would say so.
pub fn backend_of(device: &Device) -> &'static str {
    match device.clone().inner().as_dispatch() {
        burn::backend::DispatchDevice::Flex(_) => "flex",
        #[cfg(feature = "gpu")]
        burn::backend::DispatchDevice::Cube(_) => "wgpu",
        _ => "other",
    }
}

/// The device for training: the same backend with autodiff on.
pub fn train_device(kind: DeviceKind) -> Result<Device> {
    Ok(device(kind)?.autodiff())
}

/// What the device is, for people: "CPU (flex, 2 threads)" or the GPU adapter's name, API and
/// type, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)".
pub fn device_name(kind: DeviceKind) -> Result<String> {
    match kind {
        DeviceKind::Cpu => Ok(format!("CPU (flex, {} threads)", threads())),
        DeviceKind::Gpu => gpu::adapter_name(),
    }
}

/// The most bytes one uploaded data tensor may take on `kind`: a GPU caps one buffer (wgpu
/// binds at most 128 MiB by default; lavapipe refuses 188 MB), so the data goes up in 64 MiB
/// chunks there. `None`: no cap (the CPU).
pub fn max_buffer_bytes(kind: DeviceKind) -> Option<usize> {
    match kind {
        DeviceKind::Cpu => None,
        DeviceKind::Gpu => Some(64 << 20),
    }
}

/// Threads rayon may use in this process (flex parallelises only large ops).
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(feature = "gpu")]
mod gpu {
    use std::sync::OnceLock;

    use anyhow::{Result, anyhow};
    use burn::backend::wgpu::graphics::AutoGraphicsApi;
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, try_init_setup};
    use burn::tensor::Device;

    /// The wgpu runtime, set up once per process: the adapter's name, or why there is none.
    fn setup() -> &'static Result<String, String> {
        static SETUP: OnceLock<Result<String, String>> = OnceLock::new();
        SETUP.get_or_init(|| {
            let setup = try_init_setup::<AutoGraphicsApi>(
                &WgpuDevice::default(),
                RuntimeOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            let info = setup.adapter.get_info();
            Ok(format!(
                "{} ({:?}, {:?})",
                info.name, info.backend, info.device_type
            ))
        })
    }

    pub fn device() -> Result<Device> {
        adapter_name()?;
        Ok(Device::new(WgpuDevice::default()))
    }

    pub fn adapter_name() -> Result<String> {
        setup().clone().map_err(|why| {
            anyhow!(
                "no GPU adapter for --device gpu ({why}); install the machine's Vulkan driver \
                 and loader (Debian: `apt-get install libvulkan1 mesa-vulkan-drivers` gives \
                 the software one), or run with --device cpu"
            )
        })
    }
}

#[cfg(not(feature = "gpu"))]
mod gpu {
    use anyhow::{Result, bail};
    use burn::tensor::Device;

    const NOT_BUILT: &str = "this bn-exp was built without GPU support; build it with \
                             `cargo build --release --features gpu`, or run with --device cpu";

    pub fn device() -> Result<Device> {
        bail!(NOT_BUILT)
    }

    pub fn adapter_name() -> Result<String> {
        bail!(NOT_BUILT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_devices_are_flex_with_or_without_autodiff() {
        assert_eq!(backend_of(&device(DeviceKind::Cpu).unwrap()), "flex");
        assert_eq!(backend_of(&train_device(DeviceKind::Cpu).unwrap()), "flex");
    }
}
