//! Matrix products for the fused kernels: `gemm` called directly, and a second thread for the
//! big ones that does not have to be woken.
//!
//! The paper's MLP makes two products per step big enough to share (the first layer's forward
//! `x·W` and its `∂W = xᵀ·∂z`, 60×784×100 = 4.7·10⁶ multiply-adds each, about 100 µs on one
//! core) and many small ones between them. Handing half of a big product to a rayon worker cost
//! more than it saved, 410 → 655 µs a step: the worker falls asleep in the gaps, and waking it
//! takes tens of µs in this VM. So bn-exp keeps one helper thread of its own that spins for a
//! millisecond after each job (yielding the core to anything else runnable) before it sleeps:
//! during training the next big product arrives well within that, and the hand-over costs well
//! under a µs. A product is split into two halves of its output rows or columns; each output
//! element is still one dot product over the full inner dimension, so the result is bit for bit
//! what one thread computes. The helper is used only when rayon may use more than one thread
//! (`RAYON_NUM_THREADS` unset or above 1) and the caller is not itself a rayon worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::Real;

/// Products with at least this many multiply-adds are split over the caller and the helper.
pub const SPLIT_MIN_MACS: usize = 2_000_000;

/// How long the helper spins for the next job before it sleeps.
const HELPER_SPIN: Duration = Duration::from_millis(1);

/// A row-major matrix operand: its values and (row stride, column stride), both positive.
pub(super) struct Operand<'a, T> {
    pub(super) data: &'a [T],
    pub(super) rs: isize,
    pub(super) cs: isize,
}

/// `dst[m×n] (+)= lhs[m×k]·rhs[k×n]`, dst row-major and contiguous. With `accumulate`, the
/// product is added to what `dst` holds (used to add the bias for free).
pub(super) fn gemm_into<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    lhs: Operand<T>,
    rhs: Operand<T>,
    accumulate: bool,
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
    if m * n * k >= SPLIT_MIN_MACS
        && let Some(helper) = Helper::available()
    {
        let (first, second) = raw.halves();
        // SAFETY: the halves cover disjoint parts of `dst` and read inside `lhs` and `rhs`
        // (checked above); both finish before this function returns.
        helper.join(&|| unsafe { first.run() }, || unsafe { second.run() });
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

/// The helper thread and its one job slot.
struct Helper {
    /// Held by the one caller whose job is in flight; others compute alone.
    busy: Mutex<()>,
    job: Mutex<Option<Job>>,
    posted: AtomicBool,
    done: AtomicBool,
    panicked: AtomicBool,
    sleeping: AtomicBool,
    thread: Thread,
}

/// Spins until the helper has set `done`, when dropped.
struct WaitForHelper<'a>(&'a AtomicBool);

impl Drop for WaitForHelper<'_> {
    fn drop(&mut self) {
        while !self.0.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
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
            posted: AtomicBool::new(false),
            done: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            thread: handle.thread().clone(),
        }));
        tx.send(helper).expect("helper thread alive");
        helper
    }

    /// Run `a` on the helper and `b` here; return when both have finished.
    fn join(&self, a: &(dyn Fn() + Sync), b: impl FnOnce()) {
        let Ok(_busy) = self.busy.try_lock() else {
            a();
            b();
            return;
        };
        // SAFETY (lifetime): `a` is only called before `done` is set, and this function does
        // not return before it sees `done`.
        let erased: *const (dyn Fn() + Sync + '_) = a;
        let job = Job(unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(
                erased,
            )
        });
        *self.job.lock().expect("job slot") = Some(job);
        self.done.store(false, Ordering::SeqCst);
        self.posted.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
        {
            // Waits for the helper when dropped: also if `b` panics, so that `a` (borrowed from
            // the caller's frame) is never run after that frame has unwound.
            let _wait = WaitForHelper(&self.done);
            b();
        }
        assert!(
            !self.panicked.swap(false, Ordering::SeqCst),
            "a matrix product panicked on the helper thread"
        );
    }

    /// The helper thread's loop: run posted jobs, spin a while between them, then sleep.
    fn serve(&self) {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.posted.load(Ordering::Acquire) {
                let job = self.job.lock().expect("job slot").take();
                self.posted.store(false, Ordering::SeqCst);
                if let Some(Job(f)) = job {
                    // SAFETY: see `join`: the closure is alive until `done` is set.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                            (*f)()
                        }));
                    self.panicked.store(result.is_err(), Ordering::SeqCst);
                }
                self.done.store(true, Ordering::Release);
                idle_since = Instant::now();
            } else if idle_since.elapsed() < HELPER_SPIN {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            } else {
                self.sleeping.store(true, Ordering::SeqCst);
                if !self.posted.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                self.sleeping.store(false, Ordering::SeqCst);
                idle_since = Instant::now();
            }
        }
    }
}
