//! The sockets of the TFTP server: the listener, which also tells the
//! address each request was sent to and answers from it, and a socket per
//! transfer that answers from that address too.
//!
//! A listener on `0.0.0.0` of a server with several addresses (a voice VLAN
//! beside the data network) would otherwise answer from whichever address
//! the route to the phone picks, and a phone ignores an answer from an
//! address it did not ask. The kernel tells the address with `IP_PKTINFO`
//! (`IPV6_RECVPKTINFO`), as tftpd-hpa uses it.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The receive buffer asked for the listening socket (the kernel caps it at
/// `net.core.rmem_max`): when a building's phones boot together, a
/// thousand RRQs arrive at once, and the default ~200 KB drops some.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The listening socket, with room for a boot storm's requests, telling the
/// address each datagram was sent to.
pub fn listener(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the TFTP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    match addr {
        SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?,
        SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?,
    }
    UdpSocket::from_std(socket.into())
}

/// One datagram: its length in the buffer, who sent it, and the local
/// address it was sent to (when the kernel said).
pub async fn receive(
    listener: &UdpSocket,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    listener
        .async_io(Interest::READABLE, || receive_now(listener, buffer))
        .await
}

fn receive_now(
    listener: &UdpSocket,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut control = nix::cmsg_space!(libc::in6_pktinfo);
    let mut slices = [IoSliceMut::new(buffer)];
    let message = recvmsg::<SockaddrStorage>(
        listener.as_raw_fd(),
        &mut slices,
        Some(&mut control),
        MsgFlags::empty(),
    )?;
    let peer = message
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("a datagram without a sender"))?;
    let local = message.cmsgs()?.find_map(|cmsg| match cmsg {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from_be(info.ipi_addr.s_addr),
        ))),
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)))
        }
        _ => None,
    });
    Ok((message.bytes, peer, local))
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    let v6 = address.as_sockaddr_in6()?;
    Some(SocketAddr::from((v6.ip(), v6.port())))
}

/// Sends one datagram from the listener without waiting, leaving from
/// `local` (the address the client asked); a datagram that does not fit the
/// socket's buffer now is dropped, as UDP may anyway.
pub fn send_from(listener: &UdpSocket, datagram: &[u8], peer: SocketAddr, local: IpAddr) {
    let _ = listener.try_io(Interest::WRITABLE, || {
        let to = SockaddrStorage::from(peer);
        let payload = [IoSlice::new(datagram)];
        let v4_info;
        let v6_info;
        let source = match local {
            IpAddr::V4(ip) if peer.is_ipv4() => {
                v4_info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                Some(ControlMessage::Ipv4PacketInfo(&v4_info))
            }
            IpAddr::V6(ip) => {
                v6_info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                Some(ControlMessage::Ipv6PacketInfo(&v6_info))
            }
            // The families disagree: let the route pick.
            IpAddr::V4(_) => None,
        };
        let sent = sendmsg(
            listener.as_raw_fd(),
            &payload,
            source.as_slice(),
            MsgFlags::empty(),
            Some(&to),
        );
        sent.map_err(io::Error::from)
    });
}

/// The address to answer from: the one the request was sent to, unless it
/// cannot be a source (a broadcast or multicast request), then the
/// listener's own.
pub fn answer_address(asked: Option<IpAddr>, listener: IpAddr) -> IpAddr {
    match asked {
        Some(IpAddr::V4(ip)) if !ip.is_broadcast() && !ip.is_multicast() => IpAddr::V4(ip),
        Some(IpAddr::V6(ip)) if !ip.is_multicast() => IpAddr::V6(ip),
        _ => listener,
    }
}

/// A socket of its own for one transfer, answering from `local`, connected
/// to the client so the kernel keeps other senders' datagrams away.
pub async fn transfer(local: IpAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_from_the_address_asked_unless_it_cannot() {
        let listener = IpAddr::from([0, 0, 0, 0]);
        let asked = IpAddr::from([10, 0, 0, 5]);
        assert_eq!(answer_address(Some(asked), listener), asked);
        assert_eq!(
            answer_address(Some(IpAddr::from([255, 255, 255, 255])), listener),
            listener
        );
        assert_eq!(answer_address(None, listener), listener);
    }
}
