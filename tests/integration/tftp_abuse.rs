//! What a stranger on the phones' network can take from the TFTP server,
//! replayed with raw sockets: a timeout that holds a transfer for minutes,
//! a flood of requests from one address that holds every transfer, a
//! client that acknowledges so slowly that its transfer never ends, and a
//! forged source address that the server would flood with resends.

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::time::Duration;

use deskboot::access::policy::Policy;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::common::TestServer;
use crate::tftp::{ack, firmware, receive, receive_within, rrq};

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
        let (answer, _) = receive_within(&flood, left)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_crawls_ends_within_its_lifetime() {
    let server = TestServer::start_with(Policy {
        tftp_transfer_lifetime_secs: NonZeroU64::new(3).unwrap(),
        ..Policy::default()
    })
    .await;
    firmware(&server, "slow.bin", 300_000);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = rrq("firmware/slow.bin", &[("timeout", "1")]);
    socket.send_to(&request, server.addrs.tftp).await.unwrap();
    // Acknowledge each packet only when it comes again: the server waits
    // out its timeout for every block, and 586 of them would take ten
    // minutes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut acked) = (Vec::new(), 0);
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (packet, from) = receive_within(&socket, left)
            .await
            .expect("an end within the lifetime");
        if packet[..2] == [0, 5] {
            break packet;
        }
        if packet == last {
            let block = match packet[..2] {
                [0, 6] => 0,
                _ => u16::from_be_bytes([packet[2], packet[3]]),
            };
            socket.send_to(&ack(block), from).await.unwrap();
            acked += 1;
        }
        last = packet;
    };
    assert!(acked >= 2, "the client kept answering: {acked} ACKs");
    let text = String::from_utf8_lossy(&ended[4..]);
    assert!(text.contains("too long"), "{text}");
    transfers_within(&server, 0, Duration::from_secs(2)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_acknowledges_gets_three_packets_at_most() {
    let server = TestServer::start().await;
    firmware(&server, "fw01.bin", 100_000);
    // The victim's address, which never asked: it only counts what comes.
    let victim = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
    victim.set_nonblocking(true).unwrap();
    let request = rrq("fw01.bin", &[]);
    assert_eq!(request.len(), 17, "the attacker's request");
    victim.send_to(&request, server.addrs.tftp).unwrap();
    // The transfer ends once its resends are spent: all it sent has come.
    transfers_within(&server, 1, Duration::from_secs(5)).await;
    transfers_within(&server, 0, Duration::from_secs(20)).await;
    let received = drain(&victim);
    assert!(
        (1..=3).contains(&received.len()),
        "{} packets, {} bytes, for a request of 17",
        received.len(),
        received.iter().map(Vec::len).sum::<usize>()
    );

    // Once a client at that address has acknowledged a transfer, a later
    // silent one gets the normal resends (a 1 s timeout keeps the test short).
    firmware(&server, "tiny.bin", 100);
    let phone = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let tiny = rrq("tiny.bin", &[]);
    phone.send_to(&tiny, server.addrs.tftp).await.unwrap();
    let (data, from) = receive(&phone).await.expect("DATA 1");
    assert_eq!(&data[..4], &[0, 3, 0, 1], "one block: the whole file");
    phone.send_to(&ack(1), from).await.unwrap();
    transfers_within(&server, 0, Duration::from_secs(5)).await;
    let silent = rrq("fw01.bin", &[("timeout", "1")]);
    victim.send_to(&silent, server.addrs.tftp).unwrap();
    transfers_within(&server, 1, Duration::from_secs(5)).await;
    transfers_within(&server, 0, Duration::from_secs(20)).await;
    assert_eq!(drain(&victim).len(), 6, "the OACK and five resends");
    server.stop().await;
}

/// Every datagram waiting on `socket`.
fn drain(socket: &std::net::UdpSocket) -> Vec<Vec<u8>> {
    let mut buffer = [0u8; 1600];
    std::iter::from_fn(|| {
        let len = socket.recv(&mut buffer).ok()?;
        Some(buffer[..len].to_vec())
    })
    .collect()
}

/// Waits until the server holds `count` transfers; fails after `limit`.
async fn transfers_within(server: &TestServer, count: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let held = server.metric("deskboot_tftp_transfers").await;
        if held == count {
            return;
        }
        assert!(Instant::now() < deadline, "{held} transfers, not {count}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
