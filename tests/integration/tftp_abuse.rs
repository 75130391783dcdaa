//! What a stranger on the phones' network can take from the TFTP server,
//! replayed with raw sockets: a timeout that holds a transfer for minutes,
//! and a flood of requests from one address that holds every transfer.

use std::collections::HashSet;
use std::time::Duration;

use deskboot::policy::Policy;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::common::TestServer;
use crate::tftp::{ack, firmware, receive, rrq};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_of_255_seconds_is_refused() {
    let server = TestServer::start().await;
    let image = firmware(&server, "t.bin", 100);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let with_tsize = rrq("firmware/t.bin", &[("timeout", "255"), ("tsize", "0")]);
    socket
        .send_to(&with_tsize, server.addrs.tftp)
        .await
        .unwrap();
    let (oack, from) = receive(&socket).await.expect("OACK");
    assert_eq!(
        oack, b"\x00\x06tsize\x00100\x00",
        "tsize agreed, the timeout left out rather than answered with 255"
    );
    socket.send_to(&ack(0), from).await.unwrap();
    let (data, _) = receive(&socket).await.expect("DATA 1");
    assert_eq!(&data[4..], &image[..]);
    socket.send_to(&ack(1), from).await.unwrap();

    let alone = rrq("firmware/t.bin", &[("timeout", "255")]);
    socket.send_to(&alone, server.addrs.tftp).await.unwrap();
    let (data, from) = receive(&socket).await.expect("DATA 1");
    assert_eq!(&data[..4], &[0, 3, 0, 1], "no option taken: no OACK");
    socket.send_to(&ack(1), from).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_leaves_transfers_for_phones() {
    const FLOOD: usize = 200;
    let server = TestServer::start_with(Policy {
        tftp_max_transfers: 20,
        tftp_max_transfers_per_source: 4,
        ..Policy::default()
    })
    .await;
    let image = firmware(&server, "f.bin", 3000);
    // The attacker's one socket, at an address of its own; a blksize of
    // its own to each request, so none is taken for a resend of another.
    let flood = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for i in 0..FLOOD {
        let blksize = (512 + i).to_string();
        let request = rrq(
            "firmware/f.bin",
            &[("timeout", "255"), ("blksize", &blksize)],
        );
        flood.send_to(&request, server.addrs.tftp).await.unwrap();
    }
    // Each request is answered at once: an OACK for a transfer (resent
    // later, so told apart by its blksize), or "busy".
    let (mut held, mut busy) = (HashSet::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() + busy < FLOOD {
        let left = deadline.saturating_duration_since(Instant::now());
        let (answer, _) = crate::tftp::receive_within(&flood, left)
            .await
            .unwrap_or_else(|| panic!("{} held, {busy} busy", held.len()));
        match answer[..2] {
            [0, 6] => {
                held.insert(answer);
            }
            [0, 5] => busy += 1,
            _ => panic!("unexpected {answer:?}"),
        }
    }
    assert_eq!((held.len(), busy), (4, FLOOD - 4));
    assert_eq!(server.metric("deskboot_tftp_transfers").await, 4);
    let phone = server.tftp_hpa("firmware/f.bin").await;
    assert!(
        phone.as_ref() == Ok(&image),
        "a phone at another address is served beside the flood: {phone:?}"
    );
    server.stop().await;
}
