//! Resync: a SIP NOTIFY with the vendor's event, sent over UDP to the address
//! a phone last provisioned from; here a UDP listener on loopback plays the
//! phone.

use serde_json::json;
use tokio::net::UdpSocket;

use crate::common::{TestServer, user_json};

/// A fake phone's SIP socket: answers the first request with `answer` (or
/// not at all) and hands back what it received.
async fn fake_phone(answer: Option<&'static str>) -> (u16, tokio::task::JoinHandle<String>) {
    let (port, task) = fake_phones(1, answer).await;
    (
        port,
        tokio::spawn(async move { task.await.unwrap().remove(0) }),
    )
}

/// The SIP socket of `count` fake phones behind one address: answers each
/// request with `answer` (or not at all) and hands back what it received.
async fn fake_phones(
    count: usize,
    answer: Option<&'static str>,
) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while received.len() < count {
            let (n, from) = socket.recv_from(&mut buffer).await.unwrap();
            if let Some(answer) = answer {
                socket.send_to(answer.as_bytes(), from).await.unwrap();
            }
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        received
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
    let out = server
        .cli(&["resync", "00562b043615", "--port", &port.to_string()])
        .await;
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["event"], "resync");
    assert!(outcome["answer"].is_null());
    assert!(phone.await.unwrap().contains("\r\nEvent: resync\r\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seen_phone_of_a_model_is_resynced_at_a_pace() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    let phones = [
        ("001565aabb01", "yealink-t46s", true),
        ("001565aabb02", "yealink-t46s", true),
        ("001565aabb03", "yealink-t46s", false),
        ("00562b043615", "cisco-mpp-8851", true),
    ];
    for (mac, model, seen) in phones {
        server
            .add_device(json!({"mac": mac, "model": model, "lines": [{"user": ada["id"]}]}))
            .await;
        if seen {
            let file = if model == "yealink-t46s" {
                ".cfg"
            } else {
                ".xml"
            };
            assert_eq!(
                server.phone_get(&format!("/{mac}{file}"), None).await.0,
                200
            );
        }
    }

    for (body, status) in [
        (json!({"per_second": 0}), 422),
        (json!({"model": "no-such-phone"}), 404),
        (json!({"pace": 3}), 422),
    ] {
        assert_eq!(server.post("/api/v1/resync", body).await.0, status);
    }
    let before = server.snapshot().await;
    let (_, audit) = server.get("/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "resync.bulk"),
        "a refused resync records nothing: {audit}"
    );

    let (port, phones) = fake_phones(2, Some("SIP/2.0 200 OK\r\n\r\n")).await;
    let (status, plan) = server
        .post(
            "/api/v1/resync",
            json!({"model": "yealink-t46s", "port": port, "per_second": 20}),
        )
        .await;
    assert_eq!(status, 202, "{plan}");
    assert_eq!(
        plan,
        json!({"queued": 2, "per_second": 20, "seconds": 1, "never_seen": 1, "no_event": 0})
    );
    let received = phones.await.unwrap();
    assert!(
        received
            .iter()
            .all(|r| r.contains("\r\nEvent: check-sync;reboot=false\r\n")),
        "{received:?}"
    );
    assert_eq!(
        server.snapshot().await,
        before,
        "a resync changes no record"
    );
    let (_, audit) = server
        .get("/api/v1/audit?target=resync/model:yealink-t46s")
        .await;
    assert_eq!(audit[0]["changes"]["queued"], 2, "{audit}");

    // Every model at once, through the CLI: the Cisco phone too.
    let (port, phones) = fake_phones(3, None).await;
    let out = server
        .cli(&["resync", "--all", "--port", &port.to_string()])
        .await;
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (plan["queued"].clone(), plan["never_seen"].clone()),
        (json!(3), json!(1))
    );
    let received = phones.await.unwrap();
    assert_eq!(
        received
            .iter()
            .filter(|r| r.contains("\r\nEvent: resync\r\n"))
            .count(),
        1,
        "{received:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_is_the_vendors_reboot_event_and_refused_where_there_is_none() {
    let server = TestServer::start().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    for (mac, model, file) in [
        ("001565aabbcc", "yealink-t46s", "/001565aabbcc.cfg"),
        ("7c2f80123456", "gigaset-n510-ip-pro", "/7C2F80123456.xml"),
    ] {
        server
            .add_device(json!({"mac": mac, "model": model, "lines": [{"user": ada["id"]}]}))
            .await;
        assert_eq!(server.phone_get(file, None).await.0, 200, "{file}");
    }

    // Through the CLI: the reboot event, and nothing else.
    let (port, phone) = fake_phone(Some("SIP/2.0 200 OK\r\n\r\n")).await;
    let out = server
        .cli(&[
            "resync",
            "001565aabbcc",
            "--reboot",
            "--port",
            &port.to_string(),
        ])
        .await;
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["event"], "check-sync;reboot=true", "{outcome}");
    let received = phone.await.unwrap();
    assert!(
        received.contains("\r\nEvent: check-sync;reboot=true\r\n"),
        "{received}"
    );

    // A plain resync, said out loud or not, never asks for a reboot.
    for reboot in [None, Some(false)] {
        let (port, phone) = fake_phone(Some("SIP/2.0 200 OK\r\n\r\n")).await;
        let mut body = json!({"port": port});
        if let Some(reboot) = reboot {
            body["reboot"] = json!(reboot);
        }
        let (status, outcome) = server
            .post("/api/v1/devices/001565aabbcc/resync", body)
            .await;
        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["event"], "check-sync;reboot=false");
        let received = phone.await.unwrap();
        assert!(!received.contains("reboot=true"), "{received}");
    }
    let (status, _) = server
        .post(
            "/api/v1/devices/001565aabbcc/resync",
            json!({"reboot": "yes"}),
        )
        .await;
    assert_eq!(status, 422);

    // Gigaset documents no reboot its bases honour: refused, nothing sent.
    // The plain resync that follows is the first thing the base hears.
    let (port, base) = fake_phone(Some("SIP/2.0 200 OK\r\n\r\n")).await;
    let (status, error) = server
        .post(
            "/api/v1/devices/7c2f80123456/resync",
            json!({"port": port, "reboot": true}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "reboot");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("gigaset-n510-ip-pro phones have no known reboot event"),
        "{error}"
    );
    let (status, _) = server
        .post("/api/v1/devices/7c2f80123456/resync", json!({"port": port}))
        .await;
    assert_eq!(status, 200);
    assert!(
        base.await
            .unwrap()
            .contains("\r\nEvent: check-sync;reboot=false\r\n")
    );

    // In bulk: a model that cannot reboot is refused; across every model the
    // phones that cannot are left out and counted.
    let (status, error) = server
        .post(
            "/api/v1/resync",
            json!({"model": "gigaset-n510-ip-pro", "reboot": true}),
        )
        .await;
    assert_eq!(
        (status, &error["field"]),
        (422, &json!("reboot")),
        "{error}"
    );
    let (port, phones) = fake_phones(1, None).await;
    let (status, plan) = server
        .post("/api/v1/resync", json!({"port": port, "reboot": true}))
        .await;
    assert_eq!(status, 202, "{plan}");
    assert_eq!((&plan["queued"], &plan["no_event"]), (&json!(1), &json!(1)));
    let received = phones.await.unwrap();
    assert!(
        received[0].contains("\r\nEvent: check-sync;reboot=true\r\n"),
        "{received:?}"
    );
    let (_, audit) = server.get("/api/v1/audit?target=resync/all").await;
    assert_eq!(audit[0]["changes"]["reboot"], true, "{audit}");
    server.stop().await;
}
