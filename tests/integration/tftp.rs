//! The TFTP protocol itself, driven by hand: options, windows, lost and
//! duplicated packets, resent and reused requests, clients that vanish or
//! give up, and datagrams that are not TFTP at all.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::common::TestServer;
use crate::firmware::image;

/// A read request for `name` in octet mode, with options.
pub fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut packet = vec![0, 1];
    for field in [name, "octet"]
        .into_iter()
        .chain(options.iter().flat_map(|(k, v)| [*k, *v]))
    {
        packet.extend_from_slice(field.as_bytes());
        packet.push(0);
    }
    packet
}

/// A hand-driven TFTP read of `name`: the socket, the server's transfer
/// address, and the first DATA block.
async fn start_read(server: &TestServer, name: &str) -> (UdpSocket, SocketAddr, Vec<u8>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&rrq(name, &[]), server.addrs.tftp)
        .await
        .unwrap();
    let (packet, from) = receive(&socket).await.expect("DATA 1");
    assert_eq!(&packet[..4], &[0, 3, 0, 1], "DATA 1");
    (socket, from, packet)
}

pub async fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    receive_within(socket, Duration::from_secs(5)).await
}

pub async fn receive_within(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buffer = [0u8; 1600];
    let (n, from) = tokio::time::timeout(wait, socket.recv_from(&mut buffer))
        .await
        .ok()?
        .ok()?;
    Some((buffer[..n].to_vec(), from))
}

/// A firmware image of `len` bytes in the server's firmware folder.
pub fn firmware(server: &TestServer, name: &str, len: usize) -> Vec<u8> {
    let bytes: Vec<u8> = image().into_iter().cycle().take(len).collect();
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware").join(name), &bytes).unwrap();
    bytes
}

