//! Resync: a SIP NOTIFY with the vendor's event, sent over UDP to the address
//! a phone last provisioned from; here a UDP listener on loopback plays the
//! phone.

use serde_json::json;
use tokio::net::UdpSocket;

use crate::common::{TOKEN, TestServer, run, user_json};

/// A fake phone's SIP socket: answers the first request with `answer` (or
/// not at all) and hands back what it received.
async fn fake_phone(answer: Option<&'static str>) -> (u16, tokio::task::JoinHandle<String>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut buffer = [0u8; 4096];
        let (n, from) = socket.recv_from(&mut buffer).await.unwrap();
        if let Some(answer) = answer {
            socket.send_to(answer.as_bytes(), from).await.unwrap();
        }
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seen_phone_gets_its_vendors_notify() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    for (mac, model) in [
        ("001565aabbcc", "yealink-t46s"),
        ("00562b043615", "cisco-mpp-8851"),
    ] {
        server
            .add_device(json!({"mac": mac, "model": model, "lines": [{"user": ada["id"]}]}))
            .await;
    }

    let (status, error) = server
        .post("/api/v1/devices/001565aabbcc/resync", json!({}))
        .await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["field"], "mac");
    assert!(error["error"].as_str().unwrap().contains("never"));
    let (status, _) = server
        .post("/api/v1/devices/001565aabbdd/resync", json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .post("/api/v1/devices/001565aabbcc/resync", json!({"port": "x"}))
        .await;
    assert_eq!(status, 422);

    // The phone provisions from 127.0.0.1, so that is where the NOTIFY goes.
    assert_eq!(server.phone_get("/001565aabbcc.cfg", None).await.0, 200);
    let (port, phone) = fake_phone(Some("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let (status, outcome) = server
        .post(
            "/api/v1/devices/00:15:65:AA:BB:CC/resync",
            json!({"port": port}),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["event"], "check-sync;reboot=false");
    assert_eq!(outcome["answer"], "SIP/2.0 200 OK");
    assert_eq!(outcome["sent_to"], format!("127.0.0.1:{port}"));
    let received = phone.await.unwrap();
    assert!(
        received.starts_with(&format!("NOTIFY sip:sip101@127.0.0.1:{port} SIP/2.0\r\n")),
        "{received}"
    );
    assert!(received.contains("\r\nEvent: check-sync;reboot=false\r\n"));
    assert!(
        !received.contains("Pw-101-secret"),
        "no credentials in a NOTIFY"
    );

    // Cisco's event, through the CLI; a phone that does not answer is not an error.
    assert_eq!(server.phone_get("/00562b043615.xml", None).await.0, 200);
    let (port, phone) = fake_phone(None).await;
    let out = run(
        env!("CARGO_BIN_EXE_deskboot"),
        &[
            "resync",
            "00562b043615",
            "--port",
            &port.to_string(),
            "--server",
            &server.admin_url(""),
            "--token",
            TOKEN,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["event"], "resync");
    assert!(outcome["answer"].is_null());
    assert!(phone.await.unwrap().contains("\r\nEvent: resync\r\n"));
    server.stop().await;
}
