//! The threads that render: a fixed set, one per core.
//!
//! Not tokio's blocking pool: it starts a thread whenever a job finds none
//! idle, and a permit handed back before its thread is idle again makes
//! that the common case, so a 10-minute storm ran on about 30 threads, each
//! with an allocator heap keeping what it had freed (BENCHMARKS.md). A fixed
//! set keeps the heaps few and warm. A semaphore stays in front: a request
//! that gives up while it waits (a phone that timed out) leaves before its
//! render is queued.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

use crate::render::memory;

type Job = Box<dyn FnOnce() + Send>;

/// Why work sent to the pool brought no result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pool's threads are gone.
    #[error("the render threads have stopped")]
    Stopped,
    /// The work panicked; its thread lives on.
    #[error("the render panicked")]
    Panicked,
}

/// A fixed set of threads that run CPU-heavy work for async tasks.
#[derive(Debug)]
pub struct RenderPool {
    queue: Arc<Queue>,
    free: Semaphore,
}

/// The jobs waiting for a thread. Each idle thread waits on the condition
/// variable with its own timeout, so every one of them gets to check, now
/// and then, whether it was asked to give its free memory back.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// How long a thread waits for a job before it checks whether it was
    /// asked to give its free memory back ([`memory`]).
    idle_check: Duration,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Set when the pool is dropped: threads finish the queued jobs and end.
    stopped: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("jobs", &self.lock().jobs.len())
            .finish()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.ready.notify_one();
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.ready.notify_all();
    }

    /// The next job, or why there is none.
    fn next(&self) -> Next {
        let (mut state, _) = self
            .ready
            .wait_timeout_while(self.lock(), self.idle_check, |state| {
                state.jobs.is_empty() && !state.stopped
            })
            .unwrap_or_else(|p| p.into_inner());
        match state.jobs.pop_front() {
            Some(job) => Next::Job(job),
            None if state.stopped => Next::Stopped,
            None => Next::Idle,
        }
    }
}

/// How long an idle render thread waits between checks of whether it was
/// asked to give its free memory back.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// What a render thread waits for.
enum Next {
    Job(Job),
    /// No job came for the queue's `idle_check`.
    Idle,
    /// The pool was dropped and its queue is empty.
    Stopped,
}

impl RenderPool {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<RenderPool> {
        RenderPool::start(threads, IDLE_CHECK)
    }

    /// [`RenderPool::new`], with idle threads checking every `idle_check`.
    pub(crate) fn start(threads: usize, idle_check: Duration) -> std::io::Result<RenderPool> {
        let threads = threads.max(1);
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            ready: Condvar::new(),
            idle_check,
        });
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name("deskboot-render".into())
                .spawn(move || {
                    loop {
                        match queue.next() {
                            Next::Job(job) => job(),
                            Next::Idle => memory::release_if_asked(),
                            Next::Stopped => return,
                        }
                    }
                })?;
        }
        Ok(RenderPool {
            queue,
            free: Semaphore::new(threads),
        })
    }

    /// One thread per core.
    pub fn per_core() -> std::io::Result<RenderPool> {
        RenderPool::new(thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Waits for a free thread, runs `work` there and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        // The semaphore is never closed; without a permit, queue anyway.
        let _free = self.free.acquire().await.ok();
        let (done, result) = oneshot::channel();
        self.queue.push(Box::new(move || {
            if !done.is_closed() {
                let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
            }
        }));
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(PoolError::Panicked),
            Err(_) => Err(PoolError::Stopped),
        }
    }
}

impl Drop for RenderPool {
    fn drop(&mut self) {
        self.queue.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_pool_and_a_panic_leaves_it_working() {
        let pool = RenderPool::new(2).unwrap();
        let name = pool
            .run(|| thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("deskboot-render"));
        let panicked = pool.run(|| panic!("a template bug")).await;
        assert!(matches!(panicked, Err(PoolError::Panicked)));
        for i in 0..10 {
            assert_eq!(pool.run(move || i * 2).await.unwrap(), i * 2);
        }
    }
}
