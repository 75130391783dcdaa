//! How many connections an HTTP listener holds, and from whom.
//!
//! Each connection is an open file. A client that opens connections and
//! sends nothing holds them until the request-head timeout, and with
//! enough of them the process runs out of files: phones' connections then
//! wait in the kernel's queue until the idle ones time out. So a listener
//! holds at most `max` connections, one address at most `per_source` of
//! them; a connection past an address's share is closed at once. When the
//! listener is full, the connection that has been quiet the longest (no
//! byte read or written) is closed to make room: idle and silent
//! connections give way, and a phone that is downloading or waiting for
//! its answer (which the server is writing) keeps its own.

use std::collections::HashMap;
use std::future::Ready;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum_server::accept::Accept;
use futures_util::future::Either;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How many connections a listener holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// At once, in all.
    pub max: usize,
    /// At once, from one address.
    pub per_source: usize,
}

/// One open connection, as the gate sees it.
#[derive(Debug)]
struct Connection {
    source: IpAddr,
    /// Milliseconds since the gate's start when a byte last moved.
    last_active: AtomicU64,
    /// Set to close the connection: its next read ends.
    closing: AtomicBool,
    /// The task reading it, to wake when it is to close.
    reader: AtomicWaker,
}

#[derive(Debug, Default)]
struct Open {
    connections: HashMap<u64, Arc<Connection>>,
    by_source: HashMap<IpAddr, usize>,
    next_id: u64,
}

#[derive(Debug)]
struct GateState {
    limits: ConnectionLimits,
    started: Instant,
    open: Mutex<Open>,
}

impl GateState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // A panic while holding the lock leaves counts, not broken data.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for a connection from `source`, closing the quietest
    /// one when the listener is full; None when `source` has its share.
    fn admit(&self, source: IpAddr) -> Option<(u64, Arc<Connection>)> {
        let mut open = self.lock();
        if open.by_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            return None;
        }
        if open.connections.len() >= self.limits.max {
            let quietest = open
                .connections
                .iter()
                .filter(|(_, c)| !c.closing.load(Ordering::Relaxed))
                .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
                .map(|(&id, _)| id)?;
            if let Some(closed) = open.connections.get(&quietest) {
                closed.closing.store(true, Ordering::Relaxed);
                closed.reader.wake();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let connection = Arc::new(Connection {
            source,
            last_active: AtomicU64::new(self.now_ms()),
            closing: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        });
        open.connections.insert(id, connection.clone());
        *open.by_source.entry(source).or_default() += 1;
        Some((id, connection))
    }

    fn release(&self, id: u64) {
        let mut open = self.lock();
        let Some(connection) = open.connections.remove(&id) else {
            return;
        };
        if let Some(count) = open.by_source.get_mut(&connection.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&connection.source);
            }
        }
    }
}

/// An acceptor for axum-server that keeps a listener within its
/// [`ConnectionLimits`], wrapping the acceptor `inner` (which gets the
/// admitted connections).
#[derive(Debug, Clone)]
pub struct ConnectionGate<A> {
    inner: A,
    state: Arc<GateState>,
    /// Counts the connections closed at once: a phone behind a NAT whose
    /// share is too small shows up there, not in any log.
    refused: Arc<AtomicU64>,
}

impl<A> ConnectionGate<A> {
    /// A gate with these limits in front of `inner`, counting what it
    /// refuses into `refused`.
    pub fn new(limits: ConnectionLimits, refused: Arc<AtomicU64>, inner: A) -> Self {
        ConnectionGate {
            inner,
            refused,
            state: Arc::new(GateState {
                limits,
                started: Instant::now(),
                open: Mutex::new(Open::default()),
            }),
        }
    }
}

/// What accepting a connection gives: the inner acceptor's, or a refusal.
type Accepted<A, S> = Either<
    Ready<
        io::Result<(
            <A as Accept<GatedStream, S>>::Stream,
            <A as Accept<GatedStream, S>>::Service,
        )>,
    >,
    <A as Accept<GatedStream, S>>::Future,
>;

impl<A, S> Accept<TcpStream, S> for ConnectionGate<A>
where
    A: Accept<GatedStream, S>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Accepted<A, S>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream
            .peer_addr()
            .ok()
            .and_then(|peer| self.state.admit(peer.ip().to_canonical()));
        let Some((id, connection)) = admitted else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            // Dropping the stream closes it: the address has its share.
            return Either::Left(std::future::ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the address holds its share of connections",
            ))));
        };
        let gated = GatedStream {
            inner: stream,
            place: Place {
                id,
                connection,
                state: self.state.clone(),
            },
        };
        Either::Right(self.inner.accept(gated, service))
    }
}

/// A connection's place in the gate, given back when it is dropped.
#[derive(Debug)]
struct Place {
    id: u64,
    connection: Arc<Connection>,
    state: Arc<GateState>,
}

impl Place {
    fn moved(&self) {
        let now = self.state.now_ms();
        self.connection.last_active.store(now, Ordering::Relaxed);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.state.release(self.id);
    }
}

/// A connection the gate admitted: it ends (its next read sees the end of
/// the stream) when the gate closes it to make room.
#[derive(Debug)]
pub struct GatedStream {
    inner: TcpStream,
    place: Place,
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let connection = &self.place.connection;
        connection.reader.register(cx.waker());
        if connection.closing.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.place.moved();
        }
        read
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.place.moved();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.place.moved();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max: usize, per_source: usize) -> GateState {
        GateState {
            limits: ConnectionLimits { max, per_source },
            started: Instant::now(),
            open: Mutex::new(Open::default()),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_share_and_no_more() {
        let gate = state(10, 2);
        let first = gate.admit(ip("192.0.2.1")).unwrap();
        let _second = gate.admit(ip("192.0.2.1")).unwrap();
        assert!(gate.admit(ip("192.0.2.1")).is_none());
        assert!(gate.admit(ip("192.0.2.2")).is_some(), "another address");
        gate.release(first.0);
        assert!(gate.admit(ip("192.0.2.1")).is_some(), "a place came back");
    }

    #[test]
    fn a_full_listener_closes_its_quietest_connection() {
        let gate = state(3, 3);
        let quiet = gate.admit(ip("192.0.2.1")).unwrap().1;
        let busy: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.1")).unwrap().1)
            .collect();
        for connection in &busy {
            connection.last_active.store(1_000, Ordering::Relaxed);
        }
        let phone = gate.admit(ip("198.51.100.7"));
        assert!(phone.is_some(), "room is made");
        assert!(quiet.closing.load(Ordering::Relaxed), "the quietest goes");
        assert!(busy.iter().all(|c| !c.closing.load(Ordering::Relaxed)));
    }
}