pub fn ack(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, 4, hi, lo]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_duplicated_acks_still_deliver_the_whole_file() {
    let server = TestServer::start().await;
    let image = firmware(&server, "small.bin", 5000);
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
    assert!(got == image, "the whole file, once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_or_errors_frees_its_slot() {
    let server = TestServer::start().await;
    firmware(&server, "big.bin", 300_000);
    let (_gone, _, _) = start_read(&server, "firmware/big.bin").await;
    let (quitter, from, _) = start_read(&server, "firmware/big.bin").await;
    quitter
        .send_to(b"\x00\x05\x00\x00user abort\x00", from)
        .await
        .unwrap();
    // The ERROR ends the quitter's transfer at once; the vanished client's
    // holds its slot only until its resends run out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while server.metric("deskboot_tftp_transfers").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ERROR freed nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.metric("deskboot_tftp_transfers").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "slots still held");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(server.metric("deskboot_tftp_abandoned_total").await, 1);
    // Two resends: that address never acknowledged anything (the quitter
    // only sent an ERROR), so it may be a forged one.
    assert!(server.metric("deskboot_tftp_retransmits_total").await >= 2);
    assert!(
        server.tftp_curl("firmware/big.bin").await.is_ok(),
        "and the server serves on"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_get_the_rfc_answer_and_hold_no_slot() {
    use rand::{RngExt, SeedableRng};
    let server = TestServer::start().await;
    firmware_payload(&server);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A fixed seed: a failure can be replayed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xdeb007);
    for round in 0..2000 {
        let packet = match round % 3 {
            0 => random_bytes(&mut rng),
            // Past the opcode, to reach each parser.
            1 => {
                let mut packet = random_bytes(&mut rng);
                if packet.len() >= 2 {
                    packet[0] = 0;
                    packet[1] = rng.random_range(0..=8);
                }
                packet
            }
            _ => random_read_request(&mut rng),
        };
        let expected = rfc_answer(&packet);
        let context = format!("round {round}: {packet:?}, expecting {expected:?}");
        socket.send_to(&packet, server.addrs.tftp).await.unwrap();
        if expected == Expected::Ignored {
            // The listener answers in order: if the next answer is the
            // probe's, this datagram got none.
            socket.send_to(PROBE, server.addrs.tftp).await.unwrap();
        }
        let (answer, from) = receive(&socket)
            .await
            .unwrap_or_else(|| panic!("{context}: no answer"));
        match expected {
            Expected::Error(code) => assert_eq!(answer[..4], [0, 5, 0, code], "{context}"),
            Expected::Ignored => assert_eq!(answer, PROBE_ANSWER, "{context}"),
            Expected::Transfer => finish_transfer(&socket, &packet, &answer, from, &context).await,
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.metric("deskboot_tftp_transfers").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "transfer slots still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metric("deskboot_tftp_abandoned_total").await, 0);
    assert_eq!(
        server.tftp_curl("firmware/x.bin").await.unwrap(),
        b"payload"
    );
    server.stop().await;
}

/// A write request, which a read-only server answers "access violation" at
/// once from its listener.
const PROBE: &[u8] = b"\x00\x02probe\x00octet\x00";
const PROBE_ANSWER: &[u8] = b"\x00\x05\x00\x02read-only server\x00";

/// The server's one file in these rounds, `firmware/x.bin`.
fn firmware_payload(server: &TestServer) {
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/x.bin"), b"payload").unwrap();
}

/// What RFC 1350 (with RFC 2347's options) has a server do with a datagram
/// sent to its listening port from an address with no transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// An ERROR with this code: 1 file not found, 2 access violation, 4
    /// illegal TFTP operation.
    Error(u8),
    /// A transfer from a new port: an OACK, or DATA 1 when no option was taken.
    Transfer,
    /// No answer: DATA, ACK and OACK belong to a transfer there is not, and
    /// an ERROR is never answered (RFC 1350 section 7).
    Ignored,
}

/// The RFC's answer to `datagram`, when `firmware/x.bin` is the one file.
fn rfc_answer(datagram: &[u8]) -> Expected {
    let Some((opcode, body)) = datagram.split_first_chunk::<2>() else {
        return Expected::Error(4);
    };
    match u16::from_be_bytes(*opcode) {
        1 => read_request_answer(body),
        2 => Expected::Error(2),
        3..=6 => Expected::Ignored,
        _ => Expected::Error(4),
    }
}

/// A read request's fields each end with a NUL, the file name is text and
/// the mode octet or netascii (RFC 1350 section 5); options follow.
fn read_request_answer(body: &[u8]) -> Expected {
    let Some(fields) = body.strip_suffix(&[0]) else {
        return Expected::Error(4);
    };
    let mut fields = fields.split(|&b| b == 0);
    let (Some(name), Some(mode)) = (fields.next(), fields.next()) else {
        return Expected::Error(4);
    };
    let known_mode = mode.eq_ignore_ascii_case(b"octet") || mode.eq_ignore_ascii_case(b"netascii");
    match std::str::from_utf8(name) {
        Ok("firmware/x.bin") if known_mode => Expected::Transfer,
        Ok(name) if known_mode && !name.is_empty() => Expected::Error(1),
        _ => Expected::Error(4),
    }
}

fn random_bytes(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    use rand::RngExt;
    let len = rng.random_range(0..600);
    (0..len).map(|_| rng.random()).collect()
}

/// A read request with names, modes and options (RFC 2347-2349, and
/// unknown ones) mixed at random, with values in and out of their RFC's
/// range, cut short one time in four.
fn random_read_request(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    use rand::RngExt;
    const NAMES: [&str; 3] = ["firmware/x.bin", "missing.cfg", ""];
    const MODES: [&str; 4] = ["octet", "NetAscii", "mail", ""];
    const OPTIONS: [&str; 6] = ["blksize", "TIMEOUT", "tsize", "windowsize", "x-unknown", ""];
    const VALUES: [&str; 12] = [
        "0",
        "1",
        "7",
        "8",
        "255",
        "256",
        "1468",
        "65464",
        "65465",
        "99999999999999999999",
        "",
        "enable",
    ];
    let options = rng.random_range(0..4);
    let mut pick = |choices: &[&'static str]| choices[rng.random_range(0..choices.len())];
    let mut fields = vec![pick(&NAMES), pick(&MODES)];
    for _ in 0..options {
        fields.extend([pick(&OPTIONS), pick(&VALUES)]);
    }
    let mut packet = vec![0, 1];
    for field in fields {
        packet.extend_from_slice(field.as_bytes());
        packet.push(0);
    }
    if rng.random_range(0..4) == 0 {
        packet.truncate(rng.random_range(0..packet.len()));
    }
    packet
}

/// Checks the first packet of a transfer of `firmware/x.bin` and ends the
/// transfer as a client would: DATA 1 is the whole file and is
/// acknowledged; an OACK holds only options the request proposed (RFC
/// 2347) and is refused with ERROR 8 (option negotiation refused).
async fn finish_transfer(
    socket: &UdpSocket,
    request: &[u8],
    first: &[u8],
    from: SocketAddr,
    context: &str,
) {
    assert_ne!(from, socket.local_addr().unwrap(), "{context}");
    match first[..2] {
        [0, 3] => {
            assert_eq!(first, b"\x00\x03\x00\x01payload", "{context}");
            socket.send_to(&ack(1), from).await.unwrap();
        }
        [0, 6] => {
            let proposed: Vec<&[u8]> = request[2..].split(|&b| b == 0).skip(2).step_by(2).collect();
            let agreed: Vec<&[u8]> = first[2..].split(|&b| b == 0).collect();
            for pair in agreed.chunks_exact(2) {
                let (name, value) = (pair[0], pair[1]);
                assert!(
                    proposed.iter().any(|p| p.eq_ignore_ascii_case(name)),
                    "{context}: {} was not proposed",
                    String::from_utf8_lossy(name)
                );
                if name == b"tsize" {
                    assert_eq!(value, b"7", "{context}: the file's size");
                }
            }
            socket
                .send_to(b"\x00\x05\x00\x08option negotiation refused\x00", from)
                .await
                .unwrap();
        }
        _ => panic!("{context}: {first:?} starts no transfer"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_windows_and_block_number_rollover() {
    let server = TestServer::start().await;
    // 75,000 blocks of 8 bytes: the block number wraps past 65,535, and the
    // file ends on a block boundary, so an empty block closes it.
    let image = firmware(&server, "long.bin", 600_000);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let options = [
        ("blksize", "8"),
        ("tsize", "0"),
        ("windowsize", "16"),
        ("color", "red"),
    ];
    socket
        .send_to(&rrq("firmware/long.bin", &options), server.addrs.tftp)
        .await
        .unwrap();
    let (oack, from) = receive(&socket).await.expect("OACK");
    assert_eq!(
        oack, b"\x00\x06blksize\x008\x00tsize\x00600000\x00windowsize\x0016\x00",
        "the options we know, agreed; the others left out"
    );
    socket.send_to(&ack(0), from).await.unwrap();
    let mut got = Vec::new();
    let (mut acked, mut expected) = (0u64, 1u64);
    let mut resumed = false;
    loop {
        let (packet, _) = receive(&socket).await.expect("DATA");
        assert_eq!(packet[..2], [0, 3]);
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]), expected as u16);
        got.extend_from_slice(&packet[4..]);
        let last = packet.len() < 12;
        if !resumed && expected == 16 {
            // Say only 5 blocks of the first window arrived: the server
            // goes on from the 6th (RFC 7440).
            resumed = true;
            got.truncate(5 * 8);
            acked = 5;
            expected = 6;
            socket.send_to(&ack(5), from).await.unwrap();
            continue;
        }
        if last || expected == acked + 16 {
            socket.send_to(&ack(expected as u16), from).await.unwrap();
            acked = expected;
        }
        if last {
            break;
        }
        expected += 1;
    }
    assert_eq!(expected, 75_001, "75,000 full blocks and an empty one");
    assert!(got == image, "the whole file");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_request_starts_one_transfer_and_a_reused_port_a_new_one() {
    let server = TestServer::start().await;
    let image = firmware(&server, "tiny.bin", 300);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = rrq("firmware/tiny.bin", &[]);
    socket.send_to(&request, server.addrs.tftp).await.unwrap();
    socket.send_to(&request, server.addrs.tftp).await.unwrap();
    let (data, from) = receive(&socket).await.expect("DATA 1");
    assert_eq!(&data[4..], &image[..], "one block");
    let extra = receive_within(&socket, Duration::from_millis(500)).await;
    assert!(
        extra.is_none(),
        "a second transfer answered the resend: {extra:?}"
    );
    socket.send_to(&ack(1), from).await.unwrap();

    // A phone's next request often comes from the port of its last one,
    // right after its final ACK: each is answered at once.
    for round in 0..20 {
        let name = if round % 2 == 0 {
            "firmware/tiny.bin"
        } else {
            "firmware/other.bin"
        };
        if round == 1 {
            firmware(&server, "other.bin", 10);
        }
        socket
            .send_to(&rrq(name, &[]), server.addrs.tftp)
            .await
            .unwrap();
        let (data, from) = receive_within(&socket, Duration::from_millis(900))
            .await
            .unwrap_or_else(|| panic!("round {round}: no answer"));
        assert_eq!(&data[..4], &[0, 3, 0, 1], "round {round}");
        socket.send_to(&ack(1), from).await.unwrap();
    }
    assert_eq!(server.metric("deskboot_tftp_retransmits_total").await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_writes_get_an_error() {
    let server = TestServer::start().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (packet, code, message) in [
        (&[0u8, 1, b'x'][..], 4, "malformed request"),
        (&[0, 1], 4, "malformed request"),
        (&[0], 4, "truncated"),
        (b"\x00\x01x\x00mail\x00", 4, "unsupported transfer mode"),
        (b"\x00\x01\xff\xfe\x00octet\x00", 4, "not UTF-8"),
        (b"\x00\x02x.cfg\x00octet\x00", 2, "read-only"),
    ] {
        socket.send_to(packet, server.addrs.tftp).await.unwrap();
        let (answer, _) = receive(&socket).await.expect("an ERROR");
        assert_eq!(answer[..4], [0, 5, 0, code], "{packet:?}");
        let text = String::from_utf8_lossy(&answer[4..]);
        assert!(text.contains(message), "{packet:?}: {text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_leave_from_the_address_the_phone_asked() {
    // 127.0.0.2 is this host too; bound to every address, the server must
    // still answer from the one the phone sent to, not the one the route
    // back to 127.0.0.1 would pick.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(dir.path(), |c| {
        c.tftp = SocketAddr::from(([0, 0, 0, 0], 0));
    })
    .await;
    let image = firmware(&server, "x.bin", 100);
    let asked = SocketAddr::from(([127, 0, 0, 2], server.addrs.tftp.port()));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&rrq("firmware/x.bin", &[]), asked)
        .await
        .unwrap();
    let (data, from) = receive(&socket).await.expect("DATA 1");
    assert_eq!(
        from.ip(),
        asked.ip(),
        "the transfer answers from the address asked"
    );
    assert_eq!(&data[4..], &image[..]);
    socket.send_to(&ack(1), from).await.unwrap();
    socket
        .send_to(&rrq("missing.cfg", &[]), asked)
        .await
        .unwrap();
    let (error, from) = receive(&socket).await.expect("ERROR");
    assert_eq!((from.ip(), &error[..4]), (asked.ip(), &[0, 5, 0, 1][..]));
    // Answered by the listener itself: a malformed request.
    socket.send_to(&[0, 1, b'x'], asked).await.unwrap();
    let (error, from) = receive(&socket).await.expect("ERROR");
    assert_eq!((from.ip(), &error[..4]), (asked.ip(), &[0, 5, 0, 4][..]));
    server.stop().await;
}
