//! Provisioning over TFTP (RFC 1350 with blksize, tsize, timeout and
//! windowsize), read-only, on tokio.
//!
//! One task reads the listening socket and answers what it can at once
//! (malformed requests, writes, "busy"); each read request gets its own task
//! and, as RFC 1350 asks, its own socket (the server's transfer ID), bound
//! to the address the phone asked (the `socket` module). So the renders of a boot
//! storm run on every core, and a slow client holds only its own task.
//! The `sources` module keeps one address from holding more than its share
//! of the transfers, and remembers which addresses acknowledged lately: an
//! address that never has gets fewer resends, as its requests may be forged.
//! No transfer outlives the policy's lifetime.
//!
//! We wrote this rather than use async-tftp, which the design first chose:
//! it serialises every open behind one lock and runs all transfers on one
//! executor, ignores a client's ERROR, counts no resends, and silently drops
//! a request from an address whose previous transfer it still tracks, which
//! a storm hits whenever the kernel hands a phone's next socket the port of
//! the last one (BENCHMARKS.md measured all of it).

mod packet;
mod socket;
mod sources;
mod transfer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::domain::transport::Transport;
use crate::metrics::Outcome;
use crate::provision::admission::Admission;
use crate::provision::request::{NotServed, Request};
use crate::provision::{Provisioner, log_firmware, log_request};
use packet::{ErrorCode, ReadRequest, RequestError};
use sources::Sources;
use transfer::{Agreement, Source, Transfer, TransferError};

/// How long a request that looks like a resend waits to be told apart from
/// a new one (see [`Shared::admit`]): far below any client's timeout, far
/// above the time a transfer takes to read an ACK.
const RESEND_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);
/// Requests are small; a longer datagram is cut and then refused as malformed.
const MAX_REQUEST: usize = 2048;

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

/// The TFTP listener, bound and ready to serve.
pub struct TftpServer {
    shared: Arc<Shared>,
}

/// What the listener and every transfer task share.
struct Shared {
    listener: UdpSocket,
    /// The listener's address: transfer sockets bind to the same one.
    local_ip: IpAddr,
    provisioner: Arc<Provisioner>,
    state: Arc<TftpState>,
    /// The transfers in flight, by client and by source address.
    clients: Mutex<Clients>,
    /// How long a transfer may last from its request.
    lifetime: Duration,
}

/// The transfers in flight, by client and by source address.
struct Clients {
    /// Each client address with a transfer (see [`Shared::admit`]).
    by_peer: HashMap<SocketAddr, Arc<Client>>,
    /// How many each source address holds, and which acknowledged lately.
    sources: Sources,
}

/// A client address's current transfer.
struct Client {
    /// What it asked for.
    request: ReadRequest,
    /// The address it asked, which answers come from.
    local: IpAddr,
    /// Whether it has acknowledged anything yet.
    answered: AtomicBool,
    /// Whether a client at its IP address acknowledged an earlier transfer.
    known_address: bool,
    /// Whether a request that looked like a resend is being looked at again.
    recheck: AtomicBool,
}

/// Binds the TFTP listener.
pub async fn bind(
    addr: SocketAddr,
    provisioner: Arc<Provisioner>,
    state: Arc<TftpState>,
) -> std::io::Result<TftpServer> {
    let listener = socket::listener(addr)?;
    let local_ip = listener.local_addr()?.ip();
    let policy = provisioner.policy();
    let clients = Clients {
        by_peer: HashMap::new(),
        sources: Sources::new(policy.tftp_max_transfers_per_source),
    };
    let lifetime = Duration::from_secs(policy.tftp_transfer_lifetime_secs.get());
    Ok(TftpServer {
        shared: Arc::new(Shared {
            listener,
            local_ip,
            provisioner,
            state,
            clients: Mutex::new(clients),
            lifetime,
        }),
    })
}

