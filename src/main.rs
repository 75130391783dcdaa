//! The `deskboot` command: `serve` runs the server; every other command is a
//! client of its admin API (or, for `identify`, of the built-in catalog).

mod cli;

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: under a boot storm glibc's arenas
/// took 15% of the server's CPU, much of it waiting on each other's locks
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay` (mimalloc.h); libmimalloc-sys
/// names only the options of mimalloc 2.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives the calling thread's free memory back to the system.
fn collect_this_thread() {
    // SAFETY: mi_collect only walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn main() -> ExitCode {
    // Freed pages go back to the system at once. By default mimalloc waits a
    // second and does it during a later allocation, and a server gone quiet
    // after a boot storm makes none: the 30 MB the render cache's sweep
    // frees stayed resident (BENCHMARKS.md, "sled's flusher").
    // SAFETY: sets one of mimalloc's options; no allocation is in flight.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // mimalloc returns the pages a thread freed only as that thread goes on
    // allocating; threads gone quiet after a storm never do. Asked once the
    // storm is over (deskboot::render::memory), each collects its heap instead.
    deskboot::render::memory::set_release(collect_this_thread);
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("deskboot: {e:#}");
            ExitCode::from(2)
        }
    }
}
