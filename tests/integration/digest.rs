//! HTTP Digest authentication of phones, attacked as someone who overhears
//! a phone's answer would: replayed, for another file, from another
//! address, with a weaker hash.

use std::net::IpAddr;

use md5::Md5;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::TestServer;
use crate::security::{FILE, PASSWORD, policy};

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

fn hex<D: Digest>(text: String) -> String {
    D::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A phone's answer to `challenge` for `uri`, with count `nc`, computed
/// here from RFC 7616 rather than by the server's code.
fn answer(challenge: &str, user: &str, password: &str, uri: &str, nc: u32) -> String {
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (algorithm, h): (&str, fn(String) -> String) = if challenge.contains("algorithm=MD5") {
        ("MD5", hex::<Md5>)
    } else {
        ("SHA-256", hex::<Sha256>)
    };
    let nc = format!("{nc:08x}");
    let ha1 = h(format!("{user}:deskboot:{password}"));
    let ha2 = h(format!("GET:{uri}"));
    let response = h(format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"deskboot\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={algorithm}, qop=auth, nc={nc}, cnonce=\"0a4f113b\", response=\"{response}\""
    )
}

/// The challenges a request for `path` without credentials gets.
async fn challenges(client: &reqwest::Client, server: &TestServer, path: &str) -> Vec<String> {
    let challenged = client.get(server.http_url(path)).send().await.unwrap();
    assert_eq!(challenged.status(), 401);
    challenged
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// GET `path` with an `Authorization` header: the status, the body and
/// the first challenge, if any.
async fn fetch(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    authorization: &str,
) -> (u16, String, String) {
    let response = client
        .get(server.http_url(path))
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, response.text().await.unwrap(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_digest_credentials_guard_each_phones_file() {
    let server =
        TestServer::start_with(policy("http_auth = \"device\"\nhttp_auth_md5 = true")).await;
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
    let offered = challenges(&client, &server, FILE).await;
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(offered[0].contains("algorithm=SHA-256") && offered[1].contains("algorithm=MD5"));
    assert_eq!(
        challenges(&client, &server, "/0015650000ff.cfg")
            .await
            .len(),
        2,
        "an unknown MAC is challenged alike"
    );
    assert_eq!(
        server.phone_get("/y000000000066.cfg", None).await.0,
        200,
        "common files are open"
    );

    let url = server.http_url(FILE);
    assert_eq!(curl_digest(&url, &user, &password).await, "200");
    assert_eq!(curl_digest(&url, &user, "guess").await, "401");
    assert_eq!(
        curl_digest(&url, "001565aabbdd", &other_password).await,
        "401",
        "another phone's credentials"
    );

    let md5 = answer(&offered[1], &user, &password, FILE, 1);
    let (status, body, _) = fetch(&client, &server, FILE, &md5).await;
    assert_eq!(status, 200, "MD5, configured");
    assert!(body.contains(PASSWORD));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheard_digest_answer_fetches_nothing_more() {
    let server = TestServer::start_with(policy(r#"http_auth = "device""#)).await;
    let device = server.ada_with_a_t46s().await;
    let password = device["http_auth"]["password"].as_str().unwrap();
    server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565aabbdd", "model": "yealink-t46s"}),
        )
        .await;
    let client = reqwest::Client::new();
    let offered = challenges(&client, &server, FILE).await;
    assert_eq!(offered.len(), 1, "SHA-256 only: {offered:?}");
    let heard = answer(&offered[0], "001565aabbcc", password, FILE, 1);
    let (status, body, _) = fetch(&client, &server, FILE, &heard).await;
    assert_eq!(status, 200);
    assert!(body.contains(PASSWORD));

    // The same header again: spent. The phone is told to take a new nonce.
    let (status, body, challenge) = fetch(&client, &server, FILE, &heard).await;
    assert_eq!(status, 401, "a replay");
    assert!(!body.contains(PASSWORD));
    assert!(challenge.contains("stale=true"), "{challenge}");
    // For another file: its uri is not that file's.
    let next = answer(&offered[0], "001565aabbcc", password, FILE, 2);
    let (status, _, _) = fetch(&client, &server, "/001565aabbdd.cfg", &next).await;
    assert_eq!(status, 401, "another path");
    // From another address: the nonce was given to this one.
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let (status, body, _) = fetch(&elsewhere, &server, FILE, &next).await;
    assert_eq!(status, 401, "another address");
    assert!(!body.contains(PASSWORD));
    // The phone itself goes on with the next count.
    let (status, _, _) = fetch(&client, &server, FILE, &next).await;
    assert_eq!(status, 200);

    // MD5 is refused unless configured.
    let md5 = answer(
        &offered[0].replace("SHA-256", "MD5"),
        "001565aabbcc",
        password,
        FILE,
        3,
    );
    assert_eq!(fetch(&client, &server, FILE, &md5).await.0, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_answer_for_one_phone_does_not_fetch_another() {
    let shared = r#"
        http_auth = "shared"
        http_auth_user = "prov"
        http_auth_password = "Shared-secret-1"
    "#;
    let server = TestServer::start_with(policy(shared)).await;
    server.ada_with_a_t46s().await;
    let bob = server
        .add_user(crate::common::user_json("102", "Bob", "Babbage"))
        .await;
    server
        .post(
            "/api/v1/devices",
            json!({"mac": "001565aabbdd", "model": "yealink-t46s", "lines": [{"user": bob["id"]}]}),
        )
        .await;
    let client = reqwest::Client::new();
    let offered = challenges(&client, &server, FILE).await;
    let phone_a = answer(&offered[0], "prov", "Shared-secret-1", FILE, 1);
    let (status, _, _) = fetch(&client, &server, "/001565aabbdd.cfg", &phone_a).await;
    assert_eq!(status, 401, "phone A's answer for phone B's file");
    let (status, _, _) = fetch(&client, &server, FILE, &phone_a).await;
    assert_eq!(status, 200, "for its own");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_database_take_each_others_challenges_and_passwords() {
    let url = deskboot::store::postgres::test_cluster::TestCluster::shared().database();
    let a = TestServer::start_on_store_with(&url, policy(r#"http_auth = "device""#)).await;
    let b = TestServer::start_on_store_with(&url, policy(r#"http_auth = "device""#)).await;
    let device = a.ada_with_a_t46s().await;
    let password = device["http_auth"]["password"].as_str().unwrap();

    // Behind a load balancer the challenge may come from one node and the
    // answer go to the other: both derive the same nonces and passwords.
    let client = reqwest::Client::new();
    let offered = challenges(&client, &a, FILE).await;
    let first = answer(&offered[0], "001565aabbcc", password, FILE, 1);
    let (status, body, _) = fetch(&client, &b, FILE, &first).await;
    assert_eq!(status, 200, "A's challenge answered at B");
    assert!(body.contains(PASSWORD));
    let url = b.http_url(FILE);
    assert_eq!(curl_digest(&url, "001565aabbcc", password).await, "200");
    a.stop().await;
    b.stop().await;
}
