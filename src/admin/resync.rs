//! Resync: an out-of-dialog SIP NOTIFY that makes a phone fetch its files
//! again, or reboot, sent over UDP to the address it last provisioned from.
//!
//! The event is the vendor's (`check-sync;reboot=false` to resync a Yealink,
//! `check-sync;reboot=true` to reboot it, `resync` for Cisco, ...), from its
//! phone-model descriptor (`resync_event`, `reboot_event`). We are not a
//! SIP stack: one request, one wait for the first answer, no retransmission
//! or authentication. A phone that challenges the NOTIFY (401/407) is
//! reported as such; resync it through the PBX instead.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::RngExt;
use serde::Serialize;
use tokio::net::UdpSocket;

/// The port phones listen on for SIP when nothing else is said.
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// How long to wait for the phone's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a NOTIFY could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// The local socket failed.
    #[error("cannot send the NOTIFY to {target}: {source}")]
    Io {
        /// Where the NOTIFY was going.
        target: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What happened to a NOTIFY.
#[derive(Debug, Clone, Serialize)]
pub struct ResyncOutcome {
    /// Where it went.
    pub sent_to: SocketAddr,
    /// The `Event` header.
    pub event: String,
    /// The status line of the phone's first answer (`SIP/2.0 200 OK`), or
    /// null when none came within two seconds (UDP: it may still have
    /// worked).
    pub answer: Option<String>,
}

/// Sends one NOTIFY with `event` to `user` at `target` and waits briefly
/// for the first answer.
pub async fn notify(
    target: SocketAddr,
    user: &str,
    event: &str,
) -> Result<ResyncOutcome, ResyncError> {
    let io = |source| ResyncError::Io { target, source };
    let local: SocketAddr = match target.ip() {
        IpAddr::V4(_) => "0.0.0.0:0",
        IpAddr::V6(_) => "[::]:0",
    }
    .parse()
    .map_err(|_| io(std::io::Error::other("bad local address")))?;
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(target).await.map_err(io)?;
    let from = socket.local_addr().map_err(io)?;
    let message = notify_message(target, from, user, event);
    socket.send(message.as_bytes()).await.map_err(io)?;
    let mut buffer = [0u8; 2048];
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, socket.recv(&mut buffer)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buffer[..n])
            .lines()
            .next()
            .map(|line| line.chars().take(120).collect()),
        _ => None,
    };
    Ok(ResyncOutcome {
        sent_to: target,
        event: event.to_string(),
        answer,
    })
}

/// The NOTIFY request (RFC 3265 style, as PBXs send for check-sync).
fn notify_message(target: SocketAddr, from: SocketAddr, user: &str, event: &str) -> String {
    let mut rng = rand::rng();
    let branch: u64 = rng.random();
    let tag: u32 = rng.random();
    let call_id: u128 = rng.random();
    let host = sip_host(target);
    let local = sip_host(from);
    // The user part is a SIP username we validated at creation; anything
    // else is dropped rather than let into the request line.
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.!~*'()+".contains(*c))
        .collect();
    let uri = if user.is_empty() {
        format!("sip:{host}")
    } else {
        format!("sip:{user}@{host}")
    };
    format!(
        "NOTIFY {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:deskboot@{local}>;tag={tag:x}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call_id:x}@deskboot\r\n\
         CSeq: 1 NOTIFY\r\n\
         Contact: <sip:deskboot@{local}>\r\n\
         Event: {event}\r\n\
         Subscription-State: terminated\r\n\
         User-Agent: deskboot\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// `host:port`, with brackets for IPv6.
fn sip_host(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_phone_and_the_event() {
        let target: SocketAddr = "192.0.2.10:5060".parse().unwrap();
        let from: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let message = notify_message(target, from, "sip101\r\nX: y", "check-sync;reboot=false");
        assert!(message.starts_with("NOTIFY sip:sip101Xy@192.0.2.10:5060 SIP/2.0\r\n"));
        assert!(message.contains("\r\nEvent: check-sync;reboot=false\r\n"));
        assert!(message.contains("\r\nCSeq: 1 NOTIFY\r\n"));
        assert!(message.ends_with("Content-Length: 0\r\n\r\n"));
        assert!(!message.contains("\r\nX: y"));
    }
}
