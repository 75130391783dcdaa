//! A phone boots and fetches its files over HTTP and TFTP.

use std::time::Duration;

use deskboot::domain::mac::Mac;
use deskboot::store::Store;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestServer, run, site_settings, user_json};

const YEALINK_UA: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";

/// A T46S for Ada (line 1) with a BLF on Bob and a speed dial.
async fn yealink_office(server: &TestServer) {
    server.put_site_settings().await;
    let ada = server.add_user(user_json("101", "Ada", "Lovelace")).await;
    server.add_user(user_json("102", "Bob", "Babbage")).await;
    server
        .add_device(json!({
            "mac": "00:15:65:AA:BB:CC",
            "model": "yealink-t46s",
            "lines": [{"user": ada["id"]}],
            "keys": [
                {"index": 1, "type": "line", "label": "Ada"},
                {"index": 2, "type": "blf", "value": "102", "label": "Bob"},
                {"index": 3, "type": "speed_dial", "value": "+15551234", "label": "Front desk"},
            ],
        }))
        .await;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_zone_gives_each_phone_its_daylight_saving_rule() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    let in_zone = |zone: &str| {
        let mut settings = site_settings();
        settings["time_zone"] = json!(zone);
        settings.as_object_mut().unwrap().remove("utc_offset");
        settings
    };
    let file = async || text(&server.phone_get("/001565aabbcc.cfg", None).await.1);
    let put = async |settings| {
        server
            .api(Method::PUT, "/api/v1/settings", Some(settings))
            .await
    };

    assert_eq!(put(in_zone("America/New_York")).await.0, 200);
    let new_york = file().await;
    for line in [
        "local_time.time_zone = -5",
        "local_time.summer_time = 1",
        "local_time.start_time = 3/2/7/2",
        "local_time.end_time = 11/1/7/2",
    ] {
        assert!(new_york.contains(line), "{line} in\n{new_york}");
    }

    assert_eq!(put(in_zone("Asia/Tokyo")).await.0, 200);
    let tokyo = file().await;
    assert!(tokyo.contains("local_time.time_zone = +9"), "{tokyo}");
    assert!(tokyo.contains("local_time.summer_time = 0"), "{tokyo}");

    let (status, error) = put(in_zone("Europe/Pariss")).await;
    assert_eq!(
        (status, error["field"].clone()),
        (422, json!("settings.time_zone"))
    );
    assert_eq!(file().await, tokyo, "a refused zone changes nothing");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_ones_user_picks_call_waiting_and_the_language_unless_the_phone_names_one() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    let file = async || text(&server.phone_get("/001565aabbcc.cfg", None).await.1);
    let before = file().await;
    assert!(before.contains("lang.gui = English") && before.contains("call_waiting.enable = 1"));
    let patch = json!({"language": "fr", "call_waiting": false});
    assert_eq!(
        server
            .api(Method::PATCH, "/api/v1/users/1", Some(patch))
            .await
            .0,
        200
    );
    let after = file().await;
    assert!(after.contains("lang.gui = French") && after.contains("call_waiting.enable = 0"));
    let own = json!({"settings": {"language": "de"}});
    let path = "/api/v1/devices/001565aabbcc";
    assert_eq!(server.api(Method::PATCH, path, Some(own)).await.0, 200);
    assert!(file().await.contains("lang.gui = German"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yealink_gets_its_own_config_over_http_and_both_tftp_clients() {
    let server = TestServer::start().await;
    yealink_office(&server).await;

    let (status, body) = server
        .phone_get("/001565aabbcc.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    let config = text(&body);
    for expected in [
        "account.1.user_name = sip101",
        "account.1.auth_name = auth101",
        "account.1.password = Pw-101-secret",
        "account.1.display_name = Ada Lovelace",
        "pbx.example.com",
        "ntp.example.com",
        "linekey.2.type = 16",
        "linekey.2.value = 102",
        "linekey.3.type = 13",
        "linekey.3.value = +15551234",
    ] {
        assert!(
            config.contains(expected),
            "missing {expected:?} in:\n{config}"
        );
    }

    let over_curl = server
        .tftp_curl("001565aabbcc.cfg")
        .await
        .expect("curl tftp");
    assert_eq!(over_curl, body, "TFTP (curl) and HTTP serve the same bytes");
    let over_hpa = server.tftp_hpa("001565aabbcc.cfg").await.expect("tftp-hpa");
    assert_eq!(
        over_hpa, body,
        "TFTP (tftp-hpa) and HTTP serve the same bytes"
    );

    // Vendors and firmware differ on case; the MAC is the same phone.
    let (status, upper) = server.phone_get("/001565AABBCC.cfg", None).await;
    assert_eq!((status, upper), (200, body));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_files_carry_no_credentials() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    let (status, body) = server
        .phone_get("/y000000000066.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    let common = text(&body);
    assert!(!common.contains("Pw-101"), "{common}");
    assert!(!common.contains("sip101"), "{common}");
    let over_tftp = server.tftp_curl("y000000000066.cfg").await.expect("tftp");
    assert_eq!(over_tftp, body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_carry_type_length_etag_and_honour_if_none_match() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    let client = reqwest::Client::new();
    let url = server.http_url("/001565aabbcc.cfg");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        first.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let length: usize = first.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first.bytes().await.unwrap().len(), length);

    let again = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    assert!(head.bytes().await.unwrap().is_empty());

    let post = client.post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405);

    // A change to the device changes the file, so the phone's ETag goes stale.
    let (status, _) = server
        .api(
            reqwest::Method::PATCH,
            "/api/v1/devices/001565aabbcc",
            Some(json!({"keys": []})),
        )
        .await;
    assert_eq!(status, 200);
    let changed = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_common_file_is_cached_at_once_and_a_phones_own_file_when_asked_again() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    let cached = || server.metric("deskboot_render_cache_bytes");
    let hits = || server.metric("deskboot_render_cache_hits_total");
    assert_eq!(server.phone_get("/y000000000066.cfg", None).await.0, 200);
    let common = cached().await;
    assert!(common > 0, "every phone of the model asks for it");

    let (status, first) = server
        .phone_get("/001565aabbcc.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cached().await, common, "a storm asks for it once: not kept");
    let (_, second) = server
        .phone_get("/001565aabbcc.cfg", Some(YEALINK_UA))
        .await;
    assert!(cached().await > common, "asked again: kept");
    let before = hits().await;
    let (_, third) = server
        .phone_get("/001565aabbcc.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(hits().await, before + 1, "served from the cache");
    assert!(first == second && second == third);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_mac_is_not_found_and_recorded_as_discovered() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    let before = server.snapshot().await;

    let ua = "Yealink SIP-T48S 66.86.0.15 00:15:65:00:00:01";
    let (status, body) = server.phone_get("/001565000001.cfg", Some(ua)).await;
    assert_eq!(status, 404);
    assert!(body.is_empty() || !text(&body).contains("Pw-"));
    assert_eq!(
        server.tftp_curl("001565000002.cfg").await,
        Err(68),
        "curl: TFTP file not found"
    );

    let (status, discovered) = server.get("/api/v1/discovered").await;
    assert_eq!(status, 200);
    let macs: Vec<&str> = discovered
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mac"].as_str().unwrap())
        .collect();
    assert!(macs.contains(&"001565000001"), "{discovered}");
    assert!(macs.contains(&"001565000002"), "{discovered}");
    let first = discovered
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mac"] == "001565000001")
        .unwrap();
    assert_eq!(first["vendor"], "Yealink");
    assert_eq!(first["model"], "yealink-t48s");
    assert_eq!(first["last"]["user_agent"], ua);
    assert_eq!(
        server.snapshot().await,
        before,
        "discovery creates no device"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_device_was_last_served_is_recorded_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    yealink_office(&server).await;
    let (status, _) = server
        .phone_get("/001565aabbcc.cfg", Some(YEALINK_UA))
        .await;
    assert_eq!(status, 200);
    server.stop().await;

    let store = Store::open(&dir.path().join("store")).unwrap();
    let mac: Mac = "001565aabbcc".parse().unwrap();
    let seen = store
        .sighting(mac)
        .unwrap()
        .expect("sighting written at shutdown");
    assert_eq!(seen.file, "001565aabbcc.cfg");
    assert_eq!(seen.user_agent.as_deref(), Some(YEALINK_UA));
    assert_eq!(seen.firmware.as_deref(), Some("66.86.0.15"));
    assert_eq!(seen.ip.to_string(), "127.0.0.1");
    assert_eq!(seen.transport, "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_phones_on_a_dual_stack_listener_are_seen_as_ipv4() {
    let dir = tempfile::tempdir().unwrap();
    let everywhere = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    if std::net::UdpSocket::bind(everywhere).is_err() {
        eprintln!("skipped: this host has no IPv6, so no dual-stack listener");
        return;
    }
    let server = TestServer::start_configured(dir.path(), |c| {
        c.http = everywhere;
        c.tftp = everywhere;
    })
    .await;
    yealink_office(&server).await;
    let http = format!(
        "http://127.0.0.1:{}/001565aabbcc.cfg",
        server.addrs.http.port()
    );
    let tftp = format!(
        "tftp://127.0.0.1:{}/001565aabbcc.cfg",
        server.addrs.tftp.port()
    );
    for url in [&http, &tftp] {
        let fetched = run("curl", &["-sf", "--max-time", "10", url]).await;
        assert!(fetched.status.success(), "{url}");
    }
    server.stop().await;
    let store = Store::open(&dir.path().join("store")).unwrap();
    let seen = store
        .sighting("001565aabbcc".parse().unwrap())
        .unwrap()
        .expect("sighting written at shutdown");
    // Not ::ffff:127.0.0.1: allow-lists, bans and resync use this address.
    assert_eq!(
        (seen.ip.to_string().as_str(), seen.transport.as_str()),
        ("127.0.0.1", "tftp")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tftp_names_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    // Raw requests: curl and friends clean `..` out of a URL before sending.
    let long = "a".repeat(400);
    for name in [
        &b"../../etc/passwd"[..],
        b"/etc/passwd",
        b"cfg/../001565aabbcc.cfg",
        b"..\\..\\001565aabbcc.cfg",
        b"001565aabbcc.cfg\x01",
        long.as_bytes(),
    ] {
        let (opcode, code) = server.tftp_raw_rrq(name).await;
        assert_eq!(
            (opcode, code),
            (5, 1),
            "{} should get ERROR 1 (file not found)",
            String::from_utf8_lossy(name)
        );
    }
    assert_eq!(
        server.tftp_raw_rrq(b"001565aabbcc.cfg").await.0,
        3,
        "the real file is DATA"
    );
    for name in ["..%2f..%2fetc%2fpasswd", "001565aabbcc.cfg%00"] {
        assert!(server.tftp_curl(name).await.is_err(), "{name}");
    }
    let by_hpa = server.tftp_hpa("../../etc/passwd").await;
    assert!(by_hpa.is_err(), "{by_hpa:?}");

    // Truncated and malformed packets: an ERROR (tftp.rs), and no harm done.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for packet in [
        &[0u8, 1][..],
        &[0, 1, b'x'],
        &[0, 9, 0, 0],
        &[
            0, 1, b'a', 0, b'o', b'c', b't', b'e', b't', 0, b'b', b'l', b'k', b's', b'i', b'z',
            b'e', 0, b'9', b'9', b'9', b'9', b'9', b'9', 0,
        ],
        &[],
    ] {
        socket.send_to(packet, server.addrs.tftp).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.tftp_curl("001565aabbcc.cfg").await.is_ok());
    server.stop().await;
}

/// Sends a raw HTTP request line, bypassing client-side path normalisation.
async fn raw_http_status(server: &TestServer, target: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(server.addrs.http)
        .await
        .unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_paths_are_not_found() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    for target in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/x/%2E%2E/001565aabbcc.cfg",
        "/..%5c..%5cwindows%5cwin.ini",
        "/001565aabbcc.cfg%00",
        "/%ff%fe.cfg",
    ] {
        assert_eq!(raw_http_status(&server, target).await, 404, "{target}");
    }
    assert_eq!(raw_http_status(&server, "/001565aabbcc.cfg").await, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_another_vendor_is_not_found_for_a_known_device() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    // The Yealink is provisioned; a Cisco MPP-style name for its MAC is not its file.
    let (status, _) = server.phone_get("/001565aabbcc.xml", None).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    yealink_office(&server).await;
    // A header far beyond what any phone sends: hyper refuses it.
    let mut stream = tokio::net::TcpStream::connect(server.addrs.http)
        .await
        .unwrap();
    let request = format!(
        "GET /001565aabbcc.cfg HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // A TFTP client asking for blocks bigger than the MTU is offered ours.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(
            b"\x00\x01001565aabbcc.cfg\x00octet\x00blksize\x0065464\x00",
            server.addrs.tftp,
        )
        .await
        .unwrap();
    let mut reply = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut reply))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&reply[..2], &[0, 6], "OACK");
    let options = String::from_utf8_lossy(&reply[2..n]).replace('\0', " ");
    assert!(options.contains("blksize 1468"), "{options}");

    // An admin body declared over the limit is refused from its headers,
    // before any of it is sent: the answer comes with the body unsent.
    let mut stream = tokio::net::TcpStream::connect(server.addrs.admin)
        .await
        .unwrap();
    let request = format!(
        "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        crate::common::TOKEN,
        17 << 20
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(
        answer.contains("{\"error\":"),
        "the API's JSON error: {answer}"
    );
    assert!(
        answer.contains("connection: close"),
        "the unread body ends the connection, and the answer says so: {answer}"
    );
    let (_, users) = server.get("/api/v1/users").await;
    assert_eq!(users.as_array().unwrap().len(), 2, "nothing was added");
    assert!(server.tftp_curl("001565aabbcc.cfg").await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_fails_for_a_phone_serves_its_last_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_in(&data).await;
    yealink_office(&server).await;
    let (status, good) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200);
    server.stop().await;

    // An administrator deploys a templates folder whose Yealink file compiles
    // but fails for phones with fewer than six lines.
    let broken = dir.path().join("templates");
    std::fs::create_dir_all(broken.join("yealink")).unwrap();
    std::fs::write(
        broken.join("yealink/mac.cfg"),
        "account.6.user_name = {{ lines[5].username }}\n",
    )
    .unwrap();
    let server = TestServer::start_configured(&data, |c| c.templates_dir = Some(broken)).await;
    let (status, body) = server.phone_get("/001565aabbcc.cfg", None).await;
    assert_eq!(status, 200, "the phone keeps working");
    assert_eq!(body, good, "with the file it last got");
    let over_tftp = server.tftp_curl("001565aabbcc.cfg").await.unwrap();
    assert_eq!(over_tftp, good);
    // A phone that never got a good file gets nothing rather than a broken one.
    let (status, _) = server
        .api(
            reqwest::Method::POST,
            "/api/v1/devices",
            Some(json!({"mac": "001565aabbdd", "model": "yealink-t46s"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(server.phone_get("/001565aabbdd.cfg", None).await.0, 404);
    // At least the first request and the new phone failed and were counted.
    let failures = server.metric("deskboot_render_failures_total").await;
    assert!(failures >= 2, "{failures}");
    server.stop().await;
}
