//! The physical limit every step is measured against: this machine's float32 FMA throughput,
//! timed at the start of a bench with a tight loop of independent fused multiply-adds, the
//! instruction a matrix product is made of. A workload's GFLOP/s over it says how far the
//! step is from what the cores can do, in the same invocation and under the same load.

use std::hint::black_box;
use std::time::Instant;

/// Independent accumulators per loop: enough to cover an FMA's latency (4–5 cycles) on two
/// FMA ports, so the loop is bound by throughput, not by the chain of dependent adds.
const CHAINS: usize = 12;

/// How long one core is timed; the best of a few tries is kept, so a descheduled moment does
/// not lower the peak.
const TRY_SECONDS: f64 = 0.05;
const TRIES: usize = 3;

/// GFLOP/s (2 per FMA) that `threads` cores reach together, each running the FMA loop at once.
pub fn fma_peak_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| (0..TRIES).map(|_| one_core_gflops()).fold(0.0, f64::max)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

/// One core's GFLOP/s over about [`TRY_SECONDS`], with the widest FMA this CPU has.
fn one_core_gflops() -> f64 {
    let mut flops = 0.0;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < TRY_SECONDS {
        flops += fma_block().0;
    }
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// Run one block of FMAs; returns the floating-point operations it did, and one accumulator's
/// final value (what the tests check the body against).
fn fma_block() -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked above.
            return unsafe { fma_block_avx512() };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked above.
            return unsafe { fma_block_avx2() };
        }
    }
    fma_block_portable()
}

/// Iterations of the loop in one block: long enough that the call costs nothing beside it.
const ITERATIONS: usize = 4096;

/// Without a known vector FMA: `CHAINS` lanes of plain multiply-adds, which the compiler may
/// vectorise with whatever the target has.
fn fma_block_portable() -> (f64, f32) {
    let mut acc = [1.0f32; CHAINS * 8];
    let (a, b) = (black_box(A), black_box(B));
    for _ in 0..ITERATIONS {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    let acc = black_box(acc);
    ((ITERATIONS * CHAINS * 8 * 2) as f64, acc[0])
}

/// x ← A·x + B from x = 1: stays near 1, never overflows nor flushes to zero.
const A: f32 = 0.999_9;
const B: f32 = 1e-4;

/// Eight lanes of FMAs a chain (AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_block_avx2() -> (f64, f32) {
    use std::arch::x86_64::{_mm256_cvtss_f32, _mm256_fmadd_ps, _mm256_set1_ps};
    let a = _mm256_set1_ps(black_box(A));
    let b = _mm256_set1_ps(black_box(B));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..ITERATIONS {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let acc = black_box(acc);
    (
        (ITERATIONS * CHAINS * 8 * 2) as f64,
        _mm256_cvtss_f32(acc[0]),
    )
}

/// Sixteen lanes of FMAs a chain (AVX-512).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_block_avx512() -> (f64, f32) {
    use std::arch::x86_64::{_mm512_cvtss_f32, _mm512_fmadd_ps, _mm512_set1_ps};
    let a = _mm512_set1_ps(black_box(A));
    let b = _mm512_set1_ps(black_box(B));
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..ITERATIONS {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let acc = black_box(acc);
    (
        (ITERATIONS * CHAINS * 16 * 2) as f64,
        _mm512_cvtss_f32(acc[0]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every body computes what it counts: x ← A·x + B from 1, whose closed form after n steps
    /// is Aⁿ + B·(1 − Aⁿ)/(1 − A), to float32 rounding over 4096 steps (1e-3 relative; a body
    /// that skipped or doubled its steps would be off by 0.3 or more).
    #[test]
    fn each_fma_body_computes_its_closed_form() {
        let (a, b, n) = (f64::from(A), f64::from(B), ITERATIONS as i32);
        let expected = a.powi(n) + b * (1.0 - a.powi(n)) / (1.0 - a);
        let check = |(flops, value): (f64, f32), lanes: usize, name: &str| {
            assert_eq!(flops, (ITERATIONS * CHAINS * lanes * 2) as f64, "{name}");
            let err = (f64::from(value) - expected).abs() / expected;
            assert!(err < 1e-3, "{name}: {value} against {expected}");
        };
        check(fma_block_portable(), 8, "portable");
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                check(unsafe { fma_block_avx2() }, 8, "avx2");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                check(unsafe { fma_block_avx512() }, 16, "avx512");
            }
        }
    }

    #[test]
    fn the_peak_is_a_positive_rate() {
        let one = fma_peak_gflops(1);
        assert!(one.is_finite() && one > 0.1, "{one} GFLOP/s");
    }
}
