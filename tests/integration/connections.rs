//! Connections that hold the server's resources without getting anywhere:
//! silent ones, kept-alive ones nobody uses again, request heads sent a line
//! at a time, and readers that stop reading are closed after the HTTP
//! timeouts, on every HTTP listener. A download that keeps moving is not cut.
//! A connection past its address's share is closed at once, and counted.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use deskboot::config::{ClientCertMode, HttpsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{TestServer, run};

/// The HTTP timeouts (request head, send) these tests give the server.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Long past it: a connection still open by then was not closed.
const PATIENCE: Duration = Duration::from_secs(6);

/// A server with one-second HTTP timeouts, and phones' HTTPS with a
/// certificate for 127.0.0.1 in `dir/tls/cert.pem`.
async fn impatient_server(dir: &tempfile::TempDir) -> TestServer {
    let names = ["127.0.0.1".to_string()];
    let (cert, key) = deskboot::transport::tls::write_self_signed(&dir.path().join("tls"), &names)
        .expect("certificate written");
    TestServer::start_configured(&dir.path().join("data"), |config| {
        let timeout = NonZeroU64::new(TIMEOUT.as_secs()).expect("non-zero");
        config.http_request_timeout_secs = timeout;
        config.http_send_timeout_secs = timeout;
        config.https = Some(HttpsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert,
            key,
            client_ca: None,
            client_cert: ClientCertMode::Optional,
        });
    })
    .await
}

/// How long the server took to close `stream`, reading and discarding what
/// it sends; `None` if it was still open after [`PATIENCE`].
async fn time_until_closed(stream: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = vec![0; 64 * 1024];
    while started.elapsed() < PATIENCE {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn closed_after_the_timeout(waited: Option<Duration>, what: &str) {
    let waited = waited.unwrap_or_else(|| panic!("{what}: still open after {PATIENCE:?}"));
    assert!(
        waited >= TIMEOUT / 2,
        "{what}: closed too early, after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_on_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(&dir).await;
    let https = server.addrs.https.expect("HTTPS is on");

    // Connected, and never a byte: before HTTP is even detected (or, on
    // HTTPS, before the TLS handshake).
    for (what, addr) in [
        ("HTTP", server.addrs.http),
        ("HTTPS", https),
        ("admin", server.addrs.admin),
    ] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closed_after_the_timeout(time_until_closed(&mut silent).await, what);
    }

    // One request answered, then nothing more on a kept-alive connection.
    let mut kept = TcpStream::connect(server.addrs.http).await.unwrap();
    kept.write_all(b"GET /nothing.cfg HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0; 12];
    kept.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 404");
    closed_after_the_timeout(time_until_closed(&mut kept).await, "kept alive");

    // A request head that never ends, though a line arrives every 200 ms.
    let mut trickle = TcpStream::connect(server.addrs.http).await.unwrap();
    trickle
        .write_all(b"GET /nothing.cfg HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut byte = [0; 1];
    let closed = loop {
        if started.elapsed() > PATIENCE {
            break None;
        }
        if trickle.write_all(b"X-Slow: yes\r\n").await.is_err() {
            break Some(started.elapsed());
        }
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut byte)).await
        {
            break Some(started.elapsed());
        }
    };
    closed_after_the_timeout(closed, "trickled head");

    // Nobody else was kept waiting.
    assert_eq!(server.phone_get("/nothing.cfg", None).await.0, 404);
    server.stop().await;
}

/// The HTTP version curl used with `args`, as it writes it ("1.1", "2").
async fn http_version(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.extend([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--max-time",
        "5",
    ]);
    String::from_utf8_lossy(&run("curl", &args).await.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_http_1_1_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(&dir).await;
    let cert = dir.path().join("tls/cert.pem").display().to_string();
    let https = format!(
        "https://{}/nothing.cfg",
        server.addrs.https.expect("HTTPS is on")
    );
    // curl offers HTTP/2 first whenever the server does.
    assert_eq!(
        http_version(&["--http2", "--cacert", &cert, &https]).await,
        "1.1"
    );
    let http = server.http_url("/nothing.cfg");
    assert_ne!(
        http_version(&["--http2-prior-knowledge", &http]).await,
        "2",
        "no HTTP/2 without TLS either"
    );
    assert_eq!(http_version(&[&http]).await, "1.1");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_cut_when_the_reader_stops_and_not_while_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(&dir).await;
    // Far more than loopback's socket buffers hold, so the server's writes
    // wait on the reader.
    let image: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(server.data.join("firmware")).unwrap();
    std::fs::write(server.data.join("firmware/big.rom"), &image).unwrap();

    // Reads a megabyte, then pauses for a fifth of the timeout: 3 s in all.
    let mut slow = TcpStream::connect(server.addrs.http).await.unwrap();
    slow.write_all(b"GET /firmware/big.rom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (mut received, mut next_pause) = (0, 1 << 20);
    let mut buffer = vec![0; 64 * 1024];
    let started = Instant::now();
    loop {
        match slow.read(&mut buffer).await.unwrap() {
            0 => break,
            n => received += n,
        }
        if received >= next_pause {
            tokio::time::sleep(TIMEOUT / 5).await;
            next_pause += 1 << 20;
        }
    }
    assert!(
        received > image.len(),
        "the whole image and its head arrive ({received} bytes)"
    );
    assert!(
        started.elapsed() > TIMEOUT * 2,
        "the download outlived the timeout"
    );

    // Reads the head, then nothing: the server gives up on it.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stalled = socket.connect(server.addrs.http).await.unwrap();
    stalled
        .write_all(b"GET /firmware/big.rom HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0; 12];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    tokio::time::sleep(TIMEOUT * 3).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut rest)).await;
    assert!(
        rest.len() < image.len(),
        "the connection was closed before the image was sent ({} bytes)",
        rest.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_addresss_share_is_closed_at_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(&dir.path().join("data"), |config| {
        config.http_max_connections_per_source = NonZeroUsize::new(2).expect("non-zero");
    })
    .await;
    let phones = server.addrs.http;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(TcpStream::connect(phones).await.unwrap());
    }
    // Whichever of the three the server took last is closed, without an
    // answer and before the request timeout (10 s here) could close it;
    // the other two stay open.
    let deadline = Instant::now() + PATIENCE;
    let closed = loop {
        let closed: Vec<usize> = (0..streams.len())
            .filter(|&n| is_closed(&streams[n]))
            .collect();
        if !closed.is_empty() {
            break closed;
        }
        assert!(Instant::now() < deadline, "no connection was closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(closed.len(), 1, "closed: {closed:?}");
    assert_eq!(
        server
            .metric("deskboot_http_connections_refused_total")
            .await,
        1
    );

    // A place given back (once the server sees the close) is a place for
    // the next connection.
    drop(streams);
    let deadline = Instant::now() + PATIENCE;
    while !answers(phones).await {
        assert!(Instant::now() < deadline, "no place came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the server closed `stream` (it never sends on an idle one).
fn is_closed(stream: &TcpStream) -> bool {
    match stream.try_read(&mut [0; 1]) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Whether a new connection to `listener` gets an HTTP answer.
async fn answers(listener: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(listener).await else {
        return false;
    };
    let request = b"GET /nothing.cfg HTTP/1.1\r\nHost: phones\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 ")
}
