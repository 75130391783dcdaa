//! What a stranger on the phones' network can take from the TFTP server,
//! replayed with raw sockets: a timeout that holds a transfer for minutes.

use tokio::net::UdpSocket;

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
