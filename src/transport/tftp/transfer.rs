//! Sending one file to one client: an OACK if options were agreed, then
//! DATA in windows (RFC 7440; a window of one is RFC 1350's lock-step),
//! resent only when the client stays silent past the timeout.
//!
//! Duplicate and stale ACKs are ignored rather than answered: resending on
//! them is the Sorcerer's Apprentice bug (RFC 1123, 4.2.3.1), which doubles
//! every packet after one delayed ACK.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::packet::{self, DATA_HEADER, ErrorCode, Options, Reply};
use crate::metrics::Metrics;

/// How long to wait for an ACK before resending, unless the client asks
/// for another timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest timeout we agree to: a client asking more gets
/// [`DEFAULT_TIMEOUT`]. Every resend of a silent client holds its transfer
/// this long again, and RFC 2349 allows 255 s, so an agreed 255 would let
/// one request hold a transfer for 25 minutes; phones ask a few seconds.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Resends before a silent client is given up.
pub const MAX_RESENDS: u32 = 5;
/// Resends before a client that has acknowledged nothing, at an address
/// that has not lately either, is given up. Its request may carry a forged
/// source address, and each resend aims at that address another packet of
/// up to 30 times the bytes of a request: three packets, not six, tell a
/// real client its answer was lost, and any ACK restores the full count.
pub const UNKNOWN_ADDRESS_RESENDS: u32 = 2;
/// The largest block we agree to: 1468 fits a 1500-byte Ethernet MTU.
pub const MAX_BLOCK_SIZE: u16 = 1468;
/// The largest RFC 7440 window we agree to.
pub const MAX_WINDOW_SIZE: u16 = 16;
/// RFC 1350's block size, when the client proposes none.
const DEFAULT_BLOCK_SIZE: u16 = 512;

/// Why a transfer did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The client sent an ERROR (it gave up, or refused our OACK).
    #[error("the client gave up: {0:?}")]
    ClientGaveUp(String),
    /// No ACK after every resend.
    #[error("the client stopped answering")]
    NoAnswer,
    /// Still going at the end of its lifetime, however the client answered.
    #[error("the transfer outlived its lifetime")]
    Expired,
    /// The socket or the file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The bytes a transfer sends.
pub enum Source {
    /// A rendered file, in memory.
    Memory(Bytes),
    /// A firmware image, read a window at a time on a blocking thread.
    File {
        /// The open image.
        file: Arc<std::fs::File>,
        /// Its size when opened: what tsize announced.
        len: u64,
    },
}

impl Source {
    /// Its size in bytes: what tsize announces.
    pub fn size(&self) -> u64 {
        match self {
            Source::Memory(bytes) => bytes.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// `len` bytes from `offset` (fewer at the end).
    async fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = offset.saturating_add(len as u64).min(self.size());
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        match self {
            Source::Memory(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                Ok(bytes.slice(start..start + len))
            }
            Source::File { file, .. } => {
                let file = Arc::clone(file);
                tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0; len];
                    file.read_exact_at(&mut buffer, offset)?;
                    Ok(Bytes::from(buffer))
                })
                .await
                .map_err(io::Error::other)?
            }
        }
    }
}

/// What was agreed with the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    block_size: u16,
    window: u16,
    timeout: Duration,
    /// The OACK to send first, when the client proposed options we took.
    oack: Option<Vec<u8>>,
}

impl Agreement {
    /// Our answer to a client's options for a file of `len` bytes.
    pub fn new(options: &Options, len: u64) -> Agreement {
        let mut agreed = Vec::new();
        let block_size = match options.block_size {
            Some(asked) => {
                let size = asked.min(MAX_BLOCK_SIZE);
                agreed.push(("blksize", u64::from(size)));
                size
            }
            None => DEFAULT_BLOCK_SIZE,
        };
        // RFC 2349: the OACK must carry the client's very timeout, so one
        // we will not wait is left out of it rather than lowered.
        let timeout = options.timeout.filter(|&asked| asked <= MAX_TIMEOUT);
        if let Some(timeout) = timeout {
            agreed.push(("timeout", timeout.as_secs()));
        }
        if options.transfer_size {
            agreed.push(("tsize", len));
        }
        let window = match options.window_size {
            Some(asked) => {
                let window = asked.min(MAX_WINDOW_SIZE);
                agreed.push(("windowsize", u64::from(window)));
                window
            }
            None => 1,
        };
        Agreement {
            block_size,
            window,
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            oack: (!agreed.is_empty()).then(|| packet::oack(&agreed)),
        }
    }
}

/// One transfer, on its own socket connected to the client (its TID).
pub struct Transfer<'a> {
    /// The socket; the kernel drops datagrams from other addresses.
    pub socket: UdpSocket,
    /// The file.
    pub source: Source,
    /// Options agreed.
    pub agreement: Agreement,
    /// Set once the client has acknowledged anything: from then on a new
    /// request from its address is a new transfer, not a resent request.
    pub answered: &'a AtomicBool,
    /// Whether the client's address acknowledged an earlier transfer.
    pub known_address: bool,
    /// Where resends are counted.
    pub metrics: &'a Metrics,
    /// When the transfer is ended, finished or not.
    pub ends_at: Instant,
}

