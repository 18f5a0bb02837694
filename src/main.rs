//! The `bn-exp` binary: parse the command line, run, print the error chain once.
//!
//! Everything that knows about flags, printing and exit codes is here and in [`cli`]; the
//! library (`bn_exp`) takes typed requests and returns typed outcomes.

mod cli;
mod outcomes;
mod terminal;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: training allocates and frees the same few tensor sizes
/// every step, and glibc returns large blocks to the kernel (mmap/munmap), so each step paid for
/// fresh page faults and, with rayon's threads, TLB shootdowns. See docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the option after `mi_option_eager_commit_delay`, 14).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory mapped: by default mimalloc returns it to the kernel 10 ms after a free, and
/// a CNN step (~100 ms) then re-faults and re-zeroes hundreds of MB of fresh pages, measured as a
/// fifth of the step. Peak memory is unchanged; the pages are reused by the next step.
fn keep_freed_memory_mapped() {
    // SAFETY: sets a process-wide allocator option before any threads are started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory_mapped();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
