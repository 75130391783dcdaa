//! The time that decisions depend on: scan windows and bans, the render
//! cache's sweeps and quarter hours, Digest nonces' lifetime, how long an
//! address counts as having acknowledged a TFTP transfer.
//!
//! The server runs on [`Clock::System`]; tests hand the same code a
//! [`ManualClock`] and move its time themselves, so an expiry is tested
//! without waiting for it. Not for timeouts on sockets and tasks: those
//! are tokio's timers. What the store stamps (audit entries, uploads)
//! reads [`unix_now`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    Clock::System.unix_secs()
}

/// Where a component reads the time; cheap to clone and to read.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The machine's clocks.
    System,
    /// Time that moves only when a [`ManualClock`] advances it.
    Manual(Arc<ManualTime>),
}

/// The state behind a [`ManualClock`]: a start and how far it moved.
#[derive(Debug)]
pub struct ManualTime {
    /// The monotonic instant it started at.
    start: Instant,
    /// The Unix time it started at, in seconds.
    start_unix: u64,
    /// Nanoseconds advanced since the start.
    elapsed_nanos: AtomicU64,
}

impl ManualTime {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::SeqCst))
    }
}

impl Clock {
    /// The current monotonic time.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(time) => time.start + time.elapsed(),
        }
    }

    /// The current time in seconds since 1970 (0 on a clock set before it).
    pub fn unix_secs(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            Clock::Manual(time) => time.start_unix + time.elapsed().as_secs(),
        }
    }
}

/// A clock that tests move forward by hand.
#[derive(Debug, Clone)]
pub struct ManualClock {
    time: Arc<ManualTime>,
}

impl ManualClock {
    /// A clock standing at `start_unix` seconds since 1970 until advanced.
    pub fn starting_at(start_unix: u64) -> Self {
        ManualClock {
            time: Arc::new(ManualTime {
                start: Instant::now(),
                start_unix,
                elapsed_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// The [`Clock`] to hand to the code under test.
    pub fn clock(&self) -> Clock {
        Clock::Manual(Arc::clone(&self.time))
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.time.elapsed_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let manual = ManualClock::starting_at(1_700_000_000);
        let clock = manual.clock();
        let before = clock.now();
        assert_eq!(clock.now(), before);
        assert_eq!(clock.unix_secs(), 1_700_000_000);
        manual.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - before, Duration::from_millis(1500));
        assert_eq!(clock.unix_secs(), 1_700_000_001, "whole seconds");
    }

    #[test]
    fn the_system_clock_reads_the_machines_time() {
        let unix = Clock::System.unix_secs();
        assert!(unix > 1_600_000_000, "{unix}");
        assert!(Clock::System.now() <= Instant::now());
    }
}
