//! Giving a storm's memory, and an administrator's bulk work's, back once
//! it is over.
//!
//! An allocator with a heap per thread (mimalloc, the binary's) keeps what a
//! thread freed for that thread's next allocations, and gives it back to
//! the system only when the thread next asks it to. After a boot storm the
//! async workers and the render threads go quiet and would keep about
//! 10 MiB of what the storm freed for ever. When the render cache's sweep
//! drops what the storm left, it asks every such thread to give its free
//! memory back: each one does, the next time it goes idle.
//!
//! Administrators' bulk work (an import, an export, a restore) leaves
//! something else behind: sled's old copies of the tree nodes it rewrote
//! or read in, hundreds of megabytes still allocated, whose freeing sled
//! deferred until enough later store operations go by, which may be hours
//! on a quiet server. The thread that did the work has them freed at once
//! ([`note_bulk_work`]) and asks every thread to give its free memory
//! back, as the next sweep does again. What stays is what sled keeps
//! (its page table and cache, rewritten by the work) scattered over the
//! allocator's pages among the freed blocks (BENCHMARKS.md).
//!
//! The library does not know which allocator the binary chose: the binary
//! installs the call that gives one thread's free memory back
//! ([`set_release`]). Without one, asking does nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// How many times a release was asked for.
static ASKED: AtomicU64 = AtomicU64::new(0);

/// Whether bulk work ended since the last sweep.
static BULK_WORK: AtomicBool = AtomicBool::new(false);

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

/// Notes that an administrator's bulk work ended, on the thread that did
/// it: what sled deferred freeing is freed now, and every thread is asked
/// to give its free memory back (this one at once), and again at the next
/// sweep, by when the threads that freed a block since will have too.
pub fn note_bulk_work() {
    let drained = run_deferred_frees();
    if !drained {
        tracing::debug!("deferred frees still pending after bulk work");
    }
    BULK_WORK.store(true, Ordering::Relaxed);
    ask_release();
}

/// Runs everything deferred to crossbeam-epoch's global collector so far;
/// false if it was still pending after [`MAX_COLLECT_ROUNDS`] rounds.
///
/// sled replaces a tree node by a copy on every write and defers freeing
/// the old one to that collector, which frees a few bags of them each time
/// some thread has pinned 128 times. Bulk work defers faster than that:
/// after a 10,000-row import almost all of the 300 MiB left resident was
/// live, old nodes waiting (BENCHMARKS.md), and with no traffic nothing
/// pins to free them. A marker deferred last is run last, as the collector
/// frees in order: once it ran, so had everything before it.
fn run_deferred_frees() -> bool {
    let ran = Arc::new(AtomicBool::new(false));
    let guard = crossbeam_epoch::pin();
    let marker = Arc::clone(&ran);
    guard.defer(move || marker.store(true, Ordering::Release));
    guard.flush();
    drop(guard);
    for _ in 0..MAX_COLLECT_ROUNDS {
        if ran.load(Ordering::Acquire) {
            return true;
        }
        // Each flush tries to advance the epoch and frees up to 8 bags
        // of 64 deferred frees whose epoch is over.
        crossbeam_epoch::pin().flush();
    }
    ran.load(Ordering::Acquire)
}

/// Flushes [`run_deferred_frees`] makes at most. An import of 10,000 rows
/// needed 175 (BENCHMARKS.md); a round that frees nothing costs well
/// under a microsecond, and a thread pinned meanwhile only delays it.
const MAX_COLLECT_ROUNDS: usize = 100_000;

/// Whether bulk work ended since the last call.
pub fn take_bulk_work() -> bool {
    BULK_WORK.swap(false, Ordering::Relaxed)
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
    use crate::render::pool::RenderPool;
    use std::sync::{Arc, Barrier, Mutex};
    use std::thread::{self, ThreadId};
    use std::time::Duration;

    /// The threads that released, in order.
    static RELEASED: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

    fn record_release() {
        RELEASED.lock().unwrap().push(thread::current().id());
    }

    fn releases_by(thread: ThreadId) -> usize {
        RELEASED
            .lock()
            .unwrap()
            .iter()
            .filter(|&&t| t == thread)
            .count()
    }

    #[test]
    fn what_was_deferred_is_run_before_bulk_work_is_noted() {
        let run = Arc::new(AtomicU64::new(0));
        // More than one bag's worth, so some wait in the global queue.
        for _ in 0..1_000 {
            let run = Arc::clone(&run);
            crossbeam_epoch::pin().defer(move || run.fetch_add(1, Ordering::Relaxed));
        }
        assert!(run_deferred_frees());
        assert_eq!(run.load(Ordering::Relaxed), 1_000);
    }

    // The only test that installs a release, since the installed call and
    // the requests are process-wide; so render threads are tested here too.
    #[tokio::test]
    async fn each_thread_releases_once_per_request_idle_render_threads_too() {
        set_release(record_release);
        let here = thread::current().id();
        let before = releases_by(here);
        ask_release();
        assert_eq!(releases_by(here), before + 1, "the asking thread, at once");
        release_if_asked();
        assert_eq!(releases_by(here), before + 1, "not again until asked again");
        let other = thread::spawn(|| {
            release_if_asked();
            release_if_asked();
            thread::current().id()
        })
        .join()
        .unwrap();
        assert_eq!(releases_by(other), 1, "another thread, once, when idle");

        let pool = RenderPool::start(2, Duration::from_millis(20)).unwrap();
        let both_busy = Arc::new(Barrier::new(2));
        let job = |busy: Arc<Barrier>| {
            move || {
                busy.wait();
                thread::current().id()
            }
        };
        let (first, second) = tokio::join!(
            pool.run(job(Arc::clone(&both_busy))),
            pool.run(job(both_busy))
        );
        let render_threads = [first.unwrap(), second.unwrap()];
        let once_more = render_threads.map(releases_by).map(|n| n + 1);
        ask_release();
        for _ in 0..500 {
            if render_threads.map(releases_by) == once_more {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Five more idle checks each, which must not release again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            render_threads.map(releases_by),
            once_more,
            "each idle render thread answers, once"
        );
    }
}
