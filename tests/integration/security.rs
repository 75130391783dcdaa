//! The provisioning policy: allow-lists per transport, the User-Agent MAC,
//! TFTP without secrets, anti-scanning bans, the TFTP transfer cap, and the
//! counters in `/metrics`. Every refusal looks like a plain not-found.

use deskboot::policy::Policy;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::TestServer;

const FILE: &str = "/001565aabbcc.cfg";
const PASSWORD: &str = "Pw-101-secret";

/// A server under `policy` with Ada's Yealink provisioned.
async fn office(policy: Policy) -> TestServer {
    let server = TestServer::start_with(policy).await;
    server.ada_with_a_t46s().await;
    server
}

fn policy(toml: &str) -> Policy {
    toml::from_str(toml).expect("policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_outside_the_allow_list_get_not_found() {
    let server = office(policy(r#"http_allow = ["10.0.0.0/8"]"#)).await;
    for path in [FILE, "/y000000000066.cfg", "/nothing.cfg"] {
        assert_eq!(server.phone_get(path, None).await.0, 404, "{path}");
    }
    let over_tftp = server
        .tftp_curl("001565aabbcc.cfg")
        .await
        .expect("TFTP is open");
    assert!(String::from_utf8_lossy(&over_tftp).contains(PASSWORD));
    server.stop().await;

    let server = office(policy(r#"tftp_allow = ["10.0.0.0/8", "fd00::/8"]"#)).await;
    assert_eq!(server.phone_get(FILE, None).await.0, 200);
    assert_eq!(server.tftp_raw_rrq(b"001565aabbcc.cfg").await, (5, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_agent_naming_another_mac_gets_not_found() {
    let server = office(Policy::default()).await;
    let other = "Yealink SIP-T46S 66.86.0.15 00:15:65:11:22:33";
    let own = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
    assert_eq!(server.phone_get(FILE, Some(other)).await.0, 404);
    assert_eq!(server.phone_get(FILE, Some(own)).await.0, 200);
    server.stop().await;

    let server = office(policy("match_user_agent_mac = false")).await;
    assert_eq!(server.phone_get(FILE, Some(other)).await.0, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_can_be_kept_free_of_secrets() {
    let server = office(policy(r#"tftp_secrets_allow = ["10.0.0.0/8"]"#)).await;
    server
        .api(
            Method::PUT,
            "/api/v1/settings",
            Some(json!({"sip_server": "pbx.example.com", "admin_password": "Admin-secret-9"})),
        )
        .await;
    // HTTP first, twice (a phone's own file is kept when asked again), so a
    // cached answer with secrets is there to leak.
    server.phone_get(FILE, None).await;
    let (status, over_http) = server.phone_get(FILE, None).await;
    assert_eq!(status, 200);
    let over_http = String::from_utf8(over_http).unwrap();
    assert!(over_http.contains(PASSWORD) && over_http.contains("Admin-secret-9"));
    let over_tftp = String::from_utf8(server.tftp_curl("001565aabbcc.cfg").await.unwrap()).unwrap();
    assert!(!over_tftp.contains(PASSWORD), "{over_tftp}");
    assert!(!over_tftp.contains("Admin-secret-9"), "{over_tftp}");
    assert!(
        over_tftp.contains("account.1.user_name = sip101"),
        "the rest is there"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_is_banned_and_its_neighbours_keep_working() {
    let server = office(policy("scan_unknown_macs = 5\nban_secs = 300")).await;
    let scanner = "python-requests/2.31";
    for n in 0..6 {
        let (status, _) = server
            .phone_get(&format!("/0015650000{n:02x}.cfg"), Some(scanner))
            .await;
        assert_eq!(status, 404);
    }
    let throttled = server.metric("deskboot_http_throttled_total").await;
    assert_eq!(server.phone_get(FILE, Some(scanner)).await.0, 404, "banned");
    assert_eq!(
        server.metric("deskboot_http_throttled_total").await,
        throttled + 1,
        "a banned client is also slowed down"
    );
    let phone = "Yealink SIP-T46S 66.86.0.15";
    assert_eq!(
        server.phone_get(FILE, Some(phone)).await.0,
        200,
        "a neighbour behind the same NAT"
    );

    let (status, bans) = server.get("/api/v1/bans").await;
    assert_eq!(status, 200);
    assert_eq!(bans.as_array().unwrap().len(), 1, "{bans}");
    assert_eq!(bans[0]["address"], "127.0.0.1");
    assert_eq!(bans[0]["user_agent"], scanner);
    assert_eq!(bans[0]["unknown_macs"], 6);

    assert_eq!(server.metric("deskboot_bans").await, 1);
    assert_eq!(
        server.metric("deskboot_unknown_mac_requests_total").await,
        6
    );
    let refused = r#"deskboot_requests_total{transport="http",outcome="refused"}"#;
    assert_eq!(server.metric(refused).await, 1);
    let served = r#"deskboot_requests_total{transport="http",outcome="served"}"#;
    assert_eq!(server.metric(served).await, 1);
    assert_eq!(server.metric("deskboot_devices").await, 1);
    assert!(server.metric("deskboot_store_bytes").await > 0);
    let yealink = r#"deskboot_served_total{transport="http",vendor="Yealink"}"#;
    assert_eq!(server.metric(yealink).await, 1);
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
    assert_eq!(server.phone_get(FILE, Some(scanner)).await.0, 200);
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
async fn a_scanner_forging_user_agents_crawls_and_known_phones_do_not() {
    let server = office(policy("scan_unknown_macs = 5\nban_secs = 300")).await;
    let forged = |n: u8| format!("Yealink SIP-T46S 66.86.0.15 00:15:65:00:00:{n:02x}");
    // Each guess names itself anew: only the address (5 x 5 MACs) counts.
    for n in 0..13 {
        let file = format!("/0015650000{n:02x}.cfg");
        assert_eq!(server.phone_get(&file, Some(&forged(n))).await.0, 404);
    }
    let throttled = server.metric("deskboot_http_throttled_total").await;
    let status = server
        .phone_get("/00156500000d.cfg", Some(&forged(13)))
        .await
        .0;
    assert_eq!(status, 404);
    assert_eq!(
        server.metric("deskboot_http_throttled_total").await,
        throttled + 1,
        "halfway to a ban, an unknown MAC's answer waits"
    );
    let throttled = throttled + 1;
    let own_mac = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
    assert_eq!(server.phone_get(FILE, Some(own_mac)).await.0, 200);
    assert_eq!(
        server.metric("deskboot_http_throttled_total").await,
        throttled,
        "a known phone naming its MAC does not wait"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_tftp_scanner_gets_silence_for_device_files_only() {
    let server = office(policy("scan_unknown_macs = 5\nban_secs = 300")).await;
    for n in 0..6 {
        let unknown = format!("0015650000{n:02x}.cfg");
        let not_found = (5, 1);
        assert_eq!(server.tftp_raw_rrq(unknown.as_bytes()).await, not_found);
    }
    let (status, bans) = server.get("/api/v1/bans").await;
    assert_eq!(status, 200);
    assert_eq!(bans[0]["address"], "127.0.0.1", "{bans}");
    assert_eq!(bans[0]["user_agent"], Value::Null, "{bans}");

    let no_answer = (0, 0);
    let own_file = FILE.trim_start_matches('/').as_bytes();
    assert_eq!(server.tftp_raw_rrq(own_file).await, no_answer);
    let data = 3;
    assert_eq!(server.tftp_raw_rrq(b"y000000000066.cfg").await.0, data);
    let refused = r#"deskboot_requests_total{transport="tftp",outcome="refused"}"#;
    assert_eq!(server.metric(refused).await, 1);
    let own_mac = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
    assert_eq!(
        server.phone_get(FILE, Some(own_mac)).await.0,
        200,
        "the address is banned, but not a phone naming its own MAC"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_beyond_its_transfer_cap_is_told_busy() {
    let server = office(policy("tftp_max_transfers = 0")).await;
    assert_eq!(server.tftp_raw_rrq(b"001565aabbcc.cfg").await, (5, 0));
    assert_eq!(
        server.phone_get(FILE, None).await.0,
        200,
        "HTTP is not affected"
    );
    server.stop().await;
}

/// curl with Digest credentials: the status code.
async fn curl_digest(url: &str, user: &str, password: &str) -> String {
    let out = crate::common::run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--digest",
            "-u",
            &format!("{user}:{password}"),
            url,
        ],
    )
    .await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An MD5 Digest answer to a challenge, as phones that know only MD5 give it.
fn md5_answer(challenge: &str, user: &str, password: &str, uri: &str) -> String {
    use md5::{Digest, Md5};
    let hex = |t: String| -> String {
        Md5::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let ha1 = hex(format!("{user}:deskboot:{password}"));
    let ha2 = hex(format!("GET:{uri}"));
    let response = hex(format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"deskboot\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"{response}\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_digest_credentials_guard_each_phones_file() {
    let server = TestServer::start_with(policy(r#"http_auth = "device""#)).await;
    let device = server.ada_with_a_t46s().await;
    let user = device["http_auth"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let password = device["http_auth"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(user, "001565aabbcc");
    let (_, shown_again) = server.get("/api/v1/devices/001565aabbcc").await;
    assert!(shown_again.get("http_auth").is_none(), "shown once");
    let (_, other) = server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565aabbdd", "model": "yealink-t46s"}),
        )
        .await;
    let other_password = other["http_auth"]["password"].as_str().unwrap().to_string();

    let client = reqwest::Client::new();
    let url = server.http_url(FILE);
    let challenged = client.get(&url).send().await.unwrap();
    assert_eq!(challenged.status(), 401);
    let challenges: Vec<String> = challenged
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges[0].contains("algorithm=SHA-256") && challenges[1].contains("algorithm=MD5"));
    let unknown = client
        .get(server.http_url("/0015650000ff.cfg"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401, "an unknown MAC is challenged alike");
    assert_eq!(
        server.phone_get("/y000000000066.cfg", None).await.0,
        200,
        "common files are open"
    );

    assert_eq!(curl_digest(&url, &user, &password).await, "200");
    assert_eq!(curl_digest(&url, &user, "guess").await, "401");
    assert_eq!(
        curl_digest(&url, "001565aabbdd", &other_password).await,
        "401",
        "another phone's credentials"
    );

    let md5 = md5_answer(&challenges[1], &user, &password, FILE);
    let served = client
        .get(&url)
        .header("Authorization", md5)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert!(served.text().await.unwrap().contains(PASSWORD));
    server.stop().await;
}
