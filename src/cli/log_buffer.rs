//! The server's log lines, written to stdout through one buffer.
//!
//! A boot storm logs a line per file served, tens of thousands a second;
//! written one `write(2)` each (stdout's line buffering), they cost the
//! server 5-19% of its throughput on cached files (BENCHMARKS.md). Lines
//! are gathered instead, and written when the buffer fills or every
//! [`FLUSH_INTERVAL`], and at exit.

use std::io::{self, BufWriter, Stdout, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a line may wait in the buffer: short enough for someone
/// watching the log, long enough to gather a storm's lines.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Room for a few hundred lines between flushes.
const CAPACITY: usize = 64 * 1024;

/// Stdout behind a buffer; `Arc<LogBuffer>` is what the fmt subscriber
/// writes to.
#[derive(Debug)]
pub struct LogBuffer {
    out: Mutex<BufWriter<Stdout>>,
}

impl LogBuffer {
    /// A buffer, and a thread that flushes it every [`FLUSH_INTERVAL`].
    pub fn start() -> Arc<LogBuffer> {
        let buffer = Arc::new(LogBuffer {
            out: Mutex::new(BufWriter::with_capacity(CAPACITY, io::stdout())),
        });
        let flushed = Arc::clone(&buffer);
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    flushed.flush();
                }
            })
            .ok();
        buffer
    }

    /// Writes out what is buffered; a failing stdout is not worth a panic.
    pub fn flush(&self) {
        let _ = self.lock().flush();
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<Stdout>> {
        // A panic mid-line leaves at worst a torn line.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for &LogBuffer {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.lock().write(line)
    }

    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        // One lock per line, so lines from two threads never interleave.
        self.lock().write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}