impl Transfer<'_> {
    /// Sends the whole file; the bytes the client acknowledged, or why not.
    pub async fn run(&self) -> Result<u64, (TransferError, u64)> {
        let mut acked = 0u64;
        let sent = tokio::time::timeout_at(self.ends_at, self.send_all(&mut acked)).await;
        match sent {
            Ok(sent) => sent.map_err(|e| (e, acked)),
            Err(_) => {
                // The client would otherwise go on waiting for the next block.
                let expired = packet::error(ErrorCode::Other, "transfer took too long");
                let _ = self.socket.send(&expired).await;
                Err((TransferError::Expired, acked))
            }
        }
    }

    async fn send_all(&self, acked_bytes: &mut u64) -> Result<u64, TransferError> {
        let block_size = u64::from(self.agreement.block_size);
        let len = self.source.size();
        // The last block is the short one, empty when `len` is a multiple
        // of the block size: that is how the client knows the file ended.
        let blocks = len / block_size + 1;
        if let Some(oack) = &self.agreement.oack {
            let frames = Frames::single(oack);
            self.exchange(&frames, 0, 0).await?;
        }
        let mut acked = 0u64;
        let mut frames = Frames::default();
        while acked < blocks {
            let first = acked + 1;
            let last = blocks.min(acked + u64::from(self.agreement.window));
            let count = usize::try_from(last - acked).unwrap_or(1);
            let chunk = self
                .source
                .read(
                    acked * block_size,
                    count * usize::from(self.agreement.block_size),
                )
                .await?;
            frames.data(first, count, &chunk, usize::from(self.agreement.block_size));
            acked = self.exchange(&frames, first, last).await?;
            *acked_bytes = (acked * block_size).min(len);
        }
        Ok(len)
    }

    /// Sends `frames` until the client acknowledges a block in
    /// `first..=last`; returns that block.
    async fn exchange(&self, frames: &Frames, first: u64, last: u64) -> Result<u64, TransferError> {
        let resends = if self.known_address || self.answered.load(Ordering::Relaxed) {
            MAX_RESENDS
        } else {
            UNKNOWN_ADDRESS_RESENDS
        };
        for resend in 0..=resends {
            if resend > 0 {
                self.metrics.tftp_resend();
            }
            for frame in frames.iter() {
                self.socket.send(frame).await?;
            }
            let deadline = Instant::now() + self.agreement.timeout;
            if let Some(block) = self.await_ack(first, last, deadline).await? {
                self.answered.store(true, Ordering::Relaxed);
                return Ok(block);
            }
        }
        Err(TransferError::NoAnswer)
    }

    /// The first ACK of a block in `first..=last` before `deadline`.
    async fn await_ack(
        &self,
        first: u64,
        last: u64,
        deadline: Instant,
    ) -> Result<Option<u64>, TransferError> {
        let mut buffer = [0u8; 516];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buffer)).await;
            let Ok(received) = received else {
                return Ok(None);
            };
            match Reply::parse(&buffer[..received?]) {
                Some(Reply::Ack(number)) => {
                    // A window is at most 16 blocks, so the 16-bit number
                    // names one block in it, across a rollover too.
                    if let Some(block) = (first..=last).find(|&b| b as u16 == number) {
                        return Ok(Some(block));
                    }
                }
                Some(Reply::Error(message)) => return Err(TransferError::ClientGaveUp(message)),
                None => {}
            }
        }
    }
}

/// The datagrams of one window, in one buffer reused from window to window.
#[derive(Default)]
struct Frames {
    buffer: Vec<u8>,
    ends: Vec<usize>,
}

impl Frames {
    fn single(datagram: &[u8]) -> Frames {
        Frames {
            buffer: datagram.to_vec(),
            ends: vec![datagram.len()],
        }
    }

    /// `count` DATA packets numbered from `first`, cut from `chunk`: the
    /// last may be short or empty (the end of the file).
    fn data(&mut self, first: u64, count: usize, chunk: &[u8], block_size: usize) {
        self.buffer.clear();
        self.ends.clear();
        for (i, number) in (first..).take(count).enumerate() {
            let start = (i * block_size).min(chunk.len());
            let end = (start + block_size).min(chunk.len());
            let at = self.buffer.len();
            self.buffer.resize(at + DATA_HEADER, 0);
            packet::data_header(&mut self.buffer[at..], number as u16);
            self.buffer.extend_from_slice(&chunk[start..end]);
            self.ends.push(self.buffer.len());
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.buffer[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking_timeout(secs: u64) -> Options {
        Options {
            timeout: Some(Duration::from_secs(secs)),
            transfer_size: true,
            ..Options::default()
        }
    }

    #[test]
    fn a_timeout_above_the_cap_is_left_out_of_the_oack() {
        let agreed = Agreement::new(&asking_timeout(10), 300);
        assert_eq!(agreed.timeout, Duration::from_secs(10));
        assert_eq!(
            agreed.oack,
            Some(packet::oack(&[("timeout", 10), ("tsize", 300)]))
        );
        let refused = Agreement::new(&asking_timeout(255), 300);
        assert_eq!(refused.timeout, DEFAULT_TIMEOUT);
        assert_eq!(refused.oack, Some(packet::oack(&[("tsize", 300)])));
        let alone = Options {
            timeout: Some(Duration::from_secs(255)),
            ..Options::default()
        };
        assert_eq!(
            Agreement::new(&alone, 300).oack,
            None,
            "no option taken: no OACK, DATA 1 at once (RFC 2347)"
        );
    }
}
