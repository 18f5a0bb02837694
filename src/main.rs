//! The `bn-exp` binary: parse the command line, run, print the error chain once.

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: training allocates and frees the same few tensor sizes
/// every step, and glibc returns large blocks to the kernel (mmap/munmap), so each step paid for
/// fresh page faults and, with rayon's threads, TLB shootdowns. See docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match bn_exp::cli::run() {
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
