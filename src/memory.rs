//! Giving a storm's memory back once it is over.
//!
//! An allocator with a heap per thread (mimalloc, the binary's) keeps what a
//! thread freed for that thread's next allocations, and gives it back to
//! the system only when the thread next asks it to. After a boot storm the
//! async workers and the render threads go quiet, so the tens of megabytes
//! the storm freed stayed resident for ever. When the render cache's sweep
//! drops what the storm left, it asks every such thread to give its free
//! memory back: each one does, the next time it goes idle.
//!
//! The library does not know which allocator the binary chose: the binary
//! installs the call that gives one thread's free memory back
//! ([`set_release`]). Without one, asking does nothing.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// How many times a release was asked for.
static ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last request this thread answered.
    static ANSWERED: Cell<u64> = const { Cell::new(0) };
}

/// Installs the call that gives the calling thread's free memory back to
/// the system. The first one installed stays.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Asks every thread that calls [`release_if_asked`] to give its free
/// memory back, and does so on this thread at once.
pub fn ask_release() {
    ASKED.fetch_add(1, Ordering::Relaxed);
    release_if_asked();
}

/// Gives this thread's free memory back if a release was asked for since
/// this thread last did. Cheap otherwise: threads call it each time they
/// go idle.
pub fn release_if_asked() {
    let asked = ASKED.load(Ordering::Relaxed);
    if ANSWERED.with(|answered| answered.replace(asked)) == asked {
        return;
    }
    if let Some(release) = RELEASE.get() {
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static RELEASES: AtomicUsize = AtomicUsize::new(0);

    fn count_release() {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    // The only test that installs a release: the installed call and the
    // count of requests are process-wide.
    #[test]
    fn each_thread_releases_once_per_request() {
        set_release(count_release);
        let releases = || RELEASES.load(Ordering::SeqCst);
        let before = releases();
        ask_release();
        assert_eq!(releases(), before + 1, "the asking thread releases at once");
        release_if_asked();
        assert_eq!(releases(), before + 1, "and not again until asked again");
        std::thread::spawn(|| {
            release_if_asked();
            release_if_asked();
        })
        .join()
        .unwrap();
        assert_eq!(releases(), before + 2, "another thread, once, when idle");
    }
}
