//! Anti-scanning, attacked as a MAC scanner on the phones' network would:
//! forged User-Agents, a flood of addresses, a scan spread over a network,
//! forged UDP sources. The scanner must never get a provisioned phone's
//! password once it is banned, and must not ban anyone with forged packets.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use deskboot::access::policy::Policy;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::common::TestServer;
use crate::security::{FILE, PASSWORD, office, policy};

/// What a scanner puts in its User-Agent: the very MAC it guesses.
fn naming(mac: &str) -> String {
    format!("Yealink SIP-T46S 66.86.0.15 {mac}")
}

/// The `n`th guess of a scan: an unknown MAC, and its file.
fn guess(n: u32) -> (String, String) {
    let mac = format!("001565{n:06x}");
    let file = format!("/{mac}.cfg");
    (mac, file)
}

/// The name a TFTP request asks for the file at `path`.
fn tftp_name(path: &str) -> &[u8] {
    path.trim_start_matches('/').as_bytes()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The bans in force, as the API lists them.
async fn bans(server: &TestServer) -> Vec<Value> {
    let (status, bans) = server.get("/api/v1/bans").await;
    assert_eq!(status, 200);
    bans.as_array().unwrap().clone()
}

/// Waits until `address` is banned over `transport`; its ban.
async fn banned(server: &TestServer, address: &str, transport: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = bans(server)
            .await
            .into_iter()
            .find(|ban| ban["address"] == address && ban["transport"] == transport);
        if let Some(ban) = found {
            return ban;
        }
        assert!(Instant::now() < deadline, "{address} never banned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_agent_naming_the_guessed_mac_neither_hurries_nor_passes_a_ban() {
    let server = office(policy("scan_unknown_macs = 5\nban_secs = 300")).await;
    for n in 0..3 {
        let (mac, file) = guess(n);
        assert_eq!(server.phone_get(&file, Some(&naming(&mac))).await.0, 404);
    }
    // Halfway to a ban: a known MAC waits like an unknown one, so timing
    // does not tell them apart.
    let throttled = server.metric("deskboot_http_throttled_total").await;
    let own = naming("00:15:65:aa:bb:cc");
    assert_eq!(server.phone_get(FILE, Some(&own)).await.0, 200);
    let (mac, file) = guess(3);
    assert_eq!(server.phone_get(&file, Some(&naming(&mac))).await.0, 404);
    assert_eq!(
        server.metric("deskboot_http_throttled_total").await,
        throttled + 2,
        "the known MAC waited as the unknown one did"
    );
    for n in 4..6 {
        let (mac, file) = guess(n);
        server.phone_get(&file, Some(&naming(&mac))).await;
    }

    // Banned: the address gets no per-device file, whatever it says.
    for user_agent in [
        Some(own.as_str()),
        None,
        Some("PolycomVVX-VVX_450-UA/6.4.6"),
    ] {
        let (status, body) = server.phone_get(FILE, user_agent).await;
        assert_eq!(status, 404, "{user_agent:?}");
        assert!(!String::from_utf8_lossy(&body).contains(PASSWORD));
    }
    assert_eq!(
        server.phone_get("/y000000000066.cfg", None).await.0,
        200,
        "common files carry nothing per device"
    );
    let bans = bans(&server).await;
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(
        (
            &bans[0]["address"],
            &bans[0]["transport"],
            &bans[0]["unknown_macs"]
        ),
        (&json!("127.0.0.1"), &json!("http"), &json!(6))
    );
    assert_eq!(server.metric("deskboot_bans").await, 1);
    assert_eq!(
        server.metric("deskboot_unknown_mac_requests_total").await,
        6
    );
    let metrics = reqwest::get(server.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("001565") && !metrics.contains(PASSWORD));

    let (status, lifted) = server
        .api(Method::DELETE, "/api/v1/bans/127.0.0.1", None)
        .await;
    assert_eq!((status, lifted["lifted"].clone()), (200, json!(1)));
    assert_eq!(server.phone_get(FILE, Some(&own)).await.0, 200);
    let (_, audit) = server.get("/api/v1/audit?target=ban/127.0.0.1").await;
    assert_eq!(
        (audit[0]["action"].clone(), audit[0]["changes"].clone()),
        (json!("ban.lift"), json!({"lifted": 1})),
        "{audit}"
    );
    let (status, error) = server
        .api(Method::DELETE, "/api/v1/bans/not-an-ip", None)
        .await;
    assert_eq!(
        (status, error["field"].clone()),
        (422, Value::from("address"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_scan_with_forged_user_agents_gets_no_password() {
    let server = office(Policy::default()).await;
    let server = std::sync::Arc::new(server);
    // Many guesses at once, each naming its MAC, as the attack did.
    let mut scan = JoinSet::new();
    for n in 0..200 {
        let server = server.clone();
        scan.spawn(async move {
            let (mac, file) = guess(n);
            server.phone_get(&file, Some(&naming(&mac))).await.0
        });
    }
    while let Some(status) = scan.join_next().await {
        assert_eq!(status.unwrap(), 404);
    }
    for user_agent in [naming("001565aabbcc"), naming("00:15:65:AA:BB:CC")] {
        let (status, body) = server.phone_get(FILE, Some(&user_agent)).await;
        assert_eq!(status, 404, "{user_agent}");
        assert!(!String::from_utf8_lossy(&body).contains(PASSWORD));
    }
    assert!(server.metric("deskboot_bans").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_spread_over_a_network_bans_the_network() {
    let server = office(policy("scan_unknown_macs = 5\nban_secs = 300")).await;
    // Five guesses from each of six hosts: none past its own limit, the
    // /24 past five times it.
    for host in 1..=6 {
        let source = ip(&format!("127.7.7.{host}"));
        for n in 0..5 {
            let (_, file) = guess(host * 10 + n);
            assert_eq!(server.phone_get_from(source, &file, None).await.0, 404);
        }
    }
    let ban = banned(&server, "127.7.7.0/24", "http").await;
    assert_eq!(ban["unknown_macs"], 26, "{ban}");
    let (status, body) = server.phone_get_from(ip("127.7.7.200"), FILE, None).await;
    assert_eq!(status, 404, "a new address of the banned network");
    assert!(!String::from_utf8_lossy(&body).contains(PASSWORD));
    assert_eq!(
        server.phone_get_from(ip("127.7.8.1"), FILE, None).await.0,
        200,
        "the next network"
    );
    let (status, lifted) = server
        .api(Method::DELETE, "/api/v1/bans/127.7.7.9", None)
        .await;
    assert_eq!((status, lifted["lifted"].clone()), (200, json!(1)));
    assert_eq!(
        server.phone_get_from(ip("127.7.7.200"), FILE, None).await.0,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_addresses_does_not_switch_the_defence_off() {
    let server = office(Policy::default()).await;
    let server = std::sync::Arc::new(server);
    // One guess from each of 10,050 addresses, each in a /24 of its own:
    // more than the tables hold, and no network past its limit.
    let mut flood = JoinSet::new();
    for batch in 0..201u32 {
        let server = server.clone();
        flood.spawn(async move {
            for k in 0..50u32 {
                let n = batch * 50 + k;
                let source = ip(&format!("127.{}.{}.1", 100 + n / 256, n % 256));
                let (_, file) = guess(n);
                let answer = server
                    .tftp_raw_rrq_from(source, tftp_name(&file), Duration::from_secs(5))
                    .await;
                assert_eq!(answer, (5, 1), "not found");
            }
        });
    }
    while let Some(done) = flood.join_next().await {
        done.unwrap();
    }
    // Then a scanner from an address of its own: still followed, and
    // banned past the limit (20): no answer at all for device files then.
    let scanner = ip("127.200.0.1");
    let mut answered = 0;
    for n in 20_000..20_030 {
        let (_, file) = guess(n);
        let patience = Duration::from_secs(1);
        match server
            .tftp_raw_rrq_from(scanner, tftp_name(&file), patience)
            .await
        {
            (5, 1) => answered += 1,
            silence => {
                assert_eq!(silence, (0, 0));
                break;
            }
        }
    }
    assert_eq!(answered, 21, "banned past its limit");
    banned(&server, "127.200.0.1", "tftp").await;
    let known = tftp_name(FILE);
    assert_eq!(
        server
            .tftp_raw_rrq_from(scanner, known, Duration::from_secs(2))
            .await,
        (0, 0),
        "the known phone's file is not given to the scanner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tftp_sources_ban_no_one_over_http_nor_a_known_phone() {
    let server = office(policy("scan_unknown_macs = 5\nban_secs = 300")).await;
    let (_, bob) = server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565aabbdd", "model": "yealink-t46s"}),
        )
        .await;
    assert_eq!(bob["mac"], "001565aabbdd", "{bob}");
    // Ada's phone at 127.0.0.5 fetches its file, as phones do.
    let phone = ip("127.0.0.5");
    let own = tftp_name(FILE);
    let patience = Duration::from_secs(5);
    assert_eq!(server.tftp_raw_rrq_from(phone, own, patience).await, (3, 1));

    // One-way packets "from" the phone's address, never read.
    for n in 0..22 {
        let (_, file) = guess(n);
        server.tftp_forged_rrq(phone, tftp_name(&file)).await;
    }
    banned(&server, "127.0.0.5", "tftp").await;

    let poly = Some("PolycomVVX-VVX_450-UA/6.4.6.2474");
    let (status, body) = server.phone_get_from(phone, FILE, poly).await;
    assert_eq!(status, 200, "UDP evidence bans no one over HTTP");
    assert!(String::from_utf8_lossy(&body).contains(PASSWORD));
    assert_eq!(
        server.tftp_raw_rrq_from(phone, own, patience).await,
        (3, 1),
        "the phone last served at this address keeps its file"
    );
    assert_eq!(
        server
            .tftp_raw_rrq_from(phone, b"001565aabbdd.cfg", Duration::from_secs(2))
            .await,
        (0, 0),
        "a device never served here is not"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_hosts_and_firmware_strings_neither_miss_nor_fill_the_cache() {
    let server = TestServer::start_with(Policy::default()).await;
    server.ada_with_a_t46s().await;
    let client = reqwest::Client::new();
    let fetch = |host: String, firmware: String, path: &'static str| {
        let request = client
            .get(server.http_url(path))
            .header("Host", host)
            .header("User-Agent", format!("Yealink SIP-T46S {firmware}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let misses = "deskboot_render_cache_misses_total";
    let common = "/y000000000066.cfg";

    // No provisioning_url: the file names the Host it was asked through,
    // so each made-up one renders, but none is kept.
    let before = server.metric("deskboot_render_cache_bytes").await;
    for n in 0..50 {
        assert_eq!(
            fetch(format!("h{n}.example"), "66.86.0.15".into(), common).await,
            200
        );
    }
    assert_eq!(
        server.metric("deskboot_render_cache_bytes").await,
        before,
        "variants asked once are not kept"
    );

    // With one, the Host changes nothing: one render for every Host and
    // firmware string.
    server.put_site_settings().await;
    let rendered = server.metric(misses).await;
    for n in 0..50 {
        let status = fetch(format!("h{n}.example"), format!("66.86.0.{n}"), common).await;
        assert_eq!(status, 200);
        let status = fetch(format!("h{n}.example"), format!("66.86.0.{n}"), FILE).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        server.metric(misses).await,
        rendered + 3,
        "the common file once, the phone's own until its second ask kept it"
    );
    server.stop().await;
}
