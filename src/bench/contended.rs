//! `bench --contended`: each step workload with a busy process beside it, as a user's machine
//! has a browser, a compile or a second run. The busy process is bn-exp itself (`bench --busy`),
//! a spinning loop pinned to the last core. Under that same load the workload is timed on one
//! thread and on the default threads; the default should never be slower than one thread by
//! more than [`CONTENDED_TARGET`]. (On two cores, the default's helper thread shares a core with
//! the busy loop: a wait for it that spins instead of sleeping costs a scheduler tick a step.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::steps::run_worker;
use crate::backend::DeviceKind;

/// The most the default threads may cost under load, as a multiple of one thread's step.
pub const CONTENDED_TARGET: f64 = 1.3;

/// How long a busy process spins at most: it is killed when its measurement ends, and this
/// bound ends it even if the bench that started it was killed first.
const BUSY_LIMIT: Duration = Duration::from_secs(900);

/// One workload timed under load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContendedResult {
    pub workload: String,
    /// The default's threads (`--threads`, else `$RAYON_NUM_THREADS`, else every core).
    pub threads: usize,
    pub one_thread_us: f64,
    pub default_us: f64,
    /// `default_us / one_thread_us`.
    pub slowdown: f64,
}

/// Time `workload` on one thread and on `threads`, each in its own child process, with a busy
/// process spinning on the last core the whole time.
pub fn time_contended(workload: &str, reps: usize, threads: usize) -> Result<ContendedResult> {
    let busy = BusyProcess::start()?;
    // Let the busy loop reach its core before the first timed step.
    std::thread::sleep(Duration::from_millis(200));
    let one = run_worker(workload, reps, 1, DeviceKind::Cpu)?;
    let default = run_worker(workload, reps, threads, DeviceKind::Cpu)?;
    drop(busy);
    Ok(ContendedResult {
        workload: workload.to_string(),
        threads,
        one_thread_us: one.median_us,
        default_us: default.median_us,
        slowdown: default.median_us / one.median_us,
    })
}

/// A running `bn-exp bench --busy`, killed when dropped (on an error too).
struct BusyProcess(Child);

impl BusyProcess {
    fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the bn-exp executable")?;
        let child = Command::new(exe)
            .args(["bench", "--busy"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the busy process for --contended")?;
        Ok(Self(child))
    }
}

impl Drop for BusyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The busy process's body (`bench --busy`): pin this process to the last core, then spin
/// until killed, or for [`BUSY_LIMIT`] at most.
pub fn busy_loop() {
    pin_to_last_core();
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < BUSY_LIMIT {
        for _ in 0..1_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// On Linux, this process runs on the last core only; elsewhere the scheduler places it.
fn pin_to_last_core() {
    #[cfg(target_os = "linux")]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it for an
        // index below CPU_SETSIZE (1024), and sched_setaffinity reads `size_of` bytes of it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET((cores - 1).min(1023), &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}
