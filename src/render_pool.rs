//! The threads that render: a fixed set, one per core.
//!
//! Renders used to run on tokio's blocking pool behind a semaphore of one
//! permit per core. That bounded the renders running at once, but not the
//! threads: a permit comes back before the thread that used it is idle
//! again, so the next render often found no idle thread and started one. A
//! 10-minute storm ran on about 30 of them, each with its own allocator heap
//! keeping memory it had freed. A fixed set keeps the heaps few and warm.
//! The semaphore stays in front: a request that gives up while it waits
//! (a phone that timed out) leaves before its render is queued.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

use crate::memory;

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
    jobs: mpsc::Sender<Job>,
    free: Semaphore,
}

impl RenderPool {
    /// Starts `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<RenderPool> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name("deskboot-render".into())
                .spawn(move || {
                    loop {
                        match next_job(&queue) {
                            Next::Job(job) => job(),
                            Next::Idle => memory::release_if_asked(),
                            Next::Stopped => return,
                        }
                    }
                })?;
        }
        Ok(RenderPool {
            jobs,
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
        let job: Job = Box::new(move || {
            if !done.is_closed() {
                let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
            }
        });
        self.jobs.send(job).map_err(|_| PoolError::Stopped)?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(PoolError::Panicked),
            Err(_) => Err(PoolError::Stopped),
        }
    }
}

/// How long a render thread waits for a job before it checks whether it
/// was asked to give its free memory back ([`memory`]).
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// What a render thread waits for.
enum Next {
    Job(Job),
    /// No job came for [`IDLE_CHECK`].
    Idle,
    /// The pool was dropped.
    Stopped,
}

/// The next job. The lock is held only while a thread waits, so the others
/// queue behind it for the next job.
fn next_job(queue: &Mutex<mpsc::Receiver<Job>>) -> Next {
    let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
    match queue.recv_timeout(IDLE_CHECK) {
        Ok(job) => Next::Job(job),
        Err(mpsc::RecvTimeoutError::Timeout) => Next::Idle,
        Err(mpsc::RecvTimeoutError::Disconnected) => Next::Stopped,
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
