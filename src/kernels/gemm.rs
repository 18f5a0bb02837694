//! Matrix products for the fused kernels: `gemm` called directly, and a second thread for the
//! big ones that does not have to be woken.
//!
//! The paper's MLP makes two products per step big enough to share (the first layer's forward
//! `x·W` and its `∂W = xᵀ·∂z`, 60×784×100 = 4.7·10⁶ multiply-adds each, about 100 µs on one
//! core) and many small ones between them. Handing half of a big product to a rayon worker cost
//! more than it saved, 410 → 655 µs a step: the worker falls asleep in the gaps, and waking it
//! takes tens of µs in this VM. So bn-exp keeps one helper thread of its own that spins for up
//! to a millisecond after each job (yielding the core to anything else runnable) before it
//! sleeps: during training the next big product arrives well within that, and the hand-over
//! costs well under a µs. The helper is used only when rayon may use more than one thread
//! (`RAYON_NUM_THREADS` unset or above 1) and the caller is not itself a rayon worker.
//!
//! A shared machine must not make this slower than one thread. When another busy process holds
//! the second core, the helper is often not running when a job is posted. So a posted job is
//! only the helper's once it *claims* it: the caller computes its own half, then takes the
//! unclaimed half back and computes it too, which costs what one thread costs. A caller whose
//! half the helper did claim waits for it briefly by spinning, then by sleeping, so that a
//! descheduled helper gets the core instead of a waiter burning it. And every job taken back
//! halves how long the helper spins between jobs (every claimed one doubles it again, up to a
//! millisecond): on a busy machine it soon sleeps instead of taking time from the caller.
//! `bench --contended` measures the result against one thread under the same load.
//!
//! A big product is split into two halves of its output rows or columns *whatever the thread
//! count*: with no helper the caller computes both halves itself. Each output element is one
//! dot product over the full inner dimension either way, but `gemm` chooses its blocking of
//! that dimension from the shape it is given, so the whole product and its halves can round
//! differently (they did: the MLP's losses differed in the seventh digit between one and two
//! threads). Splitting always makes a run's numbers independent of how many threads it has.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::common::Real;

/// Products with at least this many multiply-adds are split over the caller and the helper.
pub const SPLIT_MIN_MACS: usize = 2_000_000;

/// The longest the helper spins for the next job before it sleeps, in µs (see the module docs
/// for how the spin shrinks on a busy machine).
const HELPER_SPIN_MAX_US: u32 = 1000;

/// How long a caller spins for the helper's half before it sleeps until woken.
const WAIT_SPIN: Duration = Duration::from_micros(100);

/// A row-major matrix operand: its values and (row stride, column stride), both positive.
pub(super) struct Operand<'a, T> {
    pub(super) data: &'a [T],
    pub(super) rs: isize,
    pub(super) cs: isize,
}

/// Whether `gemm` 0.19 computes an `m×n` product as dot products along the depth, summing each
/// in lanes, when both operands are contiguous along the depth (`m · n <= 16 · 16` in
/// gemm-common's `gemm_basic_generic`). Its other kernels sum in another order, so a caller that
/// changes an operand's layout keeps a run's bits only if it leaves such products as they were.
pub(super) fn sums_in_lanes(m: usize, n: usize) -> bool {
    m * n <= 16 * 16
}

/// `dst[m×n] (+)= lhs[m×k]·rhs[k×n]`, dst row-major and contiguous. With `accumulate`, the
/// product is added to what `dst` holds (used to add the bias for free). Products of at least
/// [`SPLIT_MIN_MACS`] are computed as two halves, one of them on the helper thread when one
/// may be used.
pub(super) fn gemm_into<T: Real>(
    dims: (usize, usize, usize),
    dst: &mut [T],
    lhs: Operand<T>,
    rhs: Operand<T>,
    accumulate: bool,
) {
    gemm_into_on(dims, dst, lhs, rhs, accumulate, Helper::available);
}

