//! Giving up on HTTP clients that stop reading.
//!
//! An open HTTP connection holds a task, a file descriptor and hyper's
//! buffers. hyper closes one that sends no request head in time (its header
//! timeout, set with this one in [`crate::server`]), but not one whose
//! answer it cannot write because the client stopped reading: a phone that
//! hung mid-download, or a client doing it on purpose, would hold all that
//! for as long as the server runs. So a write that has made no progress for
//! the timeout fails, and hyper drops the connection. A slow download keeps
//! its connection as long as bytes move; a slow answer (a long import) is
//! not a write, so it is not cut either.

use std::future::{Future, Ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An acceptor for axum-server that wraps each connection in a
/// [`SendTimeoutStream`].
#[derive(Debug, Clone, Copy)]
pub struct SendTimeout(pub Duration);

impl<I, S> Accept<I, S> for SendTimeout {
    type Stream = SendTimeoutStream<I>;
    type Service = S;
    type Future = Ready<io::Result<(SendTimeoutStream<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        std::future::ready(Ok((SendTimeoutStream::new(stream, self.0), service)))
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited its
/// timeout without a byte going out.
#[derive(Debug)]
pub struct SendTimeoutStream<S> {
    inner: S,
    timeout: Duration,
    /// Whether a write is waiting; false again once a byte goes out.
    stalled: bool,
    /// Set when a stall starts, not at every write, so a fast download
    /// costs a timer update only each time the socket's buffer fills.
    deadline: Pin<Box<Sleep>>,
}

impl<S> SendTimeoutStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        SendTimeoutStream {
            inner,
            timeout,
            stalled: false,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// The inner stream's answer to a write; `wrote` tells whether a byte
    /// went out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Ok(value)) => {
                if wrote(&value) {
                    self.stalled = false;
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.stalled(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    /// A write is waiting: an error once it has waited the timeout, else
    /// the task is woken when it will have.
    fn stalled(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.stalled {
            self.stalled = true;
            self.deadline.as_mut().reset(Instant::now() + self.timeout);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ));
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeoutStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeoutStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll, |written| *written > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll, |written| *written > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll, |_| true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_peer_that_stopped_reading_fails_after_the_timeout() {
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut stream = SendTimeoutStream::new(ours, TIMEOUT);
        let started = Instant::now();
        let error = stream.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_gets_everything() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut stream = SendTimeoutStream::new(ours, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut chunk = [0; 16];
            while received.len() < 160 {
                tokio::time::sleep(TIMEOUT * 9 / 10).await;
                let n = theirs.read(&mut chunk).await.unwrap();
                received.extend_from_slice(&chunk[..n]);
            }
            received
        });
        stream.write_all(&[7; 160]).await.unwrap();
        assert_eq!(reader.await.unwrap(), vec![7; 160]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_to_read_is_not_a_stall() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut stream = SendTimeoutStream::new(ours, TIMEOUT);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(TIMEOUT * 5).await;
            theirs.write_all(b"late").await.unwrap();
            theirs
        });
        let mut late = [0; 4];
        stream.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"late");
        let _theirs = writer.await.unwrap();
    }
}