impl TftpServer {
    /// The address the listener is bound to.
    pub fn listen_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.listener.local_addr()
    }

    /// Reads requests until the task is aborted.
    pub async fn serve(self) -> std::io::Result<()> {
        let mut buffer = vec![0u8; MAX_REQUEST];
        loop {
            match socket::receive(&self.shared.listener, &mut buffer).await {
                Ok((len, peer, asked)) => {
                    let local = socket::answer_address(asked, self.shared.local_ip);
                    self.shared.dispatch(peer, local, &buffer[..len]);
                }
                // An ICMP error for an earlier answer, surfacing here: it
                // concerns that client only.
                Err(e) => tracing::debug!(error = %e, "TFTP listener receive error"),
            }
        }
    }
}

impl Shared {
    /// Answers one datagram sent to the listening port, at `local`.
    fn dispatch(self: &Arc<Self>, peer: SocketAddr, local: IpAddr, datagram: &[u8]) {
        match packet::Request::parse(datagram) {
            Ok(packet::Request::Read(read)) => self.admit(peer, local, read),
            Ok(packet::Request::Write) => {
                self.answer(peer, local, ErrorCode::AccessViolation, "read-only server")
            }
            // A late ACK or ERROR of a finished transfer, or a stray DATA
            // or OACK: nothing to say (an ERROR is never answered, RFC 1350
            // section 7). An unknown opcode gets "illegal TFTP operation".
            Err(RequestError::NotARequest(_)) => {}
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "malformed TFTP request");
                self.answer(peer, local, ErrorCode::IllegalOperation, &e.to_string());
            }
        }
    }

    /// Starts a transfer for a read request, unless it is a resend of one
    /// already being answered, or the server is closing or full, or the
    /// client is banned from per-device files.
    fn admit(self: &Arc<Self>, peer: SocketAddr, local: IpAddr, read: ReadRequest) {
        if self.state.closing.load(Ordering::SeqCst) {
            return self.answer(peer, local, ErrorCode::Other, "server shutting down");
        }
        let request = Request::tftp(&read.name, peer.ip());
        if self.provisioner.admit_tftp(&request) == Admission::Ignore {
            return;
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // The same request from the same address, before the client has
        // acknowledged anything, is either a resend (the transfer answering
        // it resends on its own) or the phone asking again from a new socket
        // that the kernel gave the same port, right after its final ACK,
        // which the transfer may not have read yet. A moment tells them
        // apart: by then the old transfer has read that ACK and ended.
        if let Some(current) = clients.by_peer.get(&peer)
            && current.request == read
            && !current.answered.load(Ordering::Relaxed)
        {
            if !current.recheck.swap(true, Ordering::Relaxed) {
                tokio::spawn(Arc::clone(self).recheck(peer, Arc::clone(current)));
            }
            return;
        }
        self.start(&mut clients, peer, local, read);
    }

    /// A request that looked like a resend of `current`'s: started unless
    /// `current` is still waiting for its first ACK.
    async fn recheck(self: Arc<Self>, peer: SocketAddr, current: Arc<Client>) {
        tokio::time::sleep(RESEND_WINDOW).await;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = clients
            .by_peer
            .get(&peer)
            .is_some_and(|c| Arc::ptr_eq(c, &current) && !c.answered.load(Ordering::Relaxed));
        if waiting {
            // A resend indeed; a later one gets its own look.
            current.recheck.store(false, Ordering::Relaxed);
        } else if !self.state.closing.load(Ordering::SeqCst) {
            self.start(&mut clients, peer, current.local, current.request.clone());
        }
    }

    /// Starts a transfer, unless the server or the client's address holds
    /// its most.
    fn start(
        self: &Arc<Self>,
        clients: &mut Clients,
        peer: SocketAddr,
        local: IpAddr,
        read: ReadRequest,
    ) {
        // A phone retries a busy answer; a flood cannot hold every socket,
        // nor one address more than its share of them.
        if self.state.active() >= self.state.max_active {
            tracing::warn!(peer = %peer, "TFTP busy: too many transfers at once");
            return self.answer(peer, local, ErrorCode::Other, "busy, try again");
        }
        let source = peer.ip().to_canonical();
        if !clients.sources.take(source) {
            tracing::warn!(peer = %peer, "TFTP busy: too many transfers from one address");
            return self.answer(peer, local, ErrorCode::Other, "busy, try again");
        }
        let client = Arc::new(Client {
            request: read,
            local,
            answered: AtomicBool::new(false),
            known_address: clients.sources.has_acknowledged(source),
            recheck: AtomicBool::new(false),
        });
        clients.by_peer.insert(peer, Arc::clone(&client));
        self.state.active.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(Arc::clone(self).serve_read(peer, client));
    }

    /// Answers from the listening socket, without waiting, from `local`.
    fn answer(&self, peer: SocketAddr, local: IpAddr, code: ErrorCode, message: &str) {
        socket::send_from(&self.listener, &packet::error(code, message), peer, local);
    }

    /// One read request, from the provisioner's answer to the last ACK.
    async fn serve_read(self: Arc<Self>, peer: SocketAddr, client: Arc<Client>) {
        let _slot = Slot {
            shared: &self,
            peer,
            client: &client,
        };
        let read = &client.request;
        let started = Instant::now();
        let ends_at = tokio::time::Instant::from_std(started) + self.lifetime;
        let request = Request::tftp(&read.name, peer.ip());
        if let Some(image) = self.provisioner.firmware(&request) {
            let file = match std::fs::File::open(&image.path) {
                Ok(file) => file,
                Err(e) => {
                    tracing::error!(error = %e, file = %image.name, "cannot read a firmware image");
                    return self.answer(peer, client.local, ErrorCode::NotFound, "file not found");
                }
            };
            self.provisioner
                .metrics()
                .request(Transport::Tftp, Outcome::Firmware);
            let source = Source::File {
                file: Arc::new(file),
                len: image.len,
            };
            let bytes = self.send(peer, &client, source, ends_at).await;
            return log_firmware(&request, &image, bytes, started.elapsed());
        }
        match self.provisioner.handle_async(&request).await {
            Ok(file) => {
                let source = Source::Memory(file.body.clone());
                let bytes = self.send(peer, &client, source, ends_at).await;
                let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
                log_request(&request, &Ok(file), bytes, started.elapsed());
            }
            Err(reason) => {
                if let NotServed::Store(e) = &reason {
                    tracing::error!(error = %e, "store failed while provisioning");
                }
                let (code, message) = if reason.is_busy() {
                    (ErrorCode::Other, "busy, try again later")
                } else {
                    (ErrorCode::NotFound, "file not found")
                };
                log_request(&request, &Err(reason), 0, started.elapsed());
                self.answer(peer, client.local, code, message);
            }
        }
    }

    /// Sends `source` from a new socket, until `ends_at` at the latest; the
    /// bytes the client acknowledged.
    async fn send(
        &self,
        peer: SocketAddr,
        client: &Client,
        source: Source,
        ends_at: tokio::time::Instant,
    ) -> u64 {
        let agreement = Agreement::new(&client.request.options, source.size());
        let socket = match socket::transfer(client.local, peer).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a TFTP transfer socket");
                self.answer(peer, client.local, ErrorCode::Other, "server error");
                return 0;
            }
        };
        let transfer = Transfer {
            socket,
            source,
            agreement,
            answered: &client.answered,
            known_address: client.known_address,
            metrics: self.provisioner.metrics(),
            ends_at,
        };
        match transfer.run().await {
            Ok(bytes) => bytes,
            Err((e, bytes)) => {
                if matches!(e, TransferError::NoAnswer) {
                    self.provisioner.metrics().tftp_abandoned();
                }
                tracing::info!(peer = %peer, error = %e, "TFTP transfer not completed");
                bytes
            }
        }
    }
}

/// A transfer's place: released when its task ends, however it ends.
struct Slot<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    client: &'a Arc<Client>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let acknowledged = self.client.answered.load(Ordering::Relaxed);
        clients
            .sources
            .give_back(self.peer.ip().to_canonical(), acknowledged);
        // A newer transfer of the same address owns the entry now.
        if clients
            .by_peer
            .get(&self.peer)
            .is_some_and(|current| Arc::ptr_eq(current, self.client))
        {
            clients.by_peer.remove(&self.peer);
        }
        drop(clients);
        // Last, so that a count of zero means every slot is wholly free.
        self.shared.state.active.fetch_sub(1, Ordering::SeqCst);
    }
}