/// [`gemm_into`] with the helper given by `helper` (asked for only when the product is split).
fn gemm_into_on<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    lhs: Operand<T>,
    rhs: Operand<T>,
    accumulate: bool,
    helper: impl FnOnce() -> Option<&'static Helper>,
) {
    assert_eq!(dst.len(), m * n, "gemm output size");
    if m * n * k == 0 {
        if !accumulate {
            dst.fill(T::ZERO);
        }
        return;
    }
    // The last element each operand's strides reach must lie inside its slice.
    let last = |op: &Operand<T>, rows: usize, cols: usize| {
        (rows - 1) as isize * op.rs + (cols - 1) as isize * op.cs
    };
    assert!(
        lhs.rs > 0 && lhs.cs > 0 && rhs.rs > 0 && rhs.cs > 0,
        "gemm strides"
    );
    assert!(
        (last(&lhs, m, k) as usize) < lhs.data.len(),
        "gemm lhs bounds"
    );
    assert!(
        (last(&rhs, k, n) as usize) < rhs.data.len(),
        "gemm rhs bounds"
    );
    let raw = RawProduct {
        m,
        n,
        k,
        dst: dst.as_mut_ptr(),
        dst_rs: n as isize,
        lhs: (lhs.data.as_ptr(), lhs.rs, lhs.cs),
        rhs: (rhs.data.as_ptr(), rhs.rs, rhs.cs),
        accumulate,
    };
    if m * n * k >= SPLIT_MIN_MACS {
        let (first, second) = raw.halves();
        // SAFETY: the halves cover disjoint parts of `dst` and read inside `lhs` and `rhs`
        // (checked above); both finish before this function returns.
        let (first, second) = (|| unsafe { first.run() }, || unsafe { second.run() });
        match helper() {
            Some(helper) => helper.join(&first, second),
            None => {
                first();
                second();
            }
        }
    } else {
        // SAFETY: checked above; `dst` is exclusively borrowed.
        unsafe { raw.run() }
    }
}

/// A product described by raw pointers, so that halves of it can run on two threads.
#[derive(Clone, Copy)]
struct RawProduct<T> {
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    /// Row stride of `dst`: the full product's n, also for a half of its columns.
    dst_rs: isize,
    lhs: (*const T, isize, isize),
    rhs: (*const T, isize, isize),
    accumulate: bool,
}

// SAFETY: a RawProduct is only run while the buffers it points into are borrowed by
// `gemm_into`, which waits for both halves; the halves write disjoint elements.
unsafe impl<T> Send for RawProduct<T> {}
unsafe impl<T> Sync for RawProduct<T> {}

impl<T: Real> RawProduct<T> {
    /// Split the longer side of the output in two.
    fn halves(self) -> (Self, Self) {
        let (mut a, mut b) = (self, self);
        if self.m >= self.n {
            let m1 = self.m / 2;
            a.m = m1;
            b.m = self.m - m1;
            // SAFETY: offsets of rows m1.. stay inside dst and lhs (m1 < m).
            unsafe {
                b.dst = self.dst.offset(m1 as isize * self.dst_rs);
                b.lhs.0 = self.lhs.0.offset(m1 as isize * self.lhs.1);
            }
        } else {
            let n1 = self.n / 2;
            a.n = n1;
            b.n = self.n - n1;
            // SAFETY: offsets of columns n1.. stay inside dst and rhs (n1 < n).
            unsafe {
                b.dst = self.dst.add(n1);
                b.rhs.0 = self.rhs.0.offset(n1 as isize * self.rhs.2);
            }
        }
        (a, b)
    }

    /// # Safety
    /// The pointers must be valid for the extents m, n, k and their strides, and the elements
    /// of `dst` this product writes must not be accessed by anyone else meanwhile.
    unsafe fn run(&self) {
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst,
                1,
                self.dst_rs,
                self.accumulate,
                self.lhs.0,
                self.lhs.2,
                self.lhs.1,
                self.rhs.0,
                self.rhs.2,
                self.rhs.1,
                T::from_f64(1.0),
                T::from_f64(1.0),
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// The states of the one job slot.
const IDLE: u8 = 0;
/// A job is in the slot; neither the helper nor the caller has claimed it yet.
const POSTED: u8 = 1;
/// The helper claimed the job and is running it.
const CLAIMED: u8 = 2;
/// The helper finished the job it claimed.
const DONE: u8 = 3;

/// The helper thread and its one job slot.
struct Helper {
    /// Held by the one caller whose job is in flight; others compute alone.
    busy: Mutex<()>,
    job: Mutex<Option<Job>>,
    /// [`IDLE`] → [`POSTED`] (by the caller) → [`CLAIMED`] (by the helper) → [`DONE`], or
    /// [`POSTED`] → [`IDLE`] when the caller takes its job back unclaimed.
    state: AtomicU8,
    panicked: AtomicBool,
    sleeping: AtomicBool,
    /// The caller waiting for [`DONE`] sleeps; the helper wakes it.
    waiter: Mutex<Option<Thread>>,
    /// How long the helper spins between jobs now, in µs.
    spin_us: AtomicU32,
    thread: Thread,
}

/// Waits, when dropped, until the job posted to the helper is either taken back unclaimed or
/// finished: also when the caller's own half panics, so that the helper never runs a closure
/// borrowed from a frame that has unwound. Taken back, the job is run here unless unwinding.
struct Settle<'a> {
    helper: &'a Helper,
    job: &'a (dyn Fn() + Sync),
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let helper = self.helper;
        if helper
            .state
            .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // The helper never started it (it was not running): take the job back.
            helper.job.lock().expect("job slot").take();
            helper.spin_less();
            if !std::thread::panicking() {
                (self.job)();
            }
            return;
        }
        helper.wait_done();
    }
}

