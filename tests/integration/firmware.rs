//! Firmware images in `<data>/firmware/`: served as they are over HTTP (with
//! `Range`) and TFTP (with blksize), never rendered, never outside the folder.

use reqwest::header::{CONTENT_RANGE, RANGE};

use crate::common::{TestServer, run};

/// An image that no template engine would leave alone and no text tool
/// would pass through unchanged.
fn image() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .chain(b"{{ mac.bare }}{% raw %}".iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_served_whole_and_in_ranges_over_http_and_tftp() {
    let server = TestServer::start().await;
    let image = image();
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/T46S-66.86.0.15.rom"), &image).unwrap();
    std::fs::write(server.data.join("firmware/sip.ld"), &image[..1000]).unwrap();

    let (status, body) = server
        .phone_get("/firmware/T46S-66.86.0.15.rom", None)
        .await;
    assert_eq!(status, 200);
    assert!(body == image, "the image comes back byte for byte");

    // Poly fetches its image relative to the boot server.
    let (status, body) = server.phone_get("/sip.ld", None).await;
    assert_eq!((status, body.as_slice()), (200, &image[..1000]));

    let client = reqwest::Client::new();
    let url = server.http_url("/firmware/T46S-66.86.0.15.rom");
    let partial = client
        .get(&url)
        .header(RANGE, "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()[CONTENT_RANGE],
        format!("bytes 100-199/{}", image.len()).as_str()
    );
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &image[100..200]);
    let resumed = client
        .get(&url)
        .header(RANGE, "bytes=299990-")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 206);
    assert_eq!(resumed.bytes().await.unwrap().as_ref(), &image[299_990..]);
    let beyond = client
        .get(&url)
        .header(RANGE, "bytes=900000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let over_tftp = server.tftp_curl("firmware/T46S-66.86.0.15.rom").await;
    assert!(over_tftp == Ok(image.clone()), "plain TFTP");
    let url = format!("tftp://{}/firmware/T46S-66.86.0.15.rom", server.addrs.tftp);
    let big_blocks = run("curl", &["-sS", "--tftp-blksize", "1468", &url]).await;
    assert!(big_blocks.status.success());
    assert!(big_blocks.stdout == image, "TFTP with blksize 1468");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_firmware_folder_is_reachable() {
    let server = TestServer::start().await;
    std::fs::create_dir_all(server.data.join("firmware/sub")).unwrap();
    std::fs::write(server.data.join("firmware/sub/inner.bin"), b"x").unwrap();
    std::fs::write(server.data.join("firmware/.hidden"), b"x").unwrap();
    std::fs::write(server.data.join("admin.token"), b"not for phones").unwrap();
    for path in [
        "/firmware/../admin.token",
        "/firmware/%2e%2e/admin.token",
        "/firmware/..%2fadmin.token",
        "/firmware/sub/inner.bin",
        "/firmware/.hidden",
        "/firmware/missing.rom",
        "/admin.token",
    ] {
        let (status, _) = server.phone_get(path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    for name in [
        &b"firmware/../admin.token"[..],
        b"firmware/sub/inner.bin",
        b"admin.token",
    ] {
        let (opcode, code) = server.tftp_raw_rrq(name).await;
        assert_eq!((opcode, code), (5, 1), "{}", String::from_utf8_lossy(name));
    }
    server.stop().await;
}

/// A hand-driven TFTP read of `name`: the socket, the server's transfer
/// address, and the first DATA block.
async fn start_read(
    server: &TestServer,
    name: &str,
) -> (tokio::net::UdpSocket, std::net::SocketAddr, Vec<u8>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(name.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    socket.send_to(&rrq, server.addrs.tftp).await.unwrap();
    let (packet, from) = receive(&socket).await.expect("DATA 1");
    assert_eq!(&packet[..4], &[0, 3, 0, 1], "DATA 1");
    (socket, from, packet)
}

async fn receive(socket: &tokio::net::UdpSocket) -> Option<(Vec<u8>, std::net::SocketAddr)> {
    let mut buffer = [0u8; 1600];
    let (n, from) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.recv_from(&mut buffer),
    )
    .await
    .ok()?
    .ok()?;
    Some((buffer[..n].to_vec(), from))
}

fn ack(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, 4, hi, lo]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_duplicated_acks_still_deliver_the_whole_file() {
    let server = TestServer::start().await;
    let image = image();
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/small.bin"), &image[..5000]).unwrap();
    let (socket, from, first) = start_read(&server, "firmware/small.bin").await;
    let mut got = first[4..].to_vec();
    // Lose the first ACK: the server sends DATA 1 again.
    let (again, _) = receive(&socket).await.expect("DATA 1 resent");
    assert_eq!(&again[..4], &[0, 3, 0, 1]);
    let mut block = 1u16;
    loop {
        socket.send_to(&ack(block), from).await.unwrap();
        socket.send_to(&ack(block), from).await.unwrap(); // duplicated
        let Some((packet, _)) = receive(&socket).await else {
            break;
        };
        if packet[..2] != [0, 3] {
            panic!("unexpected packet {packet:?}");
        }
        let number = u16::from_be_bytes([packet[2], packet[3]]);
        if number == block {
            continue; // a resend caused by the duplicate
        }
        assert_eq!(number, block + 1);
        block = number;
        got.extend_from_slice(&packet[4..]);
        if packet.len() < 516 {
            socket.send_to(&ack(block), from).await.unwrap();
            break;
        }
    }
    assert!(got == image[..5000], "the whole file, once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_or_errors_frees_its_slot() {
    let server = TestServer::start().await;
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/big.bin"), image()).unwrap();
    let (_gone, _, _) = start_read(&server, "firmware/big.bin").await;
    let (quitter, from, _) = start_read(&server, "firmware/big.bin").await;
    quitter
        .send_to(b"\x00\x05\x00\x00user abort\x00", from)
        .await
        .unwrap();
    assert_eq!(server.metric("deskboot_tftp_transfers").await, 2);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.metric("deskboot_tftp_transfers").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "slots still held");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        server.tftp_curl("firmware/big.bin").await.is_ok(),
        "and the server serves on"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_never_stop_the_tftp_server() {
    use rand::{RngExt, SeedableRng};
    let server = TestServer::start().await;
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/x.bin"), b"payload").unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A fixed seed: a failure can be replayed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xdeb007);
    for round in 0..2000 {
        let len = rng.random_range(0..600);
        let mut packet: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half of them look like requests, to reach the option parser.
        if round % 2 == 0 && packet.len() >= 2 {
            packet[0] = 0;
            packet[1] = rng.random_range(1..=6);
        }
        socket.send_to(&packet, server.addrs.tftp).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        server.tftp_curl("firmware/x.bin").await.unwrap(),
        b"payload"
    );
    server.stop().await;
}
