//! Provisioning over TFTP (RFC 1350 with blksize, tsize, timeout and
//! windowsize), read-only, on `async-tftp`.
//!
//! async-tftp holds a lock around each open, so the open must be quick: the
//! provisioner answers synchronously (store reads and one render), and a
//! firmware image is only opened there, then read on a blocking thread. The library
//! does not say when a transfer ends, so each file is wrapped in a reader that
//! counts bytes and writes the request's log line when the transfer drops it.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServer, TftpServerBuilder};
use bytes::Bytes;
use futures_lite::AsyncRead;
use futures_lite::io::Cursor;
use socket2::{Domain, Protocol, Socket, Type};

use crate::client_cert::ClientCert;
use crate::firmware::FirmwareImage;
use crate::metrics::Outcome;
use crate::provision::{
    NotServed, Provisioner, Request, ServedFile, Transport, log_firmware, log_request,
};

/// How long to wait for a lost ACK before resending.
const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Resends before a transfer is given up (the library's default, 100, keeps
/// a vanished client's slot for minutes).
const MAX_SEND_RETRIES: u32 = 5;
/// The largest block we agree to: 1468 fits a 1500-byte Ethernet MTU.
const MAX_BLOCK_SIZE: u16 = 1468;
/// The largest RFC 7440 window we agree to.
const MAX_WINDOW_SIZE: u16 = 16;

/// Transfers in flight, and whether new ones are still accepted.
#[derive(Debug)]
pub struct TftpState {
    active: AtomicUsize,
    closing: AtomicBool,
    max_active: usize,
}

impl TftpState {
    /// At most `max_active` transfers at once; the rest are told "busy".
    pub fn new(max_active: usize) -> Self {
        TftpState {
            active: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            max_active,
        }
    }

    /// Refuses new transfers from now on.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Transfers still running.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

/// Binds the TFTP listener.
pub async fn bind(
    addr: SocketAddr,
    provisioner: Arc<Provisioner>,
    state: Arc<TftpState>,
) -> std::io::Result<TftpServer<ProvisioningHandler>> {
    let handler = ProvisioningHandler { provisioner, state };
    let socket = storm_socket(addr)?;
    TftpServerBuilder::with_handler(handler)
        .std_socket(socket)
        .map_err(std::io::Error::other)?
        .timeout(RETRANSMIT_TIMEOUT)
        .max_send_retries(MAX_SEND_RETRIES)
        .block_size_limit(MAX_BLOCK_SIZE)
        .window_size_limit(MAX_WINDOW_SIZE)
        .build()
        .await
        .map_err(std::io::Error::other)
}

/// The receive buffer asked for the listening socket (the kernel caps it at
/// `net.core.rmem_max`): when a building's phones boot together, a
/// thousand RRQs arrive at once, and the default ~200 KB drops some.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The listening UDP socket, with room for a boot storm's requests.
fn storm_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the TFTP receive buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The async-tftp handler that feeds the provisioner.
pub struct ProvisioningHandler {
    provisioner: Arc<Provisioner>,
    state: Arc<TftpState>,
}

impl Handler for ProvisioningHandler {
    type Reader = LoggedFile;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        if self.state.closing.load(Ordering::SeqCst) {
            return Err(packet::Error::Msg("server shutting down".into()));
        }
        // A phone retries a busy answer; a flood cannot hold every socket.
        if self.state.active() >= self.state.max_active {
            tracing::warn!(peer = %client, "TFTP busy: too many transfers at once");
            return Err(packet::Error::Msg("busy, try again".into()));
        }
        let started = Instant::now();
        // async-tftp drops requests whose name is not UTF-8, so this is lossless.
        let name = path.to_string_lossy();
        let request = Request {
            path: &name,
            user_agent: None,
            peer: client.ip(),
            transport: Transport::Tftp,
            host: None,
            https: false,
            client_cert: ClientCert::Unchecked,
        };
        if let Some(image) = self.provisioner.firmware(&request) {
            let file = std::fs::File::open(&image.path).map_err(|e| {
                tracing::error!(error = %e, file = %image.name, "cannot read a firmware image");
                packet::Error::FileNotFound
            })?;
            let len = image.len;
            self.provisioner
                .metrics()
                .request(Transport::Tftp, Outcome::Firmware);
            let body = Body::Image(blocking::Unblock::new(file));
            return Ok((
                self.transfer(&name, *client, started, body, Sent::Firmware(image)),
                Some(len),
            ));
        }
        match self.provisioner.handle_async(&request).await {
            Ok(file) => {
                let len = file.body.len() as u64;
                let body = Body::Rendered(Cursor::new(file.body.clone()));
                Ok((
                    self.transfer(&name, *client, started, body, Sent::Rendered(file)),
                    Some(len),
                ))
            }
            Err(reason) => {
                if let NotServed::Store(e) = &reason {
                    tracing::error!(error = %e, "store failed while provisioning");
                }
                log_request(&request, &Err(reason), 0, started.elapsed());
                Err(packet::Error::FileNotFound)
            }
        }
    }

    async fn write_req_open(
        &mut self,
        _client: &SocketAddr,
        _path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        Err(packet::Error::IllegalOperation)
    }
}

impl ProvisioningHandler {
    /// Starts counting a transfer; it is logged when the library drops it.
    fn transfer(
        &self,
        path: &str,
        peer: SocketAddr,
        started: Instant,
        body: Body,
        sent: Sent,
    ) -> LoggedFile {
        self.state.active.fetch_add(1, Ordering::SeqCst);
        LoggedFile {
            body,
            bytes: 0,
            path: path.to_string(),
            peer,
            started,
            sent: Some(sent),
            state: self.state.clone(),
        }
    }
}

/// What a transfer reads from.
pub enum Body {
    /// A rendered file, already in memory.
    Rendered(Cursor<Bytes>),
    /// A firmware image, read from disk on a blocking thread.
    Image(blocking::Unblock<std::fs::File>),
}

/// What a transfer is sending, for its log line.
enum Sent {
    Rendered(ServedFile),
    Firmware(FirmwareImage),
}

/// A file being sent; logs the request when the transfer lets go of it.
pub struct LoggedFile {
    body: Body,
    bytes: usize,
    path: String,
    peer: SocketAddr,
    started: Instant,
    sent: Option<Sent>,
    state: Arc<TftpState>,
}

impl AsyncRead for LoggedFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = match &mut self.body {
            Body::Rendered(cursor) => Pin::new(cursor).poll_read(cx, buf),
            Body::Image(file) => Pin::new(file).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = poll {
            self.bytes += n;
        }
        poll
    }
}

impl Drop for LoggedFile {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::SeqCst);
        let request = Request {
            path: &self.path,
            user_agent: None,
            peer: self.peer.ip(),
            transport: Transport::Tftp,
            host: None,
            https: false,
            client_cert: ClientCert::Unchecked,
        };
        let elapsed = self.started.elapsed();
        match self.sent.take() {
            Some(Sent::Rendered(file)) => log_request(&request, &Ok(file), self.bytes, elapsed),
            Some(Sent::Firmware(image)) => {
                log_firmware(&request, &image, self.bytes as u64, elapsed)
            }
            None => {}
        }
    }
}
