//! `bench --compare-pytorch`: the same workloads in PyTorch (`scripts/pytorch_reference.py`),
//! timed in the same invocation, and our time over theirs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::steps::{SHIPPED_NETS, STEP_WORKLOADS, StepResult, device_flag};
use crate::backend::DeviceKind;
use crate::progress::Progress;

/// Run `scripts/pytorch_reference.py` (needs PyTorch) on the workloads it has among `steps`,
/// and print our time over theirs.
pub(super) fn compare_pytorch(
    steps: &[StepResult],
    reps: usize,
    threads: usize,
    device: DeviceKind,
    progress: &dyn Progress,
) -> Result<Option<serde_json::Value>> {
    let script = Path::new("scripts/pytorch_reference.py");
    if !script.exists() {
        progress.note(&format!(
            "--compare-pytorch: {} not found (run from the repository root)",
            script.display()
        ));
        return Ok(None);
    }
    let theirs_too: Vec<&str> = steps
        .iter()
        .map(|s| s.workload.as_str())
        .filter(|w| STEP_WORKLOADS[..SHIPPED_NETS].contains(w))
        .collect();
    if theirs_too.is_empty() {
        progress.note(&format!(
            "--compare-pytorch: the script times only {}",
            STEP_WORKLOADS[..SHIPPED_NETS].join(", ")
        ));
        return Ok(None);
    }
    let python = std::env::var("BN_EXP_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(script)
        .args(["--only", &theirs_too.join(",")])
        .args([
            "--reps",
            &reps.to_string(),
            "--threads",
            &threads.to_string(),
            "--device",
            device_flag(device, true),
        ])
        .output()
        .with_context(|| format!("cannot run {python} {}", script.display()))?;
    if !out.status.success() {
        progress.note(&format!(
            "--compare-pytorch: the PyTorch reference failed (is torch installed for {python}?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return Ok(None);
    }
    let theirs: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the PyTorch reference printed no JSON")?;
    progress.result(&format!(
        "PyTorch {} on {}",
        theirs["torch"].as_str().unwrap_or("?"),
        theirs["device"].as_str().unwrap_or("?")
    ));
    progress.result(&format!(
        "{:<14} {:>14} {:>14} {:>10}",
        "workload", "bn-exp µs", "PyTorch µs", "ratio"
    ));
    for s in steps {
        if let Some(t) = theirs["steps"][&s.workload]["median_us"].as_f64() {
            progress.result(&format!(
                "{:<14} {:>14.0} {:>14.0} {:>9.2}x",
                s.workload,
                s.median_us,
                t,
                s.median_us / t
            ));
        }
    }
    Ok(Some(theirs))
}