/// A borrowed closure handed to the helper; `Helper::join` keeps it alive until it has run.
struct Job(*const (dyn Fn() + Sync));

// SAFETY: the closure is Sync and outlives the job (see `Helper::join`).
unsafe impl Send for Job {}

static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();

impl Helper {
    /// The helper, when a second thread may be used from this thread.
    fn available() -> Option<&'static Helper> {
        if rayon::current_thread_index().is_some() {
            return None;
        }
        *HELPER.get_or_init(|| (rayon::current_num_threads() > 1).then(Helper::start))
    }

    fn start() -> &'static Helper {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Helper>();
        let handle = std::thread::Builder::new()
            .name("bn-exp-gemm".into())
            .spawn(move || {
                let helper = rx.recv().expect("helper handle");
                helper.serve();
            })
            .expect("cannot start the gemm helper thread");
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            busy: Mutex::new(()),
            job: Mutex::new(None),
            state: AtomicU8::new(IDLE),
            panicked: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            waiter: Mutex::new(None),
            spin_us: AtomicU32::new(HELPER_SPIN_MAX_US),
            thread: handle.thread().clone(),
        }));
        tx.send(helper).expect("helper thread alive");
        helper
    }

    /// Run `a` on the helper (or here, if the helper does not claim it in time) and `b` here;
    /// return when both have finished.
    fn join(&self, a: &(dyn Fn() + Sync), b: impl FnOnce()) {
        let Ok(_busy) = self.busy.try_lock() else {
            a();
            b();
            return;
        };
        // SAFETY (lifetime): `a` is only called by the helper after it claims the job, and
        // `Settle` does not let this function return before the claimed job is done.
        let erased: *const (dyn Fn() + Sync + '_) = a;
        let job = Job(unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(
                erased,
            )
        });
        *self.job.lock().expect("job slot") = Some(job);
        self.state.store(POSTED, Ordering::Release);
        if self.sleeping.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
        {
            let _settle = Settle {
                helper: self,
                job: a,
            };
            b();
        }
        assert!(
            !self.panicked.swap(false, Ordering::SeqCst),
            "a matrix product panicked on the helper thread"
        );
    }

    /// Wait for the claimed job: spin for [`WAIT_SPIN`], then sleep until the helper wakes
    /// this thread. Leaves the slot [`IDLE`].
    fn wait_done(&self) {
        let started = Instant::now();
        while self.state.load(Ordering::Acquire) != DONE {
            if started.elapsed() < WAIT_SPIN {
                std::hint::spin_loop();
                continue;
            }
            *self.waiter.lock().expect("waiter slot") = Some(std::thread::current());
            // The helper may have finished between the check and the registration: look again
            // before sleeping (a wake-up that came first makes `park` return at once).
            if self.state.load(Ordering::Acquire) != DONE {
                std::thread::park_timeout(Duration::from_millis(10));
            }
            *self.waiter.lock().expect("waiter slot") = None;
        }
        self.state.store(IDLE, Ordering::Release);
        self.spin_more();
    }

    /// A job was taken back unclaimed: the helper should sleep sooner.
    fn spin_less(&self) {
        let now = self.spin_us.load(Ordering::Relaxed);
        self.spin_us.store(now / 2, Ordering::Relaxed);
    }

    /// A job was claimed: the helper may spin longer again.
    fn spin_more(&self) {
        let now = self.spin_us.load(Ordering::Relaxed);
        let more = now.saturating_mul(2).clamp(1, HELPER_SPIN_MAX_US);
        self.spin_us.store(more, Ordering::Relaxed);
    }

    /// The helper thread's loop: claim and run posted jobs, spin a while between them, then
    /// sleep.
    fn serve(&self) {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let claimed = self
                .state
                .compare_exchange(POSTED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if claimed {
                let job = self.job.lock().expect("job slot").take();
                if let Some(Job(f)) = job {
                    // SAFETY: see `join`: the closure is alive until `DONE` is seen.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                            (*f)()
                        }));
                    self.panicked.store(result.is_err(), Ordering::SeqCst);
                }
                self.state.store(DONE, Ordering::Release);
                if let Some(waiter) = self.waiter.lock().expect("waiter slot").as_ref() {
                    waiter.unpark();
                }
                idle_since = Instant::now();
                continue;
            }
            let spin = Duration::from_micros(u64::from(self.spin_us.load(Ordering::Relaxed)));
            if idle_since.elapsed() < spin {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            } else {
                self.sleeping.store(true, Ordering::SeqCst);
                if self.state.load(Ordering::SeqCst) != POSTED {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                self.sleeping.store(false, Ordering::SeqCst);
                idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::common::test_values as values;

    /// `dst` after `dst (+)= lhs·rhs`, with `lhs` read transposed when `lhs_t` (the layout of
    /// the ∂W = xᵀ·∂z products), on the given helper or on this thread alone.
    fn product<T: Real>(
        (m, n, k): (usize, usize, usize),
        lhs_t: bool,
        accumulate: bool,
        helper: Option<&'static Helper>,
    ) -> Vec<T> {
        let lhs_values = values::<T>(m * k, 1);
        let rhs_values = values::<T>(k * n, 2);
        let mut dst = values::<T>(m * n, 3);
        let (rs, cs) = if lhs_t {
            (1, m as isize)
        } else {
            (k as isize, 1)
        };
        let lhs = Operand {
            data: &lhs_values,
            rs,
            cs,
        };
        let rhs = Operand {
            data: &rhs_values,
            rs: n as isize,
            cs: 1,
        };
        gemm_into_on((m, n, k), &mut dst, lhs, rhs, accumulate, || helper);
        dst
    }

    fn bits<T: Real>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.to_f64().to_bits()).collect()
    }

    /// The helper is forced: a helper of the test's own, or none. So the test depends neither
    /// on the thread count nor on whether the shared helper is busy.
    fn split_equals_one_thread<T: Real>(tolerance: f64) {
        let helper = Helper::start();
        // Wider than tall (split by columns), taller than wide (split by rows), odd sizes, the
        // MLP's first layer (60×784×100, forward and ∂W layouts), and one below the split size.
        for dims in [
            (64, 256, 128),
            (257, 33, 129),
            (60, 100, 784),
            (784, 100, 60),
            (60, 32, 784),
        ] {
            for (lhs_t, accumulate) in [(false, false), (false, true), (true, false)] {
                let what = format!("{dims:?} lhs_t={lhs_t} accumulate={accumulate}");
                let alone = product::<T>(dims, lhs_t, accumulate, None);
                let split = product::<T>(dims, lhs_t, accumulate, Some(helper));
                assert_eq!(
                    bits(&alone),
                    bits(&split),
                    "{what}: the helper changed the result"
                );
                // And both are the product: every element against a plain triple loop.
                let (m, n, k) = dims;
                let (l, r, d0) = (
                    values::<T>(m * k, 1),
                    values::<T>(k * n, 2),
                    values::<T>(m * n, 3),
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut want = if accumulate {
                            d0[i * n + j].to_f64()
                        } else {
                            0.0
                        };
                        for p in 0..k {
                            let a = if lhs_t { l[p * m + i] } else { l[i * k + p] };
                            want += a.to_f64() * r[p * n + j].to_f64();
                        }
                        let got = split[i * n + j].to_f64();
                        assert!(
                            (got - want).abs() <= tolerance * (1.0 + want.abs()),
                            "{what} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn split_product_is_bit_identical_to_one_thread_f32() {
        split_equals_one_thread::<f32>(1e-4);
    }

    #[test]
    fn split_product_is_bit_identical_to_one_thread_f64() {
        split_equals_one_thread::<f64>(1e-12);
    }
}
