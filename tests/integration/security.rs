//! The provisioning policy: allow-lists per transport, the User-Agent MAC,
//! TFTP without secrets and the TFTP transfer cap. Every refusal looks like
//! a plain not-found. Anti-scanning is in `scanning.rs`, HTTP Digest in
//! `digest.rs`.

use deskboot::access::policy::Policy;
use reqwest::Method;
use serde_json::json;

use crate::common::TestServer;

pub(crate) const FILE: &str = "/001565aabbcc.cfg";
pub(crate) const PASSWORD: &str = "Pw-101-secret";

/// A server under `policy` with Ada's Yealink provisioned.
pub(crate) async fn office(policy: Policy) -> TestServer {
    let server = TestServer::start_with(policy).await;
    server.ada_with_a_t46s().await;
    server
}

pub(crate) fn policy(toml: &str) -> Policy {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_gives_no_password_away_when_http_asks_phones_for_credentials() {
    let server = office(policy(r#"http_auth = "device""#)).await;
    let over_tftp = String::from_utf8(server.tftp_curl("001565aabbcc.cfg").await.unwrap()).unwrap();
    assert!(!over_tftp.contains(PASSWORD), "{over_tftp}");
    assert!(over_tftp.contains("account.1.user_name = sip101"));
    server.stop().await;

    let named = r#"
        http_auth = "device"
        tftp_secrets_allow = ["127.0.0.0/8"]
    "#;
    let server = office(policy(named)).await;
    let over_tftp = String::from_utf8(server.tftp_curl("001565aabbcc.cfg").await.unwrap()).unwrap();
    assert!(over_tftp.contains(PASSWORD), "a network named on purpose");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_files_never_carry_the_phones_admin_password() {
    let server = office(Policy::default()).await;
    let (status, _) = server
        .api(
            Method::PUT,
            "/api/v1/settings",
            Some(json!({"sip_server": "pbx.example.com", "admin_password": "Admin-secret-9"})),
        )
        .await;
    assert_eq!(status, 200);
    // Anyone can ask for a common file: no MAC, no credentials.
    let (status, common) = server.phone_get("/y000000000066.cfg", None).await;
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&common).contains("Admin-secret-9"));
    let (status, own) = server.phone_get(FILE, None).await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&own).contains("Admin-secret-9"),
        "the phone's own file sets it"
    );
    server.stop().await;
}
